"""Candidate channels: each proposes ``n`` unseen items per query, best first, with its score.

A channel returns catalog rows (model item id − 1; −1 pads a short list) and scores, the layout the
serving merge reads. ``RunChannel`` wraps any saved run (``load_run``); ``PopularityChannel`` and
``CovisitChannel`` are the numpy channels a bundle serves without a model.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from rectorch.data.context import TrainContext
from rectorch.ranking.queries import ID_OFFSET, StageQueries
from rectorch.runs.load import Run, load_run
from rectorch.serving.features import ItemStats
from rectorch.serving.item_channels import covisit_list, popular_list


@dataclass
class Candidates:
    """Per query: ``rows`` best first (−1 = none) and their ``scores`` (NaN where none).

    Shapes:
        rows ``(Q, n)`` int64; scores ``(Q, n)`` float32.
    """

    rows: np.ndarray
    scores: np.ndarray

    def lists(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Query ``i``'s list without padding."""
        keep = self.rows[i] >= 0
        return self.rows[i][keep], self.scores[i][keep]


class Channel(Protocol):
    name: str
    n: int

    def describe(self) -> dict[str, Any]:
        """What serving needs to rebuild it: ``kind`` (``run``/``covisit``/``popular``), ``n`` and its settings."""
        ...

    def retrieve(self, queries: StageQueries, context: TrainContext, stats: ItemStats) -> Candidates: ...


def _seen_rows(queries: StageQueries, i: int) -> np.ndarray:
    return np.unique(queries.history.row(i)) - ID_OFFSET


class RunChannel:
    """The top ``n`` unseen items of a saved run's full-catalog scores.

    Args:
        name: the channel's name (feature prefix).
        run: a saved run directory or MLflow run id.
        n: candidates per query.
        batch_users: queries scored per model call.
        train: with ``run`` null, the ``rectorch-train`` overrides the two-stage recipe trains this channel with
            (on the recipe's own data) before it builds the channel with the new run.
    """

    def __init__(
        self,
        name: str,
        run: str | Path | None = None,
        n: int = 200,
        batch_users: int = 256,
        train: Sequence[str] = (),
    ) -> None:
        if run is None:
            raise ValueError(f"channel {name!r} has no run: give channels.{name}.run=<run dir or MLflow id>")
        self.name, self.n, self.batch_users, self.train = name, int(n), int(batch_users), list(train)
        self.run: Run = load_run(run)

    def describe(self) -> dict[str, Any]:
        run = self.run
        return {
            "kind": "run",
            "n": self.n,
            "run_dir": str(run.run_dir),
            "mlflow_run_id": run.mlflow_run_id,
            "family": run.family,
        }

    def item_vectors(self) -> np.ndarray:
        """Catalog rows' item vectors ``(n_items, D)`` (what the similarity features read)."""
        with torch.no_grad():
            return self.run.model.item_vectors()[ID_OFFSET:].float().numpy()

    @torch.no_grad()
    def retrieve(self, queries: StageQueries, context: TrainContext, stats: ItemStats) -> Candidates:
        model = self.run.model
        if model.spec != context.spec:
            raise ValueError(
                f"channel {self.name!r}: run {self.run.run_dir} was trained on other {model.spec.name!r} data"
            )
        model.bind(context, self.run.evaluation())
        es = queries.eval_set()
        rows_out = np.full((len(es), self.n), -1, np.int64)
        scores_out = np.full((len(es), self.n), np.nan, np.float32)
        for start in range(0, len(es), self.batch_users):
            batch = np.arange(start, min(start + self.batch_users, len(es)))
            inputs = model.view.query(es.users, es.history, batch, context.features)
            scores = model.score(**inputs).float()
            scores[:, 0] = float("-inf")
            seen = es.history.padded(batch, None, align="left")
            scores.scatter_(1, seen, float("-inf"))  # padding hits column 0, already -inf
            top = scores.topk(min(self.n, scores.shape[1] - 1), dim=1)
            found = torch.isfinite(top.values)
            width = top.indices.shape[1]
            rows_out[batch, :width] = torch.where(found, top.indices - ID_OFFSET, -1).numpy()
            scores_out[batch, :width] = torch.where(found, top.values, float("nan")).numpy()
        return Candidates(rows_out, scores_out)


class PopularityChannel:
    """The ``n`` most popular unseen items (training popularity), scored ``log1p(count)``."""

    def __init__(self, name: str = "popular", n: int = 100) -> None:
        self.name, self.n = name, int(n)

    def describe(self) -> dict[str, Any]:
        return {"kind": "popular", "n": self.n}

    def retrieve(self, queries: StageQueries, context: TrainContext, stats: ItemStats) -> Candidates:
        order = np.argsort(-stats.popularity, kind="stable")
        return _per_query(queries, self.n, lambda i: popular_list(stats, order, _seen_rows(queries, i), self.n))


class CovisitChannel:
    """Items co-visited with the last ``anchors`` history items (summed co-visitation weights), unseen.

    Args:
        name: the channel's name.
        n: candidates per query.
        anchors: how many of the newest history items seed the list.
    """

    def __init__(self, name: str = "covisit", n: int = 100, anchors: int = 3) -> None:
        self.name, self.n, self.anchors = name, int(n), int(anchors)

    def describe(self) -> dict[str, Any]:
        return {"kind": "covisit", "n": self.n, "anchors": self.anchors}

    def retrieve(self, queries: StageQueries, context: TrainContext, stats: ItemStats) -> Candidates:
        def one(i: int) -> tuple[np.ndarray, np.ndarray]:
            history = queries.history.row(i) - ID_OFFSET
            return covisit_list(stats, history, _seen_rows(queries, i), self.n, self.anchors)

        return _per_query(queries, self.n, one)


def _per_query(queries: StageQueries, n: int, one) -> Candidates:
    rows = np.full((len(queries), n), -1, np.int64)
    scores = np.full((len(queries), n), np.nan, np.float32)
    for i in range(len(queries)):
        found, weight = one(i)
        rows[i, : len(found)], scores[i, : len(found)] = found, weight
    return Candidates(rows, scores)
