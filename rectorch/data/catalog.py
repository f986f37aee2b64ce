"""``DataCatalog``: a run's ids, item metadata, training popularity and categories, saved without pickle.

A saved run keeps its catalog next to its checkpoint so that export, ranking and compare never
re-prepare raw data to learn what item row ``r`` is. Two files: ``catalog.npz`` (numeric and fixed-width
unicode arrays, read with ``allow_pickle=False``) and ``catalog.json`` (feature kinds and vocabularies).
"""

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rectorch.data.context import TrainContext
from rectorch.data.prepared import FeatureTable, PreparedDataset
from rectorch.data.spec import FeatureSpec
from rectorch.interprocess import write_atomic

ARRAYS_FILE, META_FILE = "catalog.npz", "catalog.json"
SCHEMA_VERSION = 1
_FEATURE = "item_feature/"


@dataclass
class DataCatalog:
    """What a run knows about its users and items, indexed by internal id (index 0 = padding, ``""``).

    Args:
        item_ids: external item id of every internal item id, as str.
        user_ids: external user id of every internal user id, as str.
        item_popularity: training interactions per item id.
        item_category: category code per item id (0 = unknown), or ``None``.
        categories: the external value of every category code (position 0 = ``""``).
        item_features: the encoded item feature table (columns, kinds, vocabularies).
        category_feature: the item feature the categories come from, or ``None``.

    Shapes:
        item_ids ``(num_items + 1,)``; user_ids ``(num_users + 1,)``; item_popularity, item_category
        ``(num_items + 1,)``.
    """

    item_ids: np.ndarray
    user_ids: np.ndarray
    item_popularity: np.ndarray
    item_category: np.ndarray | None
    categories: list[str]
    item_features: FeatureTable
    category_feature: str | None = None

    @classmethod
    def build(cls, dataset: PreparedDataset, context: TrainContext) -> "DataCatalog":
        """The catalog of a prepared dataset under the context's training split."""
        name = dataset.category_feature
        categories = dataset.item_features.vocab.get(name, [""]) if name is not None else [""]
        return cls(
            item_ids=np.asarray(dataset.item_ids, dtype=str),
            user_ids=np.asarray(dataset.user_ids, dtype=str),
            item_popularity=np.asarray(context.item_popularity, dtype=np.int64),
            item_category=None if context.item_category is None else np.asarray(context.item_category, np.int64),
            categories=[str(v) for v in categories],
            item_features=dataset.item_features,
            category_feature=name,
        )

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    def save(self, directory: Path) -> list[Path]:
        """Write both files into ``directory`` (each atomically); returns their paths."""
        arrays: dict[str, np.ndarray] = {
            "item_ids": self.item_ids.astype(str),
            "user_ids": self.user_ids.astype(str),
            "item_popularity": self.item_popularity,
        }
        if self.item_category is not None:
            arrays["item_category"] = self.item_category
        arrays.update({_FEATURE + name: column for name, column in self.item_features.columns.items()})
        meta = {
            "schema_version": SCHEMA_VERSION,
            "categories": self.categories,
            "category_feature": self.category_feature,
            "item_feature_kinds": {name: vars(spec) for name, spec in self.item_features.kinds.items()},
            "item_feature_vocab": self.item_features.vocab,
        }
        arrays_path, meta_path = directory / ARRAYS_FILE, directory / META_FILE
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(arrays_path, buffer.getvalue())
        write_atomic(meta_path, json.dumps(meta, indent=1).encode())
        return [arrays_path, meta_path]

    @classmethod
    def load(cls, directory: Path) -> "DataCatalog":
        """Read a saved catalog; a missing or malformed file is a ``ValueError`` naming it."""
        arrays_path, meta_path = directory / ARRAYS_FILE, directory / META_FILE
        for path in (arrays_path, meta_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: {directory} holds no saved catalog")
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{meta_path} is not valid JSON: {error}") from error
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{meta_path}: schema_version {meta.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        try:
            with np.load(arrays_path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError) as error:
            raise ValueError(f"{arrays_path} is not a readable catalog archive: {error}") from error
        missing = {"item_ids", "user_ids", "item_popularity"} - set(arrays)
        if missing:
            raise ValueError(f"{arrays_path} lacks {sorted(missing)}")
        kinds = {name: FeatureSpec(**spec) for name, spec in meta.get("item_feature_kinds", {}).items()}
        columns = {name.removeprefix(_FEATURE): a for name, a in arrays.items() if name.startswith(_FEATURE)}
        if set(columns) != set(kinds):
            raise ValueError(f"{directory}: item feature columns {sorted(columns)} do not match {sorted(kinds)}")
        return cls(
            item_ids=arrays["item_ids"],
            user_ids=arrays["user_ids"],
            item_popularity=arrays["item_popularity"],
            item_category=arrays.get("item_category"),
            categories=list(meta.get("categories", [""])),
            item_features=FeatureTable(columns=columns, kinds=kinds, vocab=meta.get("item_feature_vocab", {})),
            category_feature=meta.get("category_feature"),
        )
