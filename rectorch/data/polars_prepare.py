"""The Polars engine of :class:`~rectorch.data.prepare.Preprocessing` (``preprocessing.engine=polars``).

It gives the same :class:`PreparedDataset` as the pandas engine, array for array (tests compare the two on
real and planted data), so both share one cache entry. The interactions stay a lazy query from the scan to
the id maps; only the id maps (distinct users and items) and the finished CSR arrays are materialised in
numpy. Codes are 32-bit while Polars sorts and filters (half the memory of the pandas path's int64 codes).
"""

import logging

import numpy as np
import polars as pl

from rectorch.data import columns as C
from rectorch.data.cells import FLOAT_WHOLE
from rectorch.data.errors import DataError
from rectorch.data.prepare import Preprocessing, assemble
from rectorch.data.prepared import PreparedDataset
from rectorch.data.raw import RawData

log = logging.getLogger(__name__)
ROW = "__row"  # file order, the tie-breaker of the chronological sort
CODE = pl.Int32  # id codes while preparing; the CSR arrays leave as int64


def lazy_interactions(raw: RawData, needs_rating: bool) -> pl.LazyFrame:
    """The interactions of ``raw`` as a lazy frame (a source's ``scan()`` made one already), columns checked."""
    frame = raw.interactions
    if isinstance(frame, pl.LazyFrame):
        names = frame.collect_schema().names()
    else:
        names = [str(c) for c in frame.columns]
        frame = pl.from_pandas(frame[[c for c in (C.USER, C.ITEM, C.TIME, C.RATING) if c in names]]).lazy()
    missing = [c for c in [C.USER, C.ITEM] + ([C.RATING] if needs_rating else []) if c not in names]
    if missing:
        raise DataError(f"{raw.name}: interactions lack column(s) {missing}; columns found: {names}")
    features = raw.item_features
    if raw.category_feature and (features is None or raw.category_feature not in features.columns):
        raise DataError(f"{raw.name}: category_feature '{raw.category_feature}' is not an item feature")
    return frame


def id_map(interactions: pl.LazyFrame, column: str, name: str) -> pl.DataFrame:
    """Distinct external ids of ``column`` in the pandas engine's order: ``key`` (what the column joins on),
    ``id`` (the id as str) and ``code``.

    Numeric order when every id reads as a finite-or-infinite number (ties by text), text order otherwise.
    Integer columns keep their integers as the key, so the log joins on integers, never on 50M strings.
    """
    if interactions.collect_schema()[column].is_integer():
        ordered = interactions.select(pl.col(column).unique().sort().alias("key")).collect()
        ordered = ordered.with_columns(id=pl.col("key").cast(pl.String))
    else:
        distinct = interactions.select(_text(column).unique().alias("id")).collect()
        _refuse_bad_text_ids(distinct["id"], column, name)
        numbers = distinct["id"].cast(pl.Float64, strict=False)
        numeric = numbers.null_count() == distinct["id"].null_count() and not numbers.is_nan().any()
        keys = ["number", "id"] if numeric else ["id"]
        ordered = distinct.with_columns(number=numbers).sort(keys).with_columns(key=pl.col("id"))
    if ordered["key"].null_count():
        raise DataError(f"{name}: column '{column}' has missing id(s)")
    return ordered.select("key", "id").with_row_index("code").with_columns(pl.col("code").cast(CODE))


def _text(column: str) -> pl.Expr:
    """Text ids as the pandas readers clean them (``cells.clean_ids``): str, surrounding blanks stripped."""
    return pl.col(column).cast(pl.String).str.strip_chars()


def _refuse_bad_text_ids(ids: pl.Series, column: str, name: str) -> None:
    """Blank ids, and one id written both as ``1`` and ``1.0``, are errors, as in ``cells.clean_ids``."""
    if (ids == "").any():
        raise DataError(f"{name}: column '{column}' has empty id(s)")
    floats = ids.filter(ids.str.contains(f"^(?:{FLOAT_WHOLE})$"))
    whole = floats.str.replace(r"\.0+$", "").str.strip_chars_start("+")
    twins = whole.is_in(ids.drop_nulls().implode())
    if twins.any():
        written, plain = floats.filter(twins)[0], whole.filter(twins)[0]
        raise DataError(
            f"{name}: column '{column}' writes one id two ways, {plain!r} and {written!r}; "
            f"write ids consistently, e.g. as integers"
        )


def _coded(interactions: pl.LazyFrame, column: str, ids: pl.DataFrame) -> pl.LazyFrame:
    mapping = ids.lazy().select(pl.col("key").alias(column), pl.col("code").alias(f"{column}.code"))
    if ids.schema["key"] == pl.String:
        interactions = interactions.with_columns(_text(column))
    return interactions.join(mapping, on=column, how="left")


def k_core_filter(coded: pl.DataFrame, user_core: int, item_core: int) -> pl.DataFrame:
    """Drop users/items under their minimum count, repeated until no row goes (as ``prepare.k_core``)."""
    while user_core > 1 or item_core > 1:
        kept = coded.filter((pl.len().over("user") >= user_core) & (pl.len().over("item") >= item_core))
        if kept.height == coded.height:
            break
        coded = kept
    return coded


def dense_codes(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)`` for codes in ``0..size-1``, in linear time."""
    present = np.bincount(codes, minlength=size) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present), rank[codes]


def prepare_polars(raw: RawData, preprocessing: Preprocessing, fingerprint: str = "") -> PreparedDataset:
    """``preprocessing`` applied with Polars to ``raw`` (pandas interactions, or a source's lazy scan)."""
    lazy = lazy_interactions(raw, preprocessing.min_rating is not None)
    names = lazy.collect_schema().names()
    has_time = C.TIME in names
    user_ids, item_ids = id_map(lazy, C.USER, raw.name), id_map(lazy, C.ITEM, raw.name)
    query = _coded(_coded(lazy.with_row_index(ROW), C.USER, user_ids), C.ITEM, item_ids)
    kept = [pl.col(f"{C.USER}.code").alias("user"), pl.col(f"{C.ITEM}.code").alias("item"), pl.col(ROW)]
    if has_time:
        kept.append(pl.col(C.TIME).cast(pl.Int64).alias("time"))
    if preprocessing.min_rating is not None:
        kept.append(pl.col(C.RATING).cast(pl.Float64, strict=False).alias("rating"))
    query = query.select(kept).sort(["user", "time", ROW] if has_time else ["user", ROW])
    if preprocessing.min_rating is not None:
        bad = lazy.select(pl.col(C.RATING).cast(pl.Float64, strict=False).is_null().sum()).collect().item()
        if bad:
            raise DataError(f"{raw.name}: column '{C.RATING}' has {bad} missing or non-numeric value(s)")
        query = query.filter(pl.col("rating") >= preprocessing.min_rating).drop("rating")
    if preprocessing.dedup != "none":
        query = query.unique(subset=["user", "item"], keep=preprocessing.dedup, maintain_order=True)
    coded = k_core_filter(query.drop(ROW).collect(), preprocessing.user_core, preprocessing.item_core)
    if not user_ids.height or not coded.height:
        raise DataError(f"{raw.name}: no interactions left after preprocessing with {preprocessing}")
    users, items = coded["user"].to_numpy(), coded["item"].to_numpy()
    times = coded["time"].to_numpy().astype(np.int64, copy=False) if has_time else None
    del coded
    kept_users, user_rows = dense_codes(users, user_ids.height)
    kept_items, item_rows = dense_codes(items, item_ids.height)
    users_text, items_text = user_ids["id"].to_numpy()[kept_users], item_ids["id"].to_numpy()[kept_items]
    return assemble(raw, fingerprint, users_text, items_text, user_rows, item_rows, times)
