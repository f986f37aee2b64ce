"""Item id map and the per-item metadata that filters and re-ranking read."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rectorch.serving.manifest import BundleError

ITEM_IDS_FILE = "item_ids.json"
ITEMS_FILE = "items.npz"


@dataclass
class Catalog:
    """One entry per index row.

    Args:
        ids: external item id of each row.
        popularity: training interactions (or any exposure count) per row.
        category: category code per row (0 = unknown); names in ``categories``.
        categories: code → category name, position 0 = ``""``.
        created_at: unix seconds per row (NaN = unknown), or None.
        available: False for rows that must never be recommended, or None (all available).
    """

    ids: list[str]
    popularity: np.ndarray
    category: np.ndarray
    categories: list[str]
    created_at: np.ndarray | None = None
    available: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.popularity = np.asarray(self.popularity, np.float32)
        self.category = np.asarray(self.category, np.int32)
        for name in ("popularity", "category", "created_at", "available"):
            column = getattr(self, name)
            if column is not None and column.shape != (n,):
                raise BundleError(f"item {name} has shape {column.shape}, expected ({n},)")
        self.row_of = {item: row for row, item in enumerate(self.ids)}
        if len(self.row_of) != n:
            raise BundleError("item ids are not unique")
        self.category_code = {name: code for code, name in enumerate(self.categories) if code}
        self.by_popularity = np.argsort(-self.popularity, kind="stable")

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, items: list[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of the known ``items`` (order kept) and the unknown ids."""
        known = [self.row_of[i] for i in items if i in self.row_of]
        unknown = [i for i in items if i not in self.row_of]
        return np.asarray(known, np.int64), unknown

    def category_codes(self, names: list[str]) -> np.ndarray:
        unknown = [n for n in names if n not in self.category_code]
        if unknown:
            raise ValueError(f"unknown categories {unknown[:5]}; known: {self.categories[1:21]}")
        return np.unique(np.asarray([self.category_code[n] for n in names], np.int32))

    def save(self, bundle: Path) -> list[str]:
        """Write ``item_ids.json`` and ``items.npz``; returns the file names."""
        (bundle / ITEM_IDS_FILE).write_text(json.dumps(self.ids))
        arrays = {"popularity": self.popularity, "category": self.category}
        if self.created_at is not None:
            arrays["created_at"] = np.asarray(self.created_at, np.float64)
        if self.available is not None:
            arrays["available"] = np.asarray(self.available, bool)
        with (bundle / ITEMS_FILE).open("wb") as handle:
            np.savez(handle, **arrays)
        return [ITEM_IDS_FILE, ITEMS_FILE]

    @classmethod
    def load(cls, bundle: Path, ids_file: str, items_file: str, categories: list[str]) -> "Catalog":
        ids = json.loads((bundle / ids_file).read_text())
        if not isinstance(ids, list):
            raise BundleError(f"{ids_file} must hold a JSON list of item ids")
        with np.load(bundle / items_file, allow_pickle=False) as arrays:
            columns = {name: arrays[name] for name in arrays.files}
        return cls(
            ids=[str(i) for i in ids],
            popularity=columns["popularity"],
            category=columns["category"],
            categories=categories,
            created_at=columns.get("created_at"),
            available=columns.get("available"),
        )
