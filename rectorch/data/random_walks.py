"""PinSage neighbourhoods: item → user → item random walks on the training graph, vectorised in numpy.

Ying et al., "Graph Convolutional Neural Networks for Web-Scale Recommender Systems", KDD 2018
(https://arxiv.org/abs/1806.01973), §3.2: an item's neighbourhood is the ``top_k`` items most often
visited by short random walks that start at it, and the normalised visit counts weight the neighbours.
All walkers of all seeds advance together, one array operation per hop; a ``numpy.random.Generator``
makes every walk reproducible by seed.
"""

from dataclasses import dataclass

import numpy as np

from rectorch.data.csr import Csr


@dataclass
class BipartiteGraph:
    """The user–item graph of the training interactions, as CSR in both directions.

    Args:
        user_items: row ``u`` = the items user ``u`` interacted with (the training split).
        item_users: row ``i`` = the users who interacted with item ``i`` (rows ``0..num_items``).
    """

    user_items: Csr
    item_users: Csr

    @classmethod
    def from_interactions(cls, train: Csr, num_items: int) -> "BipartiteGraph":
        """Build both directions from the training CSR (pass ``split.train``, never validation/test)."""
        users = train.row_ids()
        order = np.argsort(train.items, kind="stable")
        counts = np.bincount(train.items, minlength=num_items + 1)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(Csr(train.indptr, train.items), Csr(indptr, users[order]))

    @property
    def num_items(self) -> int:
        return self.item_users.num_rows - 1

    def degree(self) -> np.ndarray:
        """Training interactions per item, shape ``(num_items + 1,)``."""
        return self.item_users.lengths()


def _hop(csr: Csr, nodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly chosen neighbour per node; ``-1`` where a node (or ``-1``) has none."""
    safe = np.maximum(nodes, 0)
    starts = csr.indptr[safe]
    degree = np.where(nodes >= 0, csr.indptr[safe + 1] - starts, 0)
    if len(csr.items) == 0:
        return np.full(len(nodes), -1, dtype=np.int64)
    pick = np.minimum(starts + (rng.random(len(nodes)) * degree).astype(np.int64), len(csr.items) - 1)
    return np.where(degree > 0, csr.items[pick], -1).astype(np.int64)


@dataclass(frozen=True)
class RandomWalks:
    """Item → user → item walks with restart, summarised as ranked visit counts per seed item.

    Args:
        num_walks: walkers started at each seed.
        walk_length: item → user → item hops per walker.
        restart_prob: probability that a walker jumps back to its seed after a hop.
        top_k: neighbours kept per item (PinSage's T).
    """

    num_walks: int = 64
    walk_length: int = 2
    restart_prob: float = 0.5
    top_k: int = 10

    def __post_init__(self) -> None:
        if min(self.num_walks, self.walk_length, self.top_k) <= 0:
            raise ValueError(f"num_walks, walk_length and top_k must be positive, got {self}")
        if not 0.0 <= self.restart_prob < 1.0:
            raise ValueError(f"restart_prob must be in [0, 1), got {self.restart_prob}")

    def visits(
        self, graph: BipartiteGraph, seeds: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Items visited from each seed (the seed itself excluded), most visited first.

        Returns:
            ``(rows, items, counts)`` sorted by row, then by count descending (ties in random order);
            ``rows`` index ``seeds``.
        """
        origin = np.repeat(np.arange(len(seeds)), self.num_walks)
        position = seeds[origin].astype(np.int64)
        visited = np.empty((self.walk_length, len(origin)), dtype=np.int64)
        for hop in range(self.walk_length):
            item = _hop(graph.user_items, _hop(graph.item_users, position, rng), rng)
            visited[hop] = item
            restart = (item < 0) | (rng.random(len(origin)) < self.restart_prob)
            position = np.where(restart, seeds[origin], item)
        rows = np.broadcast_to(origin, visited.shape).ravel()
        items = visited.ravel()
        valid = (items > 0) & (items != seeds[rows])
        width = graph.num_items + 1
        keys, counts = np.unique(rows[valid] * width + items[valid], return_counts=True)
        order = np.lexsort((rng.random(len(keys)), -counts, keys // width))
        return keys[order] // width, keys[order] % width, counts[order]

    def neighbours(
        self, graph: BipartiteGraph, seeds: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``top_k`` neighbours of each seed and their importance weights (visit counts summing to 1).

        Shapes:
            seeds ``(S,)`` → neighbours ``(S, top_k)`` int64 (0 = none), weights ``(S, top_k)`` float32.
        """
        rows, items, counts = self.visits(graph, seeds, rng)
        rank = _rank_within_rows(rows)
        keep = rank < self.top_k
        neighbours = np.zeros((len(seeds), self.top_k), dtype=np.int64)
        weights = np.zeros((len(seeds), self.top_k), dtype=np.float32)
        neighbours[rows[keep], rank[keep]] = items[keep]
        weights[rows[keep], rank[keep]] = counts[keep]
        totals = weights.sum(axis=1, keepdims=True)
        return neighbours, np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)

    def band(
        self, graph: BipartiteGraph, seeds: np.ndarray, ranks: tuple[int, int], rng: np.random.Generator
    ) -> np.ndarray:
        """Items ranked in ``[lo, hi)`` by visit count from each seed (PinSage's hard-negative band).

        Seeds whose walks reach fewer than ``lo + 1`` items get uniformly random items instead.

        Shapes:
            seeds ``(S,)`` → ``(S, hi - lo)`` int64, row ``s`` sorted by rank, short rows padded by repetition.
        """
        lo, hi = ranks
        rows, items, _ = self.visits(graph, seeds, rng)
        available = np.bincount(rows, minlength=len(seeds))
        starts = np.concatenate([[0], np.cumsum(available)[:-1]])
        span = np.clip(available - lo, 0, hi - lo)[:, None]
        offset = starts[:, None] + lo + np.arange(hi - lo) % np.maximum(span, 1)
        random = rng.integers(1, graph.num_items + 1, size=(len(seeds), hi - lo))
        if len(items) == 0:
            return random
        return np.where(span > 0, items[np.minimum(offset, len(items) - 1)], random)


def _rank_within_rows(rows: np.ndarray) -> np.ndarray:
    """Position of each entry inside its run of equal ``rows`` (``rows`` sorted)."""
    if len(rows) == 0:
        return rows
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    lengths = np.diff(np.r_[starts, len(rows)])
    return np.arange(len(rows)) - np.repeat(starts, lengths)
