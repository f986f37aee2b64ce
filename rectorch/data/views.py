"""Views turn a split into the tensors a model reads: training batches and evaluation queries.

A model owns its view (``SASRecModule(view=SequenceView(max_len=200))``) because the view's
shape is part of the model; the data module asks the view for datasets. Batches are built
per batch from CSR arrays with vectorised numpy (no per-sample Python on the hot path).
"""

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from rectorch.data.arguments import positive_int
from rectorch.data.csr import Csr, pad_ranges
from rectorch.data.prepared import FeatureTable
from rectorch.data.splits import EvalSet

Batch = dict[str, Any]


class IndexDataset(Dataset):
    """Yields row indices; ``collate`` builds the whole batch from them at once."""

    def __init__(self, size: int, build: Callable[[np.ndarray], Batch]) -> None:
        self.size, self.build = size, build

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> Batch:
        return self.build(np.asarray(indices, dtype=np.int64))


class ModelView(Protocol):
    """What every view (sequence, pair, graph) offers the datamodule and the evaluators.

    ``query_len`` is the history length a query reads (``None`` = the whole history).
    """

    @property
    def query_len(self) -> int | None: ...

    def train_dataset(self, train: Csr, features: tuple[FeatureTable, FeatureTable]) -> IndexDataset: ...

    def query(
        self, users: np.ndarray, history: Csr, rows: np.ndarray, features: tuple[FeatureTable, FeatureTable]
    ) -> Batch: ...


def feature_tensors(table: FeatureTable, ids: np.ndarray) -> dict[str, torch.Tensor]:
    """Rows ``ids`` of every encoded feature column, as tensors keyed by feature name."""
    return {name: torch.from_numpy(np.ascontiguousarray(col[ids])) for name, col in table.columns.items()}


class SequenceView:
    """Right-aligned, 0-padded item sequences of at most ``max_len`` items (``None`` = whole history).

    Training batch: ``{"items": (B, max_len + 1)}``, each user's last ``max_len + 1`` training items,
    so a next-item model reads ``items[:, :-1]`` and predicts ``items[:, 1:]``.
    Query inputs: ``{"history": (B, max_len)}``.
    """

    def __init__(self, max_len: int | None = 200) -> None:
        self.max_len = positive_int("max_len", max_len, nullable=True)

    @property
    def query_len(self) -> int | None:
        return self.max_len

    def train_dataset(self, train: Csr, features: tuple[FeatureTable, FeatureTable]) -> IndexDataset:
        users = np.flatnonzero(train.lengths() >= 2)
        length = None if self.max_len is None else self.max_len + 1

        def build(rows: np.ndarray) -> Batch:
            return {"items": train.padded(users[rows], length)}

        return IndexDataset(len(users), build)

    def query(
        self, users: np.ndarray, history: Csr, rows: np.ndarray, features: tuple[FeatureTable, FeatureTable]
    ) -> Batch:
        return {"history": history.padded(rows, self.max_len)}


class PairView:
    """One example per training interaction: the user's previous ``history_len`` items, then the item.

    Training batch: ``{"users": (B,), "history": (B, history_len), "item": (B,), "user_features": {...},
    "item_features": {...}}``; positions without any earlier item are skipped. Query inputs:
    ``{"users", "history", "user_features"}``.
    """

    def __init__(self, history_len: int = 50) -> None:
        self.history_len = positive_int("history_len", history_len)

    @property
    def query_len(self) -> int | None:
        return self.history_len

    def train_dataset(self, train: Csr, features: tuple[FeatureTable, FeatureTable]) -> IndexDataset:
        user_of = train.row_ids()
        positions = np.flatnonzero(np.arange(len(train.items)) > train.indptr[user_of])
        user_table, item_table = features

        def build(rows: np.ndarray) -> Batch:
            pos = positions[rows]
            users = user_of[pos]
            items = train.items[pos]
            history = pad_ranges(train.items, train.indptr[users], pos, self.history_len)
            return {
                "users": torch.from_numpy(users),
                "history": torch.from_numpy(history.astype(np.int64)),
                "item": torch.from_numpy(items.astype(np.int64)),
                "user_features": feature_tensors(user_table, users),
                "item_features": feature_tensors(item_table, items),
            }

        return IndexDataset(len(positions), build)

    def query(
        self, users: np.ndarray, history: Csr, rows: np.ndarray, features: tuple[FeatureTable, FeatureTable]
    ) -> Batch:
        return {
            "users": torch.from_numpy(users[rows]),
            "history": history.padded(rows, self.history_len),
            "user_features": feature_tensors(features[0], users[rows]),
        }


def eval_dataset(view: ModelView, es: EvalSet, features: tuple[FeatureTable, FeatureTable]) -> IndexDataset:
    """Evaluation batches: ``{"users", "query": view inputs, "targets": (B, T), "seen": (B, S)}`` (0-padded)."""

    def build(rows: np.ndarray) -> Batch:
        return {
            "users": torch.from_numpy(es.users[rows]),
            "query": view.query(es.users, es.history, rows, features),
            "targets": es.targets.padded(rows, None, align="left"),
            "seen": es.history.padded(rows, None, align="left"),
        }

    return IndexDataset(len(es), build)
