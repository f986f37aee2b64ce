"""Item id map and the per-item metadata that filters and re-ranking read."""

import io
import json
import zipfile
from dataclasses import dataclass

import numpy as np

from rectorch.serving.manifest import BundleError, parse_json, show

ITEM_IDS_FILE = "item_ids.json"
ITEMS_FILE = "items.npz"
MAX_ID_LENGTH = 1024
# items.npz arrays: name → (numpy dtype kinds accepted, required)
COLUMNS = {
    "popularity": ("iuf", True),
    "category": ("iu", True),
    "created_at": ("iuf", False),
    "available": ("b", False),
}


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
        for row, value in enumerate(self.ids):
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable():
                raise BundleError(
                    f"item id {row} must be a printable string of 1 to {MAX_ID_LENGTH} characters, got {show(value)}"
                )
        category = np.asarray(self.category)
        if category.dtype.kind not in "iu" or (n and not 0 <= category.min() <= category.max() < len(self.categories)):
            raise BundleError(f"item category codes must be integers in [0, {len(self.categories)}) (the categories)")
        self.popularity = np.asarray(self.popularity, np.float32)
        self.category = category.astype(np.int32)
        for name in ("popularity", "category", "created_at", "available"):
            column = getattr(self, name)
            if column is not None and column.shape != (n,):
                raise BundleError(f"item {name} has shape {column.shape}, expected ({n},)")
        if not np.isfinite(self.popularity).all() or (self.popularity < 0).any():
            raise BundleError("item popularity must be finite and non-negative")
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
        if not names:
            raise ValueError("the category filter names no category; leave it out to allow every category")
        unknown = [n for n in names if n not in self.category_code]
        if unknown:
            raise ValueError(f"unknown categories {show(unknown[:5])}; known: {show(self.categories[1:21], 400)}")
        return np.unique(np.asarray([self.category_code[n] for n in names], np.int32))

    def to_files(self) -> dict[str, bytes]:
        """The bytes of ``item_ids.json`` and ``items.npz`` (uncompressed, no object arrays), by file name."""
        arrays = {"popularity": self.popularity, "category": self.category}
        if self.created_at is not None:
            arrays["created_at"] = np.asarray(self.created_at, np.float64)
        if self.available is not None:
            arrays["available"] = np.asarray(self.available, bool)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return {ITEM_IDS_FILE: json.dumps(self.ids).encode(), ITEMS_FILE: buffer.getvalue()}

    @classmethod
    def from_bytes(
        cls, ids: tuple[str, bytes], items: tuple[str, bytes], categories: list[str], num_items: int
    ) -> "Catalog":
        """Parse ``(file name, bytes)`` of the id list and the metadata arrays; every problem names its file."""
        ids_name, ids_data = ids
        values = parse_json(ids_data, ids_name)
        if not isinstance(values, list) or len(values) != num_items:
            got = f"{len(values)} entries" if isinstance(values, list) else type(values).__name__
            raise BundleError(f"{ids_name} must hold a JSON list of {num_items} item ids (num_items), got {got}")
        columns = read_arrays(*items, num_items)
        try:
            return cls(ids=values, categories=categories, **columns)
        except BundleError as error:
            raise BundleError(f"{ids_name if 'item id' in str(error) else items[0]}: {error}") from None


def read_arrays(name: str, data: bytes, num_items: int) -> dict[str, np.ndarray]:
    """The metadata arrays of an ``.npz``: known names only, ``(num_items,)`` each, bounded size, never pickled."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise BundleError(f"{name} is not a readable .npz archive: {error}") from None
    columns: dict[str, np.ndarray] = {}
    for member in members:
        key = member.filename.removesuffix(".npy")
        if key not in COLUMNS or key in columns:
            raise BundleError(f"{name}: unexpected array {show(member.filename)}; known: {sorted(COLUMNS)}")
        if member.file_size > 8 * num_items + 4096:
            raise BundleError(
                f"{name}: array {key!r} declares {member.file_size} bytes, more than {num_items} items need"
            )
        try:
            with archive.open(member) as handle:
                array = np.lib.format.read_array(handle, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as error:
            raise BundleError(f"{name}: array {key!r} cannot be read: {show(str(error), 160)}") from None
        kinds, _ = COLUMNS[key]
        if array.dtype.kind not in kinds or array.shape != (num_items,):
            raise BundleError(
                f"{name}: array {key!r} must have shape ({num_items},) and a dtype of kind {kinds!r}, "
                f"got {array.shape} {array.dtype}"
            )
        columns[key] = array
    missing = [key for key, (_, required) in COLUMNS.items() if required and key not in columns]
    if missing:
        raise BundleError(f"{name}: missing the arrays {missing}")
    return columns
