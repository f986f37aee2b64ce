"""Ranking features, one numpy implementation for training (``rectorch.ranking``) and serving.

Items are rows ``0..n-1`` (model item id − 1), times are unix seconds (NaN = unknown) and every
feature is float32. :class:`ItemStats` holds the per-item tables computed from training
interactions only; :class:`FeatureBuilder` turns one :class:`Request` and its merged candidates into
a ``(C, F)`` matrix whose columns are named by ``FeatureBuilder.names``.
"""

import dataclasses
import io
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rectorch.serving.manifest import BundleError, show
from rectorch.serving.merge import Merged

SECONDS_PER_DAY = 86400.0
SECONDS_PER_HOUR = 3600.0
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0
NUMERIC_PREFIX = "numeric_"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # numeric feature names
# fixed arrays of features.npz: name → dtype
ARRAYS = {
    "popularity": np.float32,
    "recent_popularity": np.float32,
    "first_seen": np.float64,
    "category": np.int32,
    "category_hour": np.float32,
    "covisit_indptr": np.int64,
    "covisit_rows": np.int64,
    "covisit_weights": np.float32,
}


def check_rows(rows: np.ndarray, num_items: int, what: str) -> np.ndarray:
    """``rows`` as int64, every one in ``[0, num_items)``."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise ValueError(f"{what} must be a 1-D integer array, got shape {rows.shape} {rows.dtype}")
    if rows.size and not 0 <= rows.min() <= rows.max() < num_items:
        raise ValueError(f"{what} must be item rows in [0, {num_items}), got values in [{rows.min()}, {rows.max()}]")
    return rows.astype(np.int64, copy=False)


def slices(indptr: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the concatenated CSR slices of ``anchors`` and, per position, which anchor it belongs to."""
    starts, lengths = indptr[anchors], indptr[anchors + 1] - indptr[anchors]
    owner = np.repeat(np.arange(len(anchors)), lengths)
    offsets = np.cumsum(lengths) - lengths
    return starts[owner] + np.arange(lengths.sum()) - offsets[owner], owner


def top_covisits(indptr: np.ndarray, rows: np.ndarray, num_items: int, window: int, top: int):
    """CSR of each item's ``top`` co-occurring items within ``window`` positions of one user's sequence."""
    user = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    pairs = []
    for gap in range(1, window + 1):
        same = user[:-gap] == user[gap:]
        left, right = rows[:-gap][same], rows[gap:][same]
        distinct = left != right
        left, right = left[distinct], right[distinct]
        pairs += [left * num_items + right, right * num_items + left]
    codes, counts = np.unique(np.concatenate(pairs) if pairs else np.zeros(0, np.int64), return_counts=True)
    item, neighbour = np.divmod(codes, num_items)  # sorted by (item, neighbour)
    order = np.lexsort((neighbour, -counts, item))  # per item: most frequent first, ties by row
    per_item = np.bincount(item, minlength=num_items)
    start = np.cumsum(per_item) - per_item  # where each item's group begins (codes are sorted by item)
    keep = np.zeros(len(codes), bool)
    keep[order] = np.arange(len(order)) - start[item[order]] < top
    item, neighbour, counts = item[keep], neighbour[keep], counts[keep]
    out_indptr = np.zeros(num_items + 1, np.int64)
    np.cumsum(np.bincount(item, minlength=num_items), out=out_indptr[1:])
    row_max = np.zeros(num_items, np.int64)
    np.maximum.at(row_max, item, counts)
    return out_indptr, neighbour.astype(np.int64), (counts / row_max[item]).astype(np.float32)


def unit_rows(vectors: np.ndarray, num_items: int) -> np.ndarray:
    """``(num_items, D)`` float32 rows scaled to unit L2 norm (all-zero rows stay zero)."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(vectors) != num_items:
        raise ValueError(f"vectors must have shape ({num_items}, D), got {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


@dataclass
class ItemStats:
    """Per-item tables from training interactions only (see :meth:`from_interactions`).

    Shapes:
        popularity, recent_popularity: (n,) float32 interaction counts (all, and in the recent window).
        first_seen: (n,) float64 first training interaction time, NaN unknown.
        category: (n,) int32 code, 0 = unknown.
        category_hour: (num_categories, 24) float32 share of each category's timed interactions per UTC hour.
        covisit_indptr (n + 1,) int64, covisit_rows (nnz,) int64, covisit_weights (nnz,) float32: CSR of each
            item's co-visited items, sorted by row inside each slice, weight = count / the slice's largest count.
        vectors: (n, D) float32 L2-normalised item vectors, or None.
        numeric: name → (n,) float32 numeric item feature (NaN unknown).
    """

    popularity: np.ndarray
    recent_popularity: np.ndarray
    first_seen: np.ndarray
    category: np.ndarray
    category_hour: np.ndarray
    covisit_indptr: np.ndarray
    covisit_rows: np.ndarray
    covisit_weights: np.ndarray
    vectors: np.ndarray | None = None
    numeric: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrays = {name: getattr(self, name) for name in ARRAYS}
        arrays |= {} if self.vectors is None else {"vectors": self.vectors}
        for name, array in arrays.items():
            wanted, ndim = ARRAYS.get(name, np.float32), 2 if name in ("category_hour", "vectors") else 1
            if not isinstance(array, np.ndarray) or array.dtype != wanted or array.ndim != ndim:
                got = f"{array.ndim}-D {array.dtype}" if isinstance(array, np.ndarray) else show(type(array))
                raise ValueError(f"array {name!r} must be a {ndim}-D {np.dtype(wanted)} array, got {got}")
        n, nnz = len(self.popularity), len(self.covisit_rows)
        shapes = {
            "recent_popularity": (n,),
            "first_seen": (n,),
            "category": (n,),
            "category_hour": (max(len(self.category_hour), 1), 24),
            "covisit_indptr": (n + 1,),
            "covisit_weights": (nnz,),
        }
        if self.vectors is not None:
            shapes["vectors"] = (n, max(self.vectors.shape[1], 1))
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ValueError(f"array {name!r} has shape {arrays[name].shape}, expected {shape}")
        for name, values in self.numeric.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"numeric feature name {show(name)} must match {_NAME.pattern}")
            if not isinstance(values, np.ndarray) or values.dtype != np.float32 or values.shape != (n,):
                raise ValueError(f"array {NUMERIC_PREFIX + name!r} must be a ({n},) float32 array")
        self.check_values()

    def check_values(self) -> None:
        """Counts and shares non-negative, category codes inside ``category_hour``, a sorted CSR (shapes known good)."""
        for name in ("popularity", "recent_popularity", "category_hour", "covisit_weights"):
            values = getattr(self, name)
            if not np.isfinite(values).all() or (values < 0).any():
                raise ValueError(f"array {name!r} must be finite and non-negative")
        if len(self.category) and not 0 <= self.category.min() <= self.category.max() < len(self.category_hour):
            raise ValueError(f"array 'category' must hold codes in [0, {len(self.category_hour)}) (category_hour rows)")
        indptr, rows = self.covisit_indptr, self.covisit_rows
        if indptr[0] != 0 or indptr[-1] != len(rows) or (np.diff(indptr) < 0).any():
            raise ValueError(f"array 'covisit_indptr' must rise from 0 to {len(rows)} (covisit_rows)")
        if len(rows) and not 0 <= rows.min() <= rows.max() < self.num_items:
            raise ValueError(f"array 'covisit_rows' must hold rows in [0, {self.num_items})")
        starts = np.zeros(len(rows), bool)
        starts[indptr[:-1][indptr[:-1] < len(rows)]] = True
        if (np.diff(rows) <= 0)[~starts[1:]].any():
            raise ValueError("array 'covisit_rows' must be strictly increasing inside each item's slice")

    @property
    def num_items(self) -> int:
        return len(self.popularity)

    @classmethod
    def from_interactions(
        cls,
        indptr: np.ndarray,
        rows: np.ndarray,
        timestamps: np.ndarray | None,
        num_items: int,
        category: np.ndarray | None = None,
        vectors: np.ndarray | None = None,
        numeric: Mapping[str, np.ndarray] | None = None,
        recent_days: float = 30.0,
        covisit_window: int = 3,
        covisit_top: int = 50,
    ) -> "ItemStats":
        """Count everything from users' chronological training sequences (vectorised; seconds on 1M rows).

        Args:
            indptr, rows: CSR of the sequences, ``rows[indptr[u]:indptr[u + 1]]`` oldest first (item rows).
            timestamps: unix seconds aligned with ``rows`` (NaN unknown), or None.
            num_items: n, the number of item rows.
            category: (n,) category codes (0 = unknown), or None (all unknown).
            vectors: (n, D) item vectors (L2-normalised here), or None.
            numeric: name → (n,) numeric item features.
            recent_days: ``recent_popularity`` counts interactions at or after the latest timestamp minus this.
            covisit_window: items at most this many positions apart in one sequence co-occur (both directions;
                each co-occurrence counts once, an item never co-occurs with itself).
            covisit_top: neighbours kept per item (most frequent first, ties by row).
        """
        indptr = np.asarray(indptr)
        rows = check_rows(rows, num_items, "rows")
        if indptr.ndim != 1 or not len(indptr) or indptr.dtype.kind not in "iu":
            raise ValueError(f"indptr must be a non-empty 1-D integer array, got shape {indptr.shape} {indptr.dtype}")
        if indptr[0] != 0 or indptr[-1] != len(rows) or (np.diff(indptr) < 0).any():
            raise ValueError(f"indptr must rise from 0 to {len(rows)} (the number of rows)")
        if covisit_window < 1 or covisit_top < 1 or not recent_days >= 0:
            raise ValueError(
                f"covisit_window and covisit_top must be >= 1 and recent_days >= 0, "
                f"got {covisit_window}, {covisit_top}, {recent_days}"
            )
        category = np.zeros(num_items, np.int32) if category is None else np.asarray(category)
        if category.shape != (num_items,) or category.dtype.kind not in "iu" or (category < 0).any():
            raise ValueError(f"category must be ({num_items},) non-negative integer codes, got {category.shape}")
        category = category.astype(np.int32)
        num_categories = int(category.max(initial=0)) + 1
        popularity = np.bincount(rows, minlength=num_items).astype(np.float32)
        recent = np.zeros(num_items, np.float32)
        first_seen = np.full(num_items, np.inf)
        category_hour = np.zeros((num_categories, 24), np.float32)
        if timestamps is not None:
            times = np.asarray(timestamps, np.float64)
            if times.shape != rows.shape:
                raise ValueError(f"timestamps has shape {times.shape}, expected {rows.shape} (aligned with rows)")
            timed = np.isfinite(times)
            if timed.any():
                latest = times[timed].max()
                recent = np.bincount(rows[times >= latest - recent_days * SECONDS_PER_DAY], minlength=num_items)
                recent = recent.astype(np.float32)
                np.minimum.at(first_seen, rows[timed], times[timed])
                hour = (np.floor(times[timed] / SECONDS_PER_HOUR) % 24).astype(np.int64)
                counts = np.bincount(category[rows[timed]] * 24 + hour, minlength=num_categories * 24)
                counts = counts.reshape(num_categories, 24).astype(np.float64)
                totals = counts.sum(1, keepdims=True)
                category_hour = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
                category_hour = category_hour.astype(np.float32)
        first_seen[np.isinf(first_seen)] = np.nan
        covisit = top_covisits(indptr.astype(np.int64), rows, num_items, covisit_window, covisit_top)
        if vectors is not None:
            vectors = unit_rows(vectors, num_items)
        features = {}
        for name, values in (numeric or {}).items():
            values = np.asarray(values, np.float32)
            if values.shape != (num_items,):
                raise ValueError(f"numeric feature {show(name)} has shape {values.shape}, expected ({num_items},)")
            features[name] = values
        return cls(popularity, recent, first_seen, category, category_hour, *covisit, vectors, features)

    def with_vectors(self, vectors: np.ndarray | None) -> "ItemStats":
        """The same tables with these similarity vectors (L2-normalised here, as :meth:`from_interactions` does)."""
        return dataclasses.replace(self, vectors=None if vectors is None else unit_rows(vectors, self.num_items))

    def to_bytes(self) -> bytes:
        """An uncompressed ``.npz`` of every table (no object arrays)."""
        arrays = {name: getattr(self, name) for name in ARRAYS}
        if self.vectors is not None:
            arrays["vectors"] = self.vectors
        arrays |= {NUMERIC_PREFIX + name: values for name, values in self.numeric.items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "features.npz") -> "ItemStats":
        """Parse :meth:`to_bytes` output, never unpickling; a problem is a one-line ``BundleError`` naming ``where``."""
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            members = archive.infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as error:
            raise BundleError(f"{where} is not a readable .npz archive: {error}") from None
        arrays: dict[str, np.ndarray] = {}
        for member in members:
            key = member.filename.removesuffix(".npy")
            is_numeric = key.startswith(NUMERIC_PREFIX) and len(key) > len(NUMERIC_PREFIX)
            if not (key in ARRAYS or key == "vectors" or is_numeric) or key in arrays:
                raise BundleError(f"{where}: unexpected array {show(member.filename)}; known: {sorted(ARRAYS)}")
            try:
                with archive.open(member) as handle:
                    arrays[key] = np.lib.format.read_array(handle, allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as error:
                raise BundleError(f"{where}: array {key!r} cannot be read: {show(str(error), 160)}") from None
        missing = [name for name in ARRAYS if name not in arrays]
        if missing:
            raise BundleError(f"{where}: missing the arrays {missing}")
        numeric = {k.removeprefix(NUMERIC_PREFIX): v for k, v in arrays.items() if k.startswith(NUMERIC_PREFIX)}
        try:
            return cls(**{name: arrays[name] for name in ARRAYS}, vectors=arrays.get("vectors"), numeric=numeric)
        except ValueError as error:
            raise BundleError(f"{where}: {error}") from None

    def covisit_with(self, anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(A, C) float32 weight of each candidate in each anchor's neighbour list (0 if absent)."""
        anchors = check_rows(anchors, self.num_items, "anchors")
        candidates = np.asarray(candidates, np.int64)
        positions, owner = slices(self.covisit_indptr, anchors)
        keys = owner * self.num_items + self.covisit_rows[positions]  # sorted: slices are sorted by row
        if not len(keys):
            return np.zeros((len(anchors), len(candidates)), np.float32)
        queries = np.arange(len(anchors))[:, None] * self.num_items + candidates[None, :]
        at = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
        return np.where(keys[at] == queries, self.covisit_weights[positions[at]], np.float32(0))

    def covisit_neighbours(self, anchors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Item-to-item channel: the ``n`` rows with the largest summed weight over the anchors' neighbour lists.

        Returns ``(rows int64, scores float32)`` best first (ties by row); anchors may be among them.
        """
        anchors = check_rows(anchors, self.num_items, "anchors")
        positions, _ = slices(self.covisit_indptr, anchors)
        rows, inverse = np.unique(self.covisit_rows[positions], return_inverse=True)
        scores = np.bincount(inverse, weights=self.covisit_weights[positions], minlength=len(rows))
        best = np.lexsort((rows, -scores))[: max(n, 0)]
        return rows[best], scores[best].astype(np.float32)


@dataclass
class Request:
    """What the ranking stage knows about one request.

    Args:
        history: (H,) item rows, oldest first.
        history_times: (H,) unix seconds of the history (NaN unknown), or None.
        now: request time in unix seconds (NaN unknown).
        context: numeric request-context fields (device code, session depth, …).
        user: numeric user fields.
    """

    history: np.ndarray
    history_times: np.ndarray | None = None
    now: float = math.nan
    context: Mapping[str, float] = field(default_factory=dict)
    user: Mapping[str, float] = field(default_factory=dict)


def field_values(values: Mapping[str, float], names: Sequence[str], what: str) -> list[float]:
    """``values[name]`` as floats in ``names`` order, NaN where missing."""
    out = []
    for name in names:
        value = values.get(name, math.nan)
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            raise ValueError(f"{what} field {name!r} must be a number, got {show(value)}") from None
    return out


class FeatureBuilder:
    """Candidate features of one request; column order is :attr:`names`.

    Args:
        stats: the item tables.
        channels: channel names, in the order of ``Merged.scores`` rows.
        context_fields: request-context fields, one ``ctx_{field}`` column each.
        user_fields: user fields, one ``user_{field}`` column each.
        last_n: how many of the newest history items the "recent" cross features look at.
    """

    def __init__(
        self,
        stats: ItemStats,
        channels: Sequence[str],
        context_fields: Sequence[str] = (),
        user_fields: Sequence[str] = (),
        last_n: int = 5,
    ) -> None:
        if last_n < 1:
            raise ValueError(f"last_n must be >= 1, got {last_n}")
        self.stats, self.channels, self.last_n = stats, list(channels), last_n
        self.context_fields, self.user_fields = list(context_fields), list(user_fields)
        self.numeric = sorted(stats.numeric)
        self.names = [
            *(f"{k}_{part}" for k in self.channels for part in ("score", "rank")),
            "channels_hit",
            "item_log_popularity",
            "item_log_recent_popularity",
            "item_age_days",
            "item_category",
            *(f"item_{name}" for name in self.numeric),
            "user_history_length",
            "user_days_since_last",
            *(f"user_{name}" for name in self.user_fields),
            "hour",
            "weekday",
            *(f"ctx_{name}" for name in self.context_fields),
            "category_share_history",
            "category_share_recent",
            "sim_last_max",
            "sim_last_mean",
            "covisit_last",
            "covisit_recent",
            "category_hour_share",
        ]
        duplicated = sorted({name for name in self.names if self.names.count(name) > 1})
        if duplicated:
            raise ValueError(f"feature names repeat: {duplicated} (check channels, context_fields, user_fields)")
        self.log_popularity = np.log1p(stats.popularity)
        self.log_recent_popularity = np.log1p(stats.recent_popularity)

    def build(self, request: Request, merged: Merged) -> np.ndarray:
        """(C, F) float32 features of ``merged.rows`` for ``request``."""
        stats, nan = self.stats, np.float32(np.nan)
        rows = check_rows(merged.rows, stats.num_items, "candidate rows")
        history = check_rows(request.history, stats.num_items, "history")
        if merged.scores.shape != (len(self.channels), len(rows)) or merged.ranks.shape != merged.scores.shape:
            raise ValueError(
                f"merged scores/ranks must have shape ({len(self.channels)}, {len(rows)}) (channels, candidates), "
                f"got {merged.scores.shape} and {merged.ranks.shape}"
            )
        times = None if request.history_times is None else np.asarray(request.history_times, np.float64)
        if times is not None and times.shape != history.shape:
            raise ValueError(f"history_times has shape {times.shape}, expected {history.shape} (aligned with history)")
        now, recent = float(request.now), history[-self.last_n :]
        out = np.empty((len(rows), len(self.names)), np.float32)
        k = len(self.channels)
        out[:, 0 : 2 * k : 2] = merged.scores.T
        out[:, 1 : 2 * k : 2] = merged.ranks.T
        out[:, 2 * k] = (~np.isnan(merged.ranks)).sum(0)
        col = 2 * k + 1
        category = stats.category[rows]
        item = [self.log_popularity[rows], self.log_recent_popularity[rows]]
        item += [(now - stats.first_seen[rows]) / SECONDS_PER_DAY, category]
        item += [stats.numeric[name][rows] for name in self.numeric]
        for values in item:
            out[:, col] = values
            col += 1
        last_time = times[-1] if times is not None and len(times) else math.nan
        user = [len(history), (now - last_time) / SECONDS_PER_DAY]
        user += field_values(request.user, self.user_fields, "user")
        hour = math.floor(now / SECONDS_PER_HOUR) % 24 if math.isfinite(now) else math.nan
        weekday = (math.floor(now / SECONDS_PER_DAY) + EPOCH_WEEKDAY) % 7 if math.isfinite(now) else math.nan
        context = [hour, weekday, *field_values(request.context, self.context_fields, "context")]
        width = len(user) + len(context)
        out[:, col : col + width] = np.asarray(user + context, np.float32)
        col += width
        known = category > 0
        out[:, col] = self.category_share(history, category, known)
        out[:, col + 1] = self.category_share(recent, category, known)
        if stats.vectors is None or not len(history):
            out[:, col + 2 : col + 4] = nan
        else:
            similarity = stats.vectors[rows] @ stats.vectors[recent].T  # (C, L)
            out[:, col + 2] = similarity.max(1)
            out[:, col + 3] = similarity.mean(1)
        if len(history):
            covisit = stats.covisit_with(recent, rows)  # (L, C)
            out[:, col + 4] = covisit[-1]
            out[:, col + 5] = covisit.sum(0)
        else:
            out[:, col + 4 : col + 6] = nan
        share = stats.category_hour[category, int(hour)] if math.isfinite(hour) else np.full(len(rows), nan)
        out[:, col + 6] = np.where(known, share, nan)
        return out

    def category_share(self, history: np.ndarray, category: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Share of ``history`` in each candidate's category; NaN for an unknown category or an empty history."""
        if not len(history):
            return np.full(len(category), np.nan, np.float32)
        counts = np.bincount(self.stats.category[history], minlength=len(self.stats.category_hour))
        return np.where(known, counts[category] / len(history), np.nan).astype(np.float32)

    def build_many(self, requests: Sequence[Request], merged: Sequence[Merged]) -> np.ndarray:
        """The :meth:`build` matrices of several requests, stacked (rows of request 0 first)."""
        if len(requests) != len(merged):
            raise ValueError(f"got {len(requests)} requests but {len(merged)} merged candidate lists")
        blocks = [self.build(r, m) for r, m in zip(requests, merged, strict=True)]
        return np.concatenate(blocks) if blocks else np.zeros((0, len(self.names)), np.float32)
