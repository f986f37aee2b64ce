"""Pure numpy pieces of the serving pipeline: filters, MMR diversity, freshness and exploration slots."""

import numpy as np

from rectorch.serving.catalog import Catalog

SECONDS_PER_DAY = 86400.0


def member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin`` for a small sorted set, by binary search (no sort of ``values``)."""
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def allowed(catalog: Catalog, rows: np.ndarray, blocked: np.ndarray, categories: np.ndarray | None) -> np.ndarray:
    """Mask of ``rows`` that are available, not ``blocked`` and in ``categories`` (if given); both sets sorted."""
    keep = rows >= 0
    if catalog.available is not None:
        keep &= catalog.available[rows]
    keep &= ~member(rows, blocked)
    if categories is not None:
        keep &= member(catalog.category[rows], categories)
    return keep


def popular_rows(catalog: Catalog, n: int, blocked: np.ndarray, categories: np.ndarray | None) -> np.ndarray:
    """The ``n`` most popular allowed rows, scanning the popularity order in growing chunks."""
    found: list[np.ndarray] = []
    start, chunk, total = 0, max(4 * n, 256), 0
    order = catalog.by_popularity
    while total < n and start < len(order):
        rows = order[start : start + chunk]
        rows = rows[allowed(catalog, rows, blocked, categories)]
        found.append(rows)
        total += len(rows)
        start, chunk = start + chunk, chunk * 4
    return np.concatenate(found)[:n] if found else np.zeros(0, np.int64)


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (all equal → all 1)."""
    span = values.max() - values.min() if len(values) else 0.0
    return (values - values.min()) / span if span > 0 else np.ones_like(values)


def freshness(created_at: np.ndarray | None, rows: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    """Bonus in [0, 1]: 1 for an item created at ``now``, halving every ``half_life_days``; 0 when unknown."""
    if created_at is None:
        return np.zeros(len(rows), np.float32)
    age_days = np.maximum(now - created_at[rows], 0.0) / SECONDS_PER_DAY
    return np.nan_to_num(np.exp2(-age_days / half_life_days)).astype(np.float32)


def mmr(relevance: np.ndarray, similar: np.ndarray | None, categories: np.ndarray | None, lam: float, k: int):
    """Greedy maximal marginal relevance: positions of ``k`` picks from the candidates.

    Each step picks ``argmax λ·relevance − (1 − λ)·max similarity to the picks so far``. Similarity
    is the cosine of the L2-normalised ``similar`` vectors, else 1 for a shared known category.

    Shapes:
        relevance: ``(C,)`` in [0, 1]; similar: ``(C, D)`` unit rows or None; categories: ``(C,)``.
    """
    count = min(k, len(relevance))
    if lam >= 1.0 or (similar is None and categories is None):
        return np.argsort(-relevance, kind="stable")[:count]
    redundancy = np.full(len(relevance), -np.inf if similar is not None else 0.0, np.float32)
    picked = np.zeros(len(relevance), bool)
    order = np.empty(count, np.int64)
    for step in range(count):
        gain = lam * relevance - (1.0 - lam) * np.maximum(redundancy, 0.0)
        gain[picked] = -np.inf
        best = int(np.argmax(gain))
        order[step], picked[best] = best, True
        if similar is not None:
            redundancy = np.maximum(redundancy, similar @ similar[best])
        elif categories[best] != 0:
            redundancy = np.maximum(redundancy, (categories == categories[best]).astype(np.float32))
    return order


class ExplorationPool:
    """New or under-exposed rows that exploration slots draw from.

    Args:
        catalog: the items.
        quantile: popularity quantile at or below which an item is under-exposed.
    """

    def __init__(self, catalog: Catalog, quantile: float) -> None:
        threshold = np.quantile(catalog.popularity, quantile) if len(catalog) else 0.0
        self.under_exposed = np.flatnonzero(catalog.popularity <= threshold)
        self.created_at = catalog.created_at
        if catalog.created_at is not None:
            known = np.flatnonzero(~np.isnan(catalog.created_at))
            self.by_creation = known[np.argsort(catalog.created_at[known], kind="stable")]
            self.creation_sorted = catalog.created_at[self.by_creation]

    def new_rows(self, now: float, days: float) -> np.ndarray:
        if self.created_at is None:
            return np.zeros(0, np.int64)
        start = np.searchsorted(self.creation_sorted, now - days * SECONDS_PER_DAY)
        return self.by_creation[start:]

    def draw(self, rng: np.random.Generator, n: int, now: float, days: float, usable) -> np.ndarray:
        """Up to ``n`` distinct rows from the pool that pass ``usable(rows) -> mask``."""
        new = self.new_rows(now, days)
        pools = [pool for pool in (new, self.under_exposed) if len(pool)]
        if n <= 0 or not pools:
            return np.zeros(0, np.int64)
        tries = np.concatenate([pool[rng.integers(0, len(pool), 8 * n)] for pool in pools])
        tries = tries[usable(tries)]
        _, first = np.unique(tries, return_index=True)
        return tries[np.sort(first)][:n]
