"""Raw interactions -> :class:`PreparedDataset`: filter, dedup, k-core, stable chronological sort, id maps.

Internal ids follow the sorted external ids (numerically when every id looks like a number), so files
whose ids already run 1..N, such as ``ml-1m.txt`` or ``beauty.txt``, keep them: internal id == file id.
"""

import dataclasses
import logging
import numbers
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from rectorch.data import columns as C
from rectorch.data.cache import CacheFormat, cache_entries, entry_lock, fingerprint, load_prepared, write_locked
from rectorch.data.errors import DataError
from rectorch.data.features import encode_features
from rectorch.data.prepared import PreparedDataset
from rectorch.data.raw import RawData
from rectorch.data.sources import ScanSource, Source

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw interactions become a prepared dataset; call it on :class:`RawData`.

    Args:
        dedup: which of repeated (user, item) pairs to keep, in chronological order: ``first``, ``last``,
            or ``none`` (keep all).
        min_rating: drop interactions rated below this (needs a rating column); None keeps all.
        user_core: drop users with fewer interactions, iterated with ``item_core`` until stable.
        item_core: drop items with fewer interactions.
        engine: ``pandas`` (in memory) or ``polars`` (lazy, ``rectorch[scale]``; reads a source's ``scan()``
            when it has one). Both give the same arrays, so the engine is not part of the cache key.
    """

    dedup: Literal["first", "last", "none"] = "first"
    min_rating: float | None = None
    user_core: int = 0
    item_core: int = 0
    engine: Literal["pandas", "polars"] = "pandas"

    def __post_init__(self) -> None:
        if self.dedup not in ("first", "last", "none"):
            raise ValueError(f"preprocessing.dedup must be 'first', 'last' or 'none', got {self.dedup!r}")
        if self.engine not in ("pandas", "polars"):
            raise ValueError(f"preprocessing.engine must be 'pandas' or 'polars', got {self.engine!r}")
        for name in ("user_core", "item_core"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"preprocessing.{name} must be a non-negative integer, got {value!r}")
        rating = self.min_rating
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, numbers.Real)):
            raise ValueError(f"preprocessing.min_rating must be a number or null, got {self.min_rating!r}")

    def config(self) -> dict[str, Any]:
        """What changes the prepared data (the cache key): every field but the engine."""
        config = dataclasses.asdict(self)
        del config["engine"]
        return config

    def __call__(self, raw: RawData, fingerprint: str = "") -> PreparedDataset:
        if self.engine == "polars" or not isinstance(raw.interactions, pd.DataFrame):
            return polars_engine()(raw, self, fingerprint)
        frame = raw.interactions
        _check_columns(raw, self.min_rating is not None)
        users, user_ids = external_codes(frame[C.USER], raw.name)
        items, item_ids = external_codes(frame[C.ITEM], raw.name)
        times = frame[C.TIME].to_numpy(np.int64) if C.TIME in frame else None
        order = chronological_order(users, times)
        if self.min_rating is not None:
            order = order[frame[C.RATING].to_numpy()[order] >= self.min_rating]
        if self.dedup != "none":
            pairs = pd.Series(users[order] * np.int64(len(item_ids)) + items[order])
            order = order[~pairs.duplicated(keep=self.dedup).to_numpy()]
        order = order[k_core(users[order], items[order], self.user_core, self.item_core)]
        if not len(order):
            raise DataError(f"{raw.name}: no interactions left after preprocessing with {self}")
        kept_users, user_rows = np.unique(users[order], return_inverse=True)
        kept_items, item_rows = np.unique(items[order], return_inverse=True)
        times = None if times is None else times[order]
        return assemble(raw, fingerprint, user_ids[kept_users], item_ids[kept_items], user_rows, item_rows, times)


def assemble(
    raw: RawData,
    fingerprint: str,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    user_rows: np.ndarray,
    item_rows: np.ndarray,
    times: np.ndarray | None,
) -> PreparedDataset:
    """The prepared dataset from the kept ids (external, in internal order) and each kept row's 0-based user and
    item row, rows already grouped by user in chronological order. Both engines end here."""
    user_ids = np.concatenate([[""], user_ids]).astype(str)
    item_ids = np.concatenate([[""], item_ids]).astype(str)
    return PreparedDataset(
        name=raw.name,
        fingerprint=fingerprint,
        user_ids=user_ids,
        item_ids=item_ids,
        indptr=np.concatenate([[0, 0], np.cumsum(np.bincount(user_rows))]).astype(np.int64),
        items=(item_rows + 1).astype(np.int64),
        timestamps=times,
        item_features=encode_features(raw.item_features, item_ids),
        user_features=encode_features(raw.user_features, user_ids),
        category_feature=raw.category_feature,
    )


def polars_engine():
    """``prepare_polars``, or a one-line error naming the extra that installs Polars."""
    try:
        from rectorch.data.polars_prepare import prepare_polars
    except ModuleNotFoundError as error:
        raise ValueError(
            f"preprocessing.engine=polars needs Polars (pip install 'rectorch[scale]'): {error}"
        ) from error
    return prepare_polars


def _check_columns(raw: RawData, needs_rating: bool) -> None:
    frame = raw.interactions
    wanted = [C.USER, C.ITEM] + ([C.RATING] if needs_rating else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        found = [str(c) for c in frame.columns]
        raise DataError(f"{raw.name}: interactions lack column(s) {missing}; columns found: {found}")
    if frame.empty:
        raise DataError(f"{raw.name}: no interactions to prepare")
    features = raw.item_features
    if raw.category_feature and (features is None or raw.category_feature not in features.columns):
        raise DataError(f"{raw.name}: category_feature '{raw.category_feature}' is not an item feature")


def chronological_order(users: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Row order grouped by user, by time within a user; ties (and no times) keep file order."""
    order = np.arange(len(users)) if times is None else np.argsort(times, kind="stable")
    return order[np.argsort(users[order], kind="stable")]


def external_codes(column: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted distinct ids (as str): numeric order when all ids look like numbers.

    Returns:
        ``(codes, ids)`` with ``ids[codes] == column.astype(str)``.
    """
    codes, uniques = pd.factorize(column)
    missing = codes < 0
    if missing.any():
        raise DataError(
            f"{name}: column '{column.name}' has {int(missing.sum())} missing id(s); "
            f"first at row {int(np.argmax(missing)) + 1}"
        )
    distinct, inverse = np.unique(np.asarray(uniques.astype(str), dtype=str), return_inverse=True)
    numbers = pd.to_numeric(pd.Series(distinct), errors="coerce").to_numpy(np.float64)
    if not np.isnan(numbers).any():
        perm = np.lexsort((np.arange(len(distinct)), numbers))
        distinct, inverse = distinct[perm], np.argsort(perm)[inverse]
    return inverse[codes].astype(np.int64), distinct


def k_core(users: np.ndarray, items: np.ndarray, user_core: int, item_core: int) -> np.ndarray:
    """Mask of interactions in the largest subset where every user/item has at least the given counts."""
    keep = np.ones(len(users), bool)
    while user_core > 1 or item_core > 1:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=0) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=0) + 1)
        kept = keep & (user_counts[users] >= user_core) & (item_counts[items] >= item_core)
        if kept.sum() == keep.sum():
            break
        keep = kept
    return keep


def _cached(entries: list[Path], key: str) -> PreparedDataset | None:
    for path in entries:
        cached = load_prepared(path, key)
        if cached is not None:
            log.info("loaded prepared %s from %s", cached.name, path)
            return cached
    return None


def _prepare(source: Source, preprocessing: "Preprocessing", key: str) -> PreparedDataset:
    start = time.perf_counter()
    scannable = preprocessing.engine == "polars" and isinstance(source, ScanSource)
    dataset = preprocessing(source.scan() if scannable else source.load(), key)
    log.info("prepared %s in %.1f s", dataset.name, time.perf_counter() - start)
    return dataset


def load_or_prepare(
    source: Source,
    preprocessing: Preprocessing | None = None,
    cache_dir: str | Path | None = None,
    cache_format: CacheFormat = "npz",
) -> PreparedDataset:
    """Prepared dataset from the cache when its fingerprint matches, else read, prepare and cache it.

    Args:
        source: reader with ``load()``, ``files()`` and ``config()`` (and ``scan()`` for the Polars engine).
        preprocessing: filters and dedup; default ``Preprocessing()``.
        cache_dir: folder for ``<fingerprint>.npz`` or ``<fingerprint>.arrow/``; None disables caching.
        cache_format: ``npz`` (read into memory) or ``arrow`` (memory-mapped; for logs larger than memory
            should hold twice). An entry in the other format is used too: the content is the same.
    """
    preprocessing = preprocessing or Preprocessing()
    key = fingerprint(source, preprocessing)
    if cache_dir is None:
        return _prepare(source, preprocessing, key)
    entries = cache_entries(Path(cache_dir), key, cache_format)
    dataset = _cached(entries, key)
    if dataset is not None:
        return dataset
    entries[0].parent.mkdir(parents=True, exist_ok=True)
    with entry_lock(entries[0]):  # processes sharing a cache (DDP ranks) prepare once: the others wait, then load
        dataset = _cached(entries, key)
        if dataset is None:
            dataset = _prepare(source, preprocessing, key)
            write_locked(dataset, entries[0])
    return dataset
