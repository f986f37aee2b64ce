"""PinSage's view of a split: item–item training pairs with their sampled computation graphs.

Ying et al., KDD 2018 (https://arxiv.org/abs/1806.01973). The graph is the bipartite user–item graph of
the training interactions only; neighbourhoods come from item → user → item random walks
(``rectorch.data.random_walks``). A batch holds query items, their co-engaged positives, shared random
negatives and hard negatives from a middle band of the query's visit-count ranking, all as positions into
one node list ordered so that every layer's target nodes are a prefix of its source nodes.
"""

import time
from collections.abc import Sequence

import numpy as np
import torch

from rectorch.data.arguments import positive_int
from rectorch.data.cells import short
from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.random_walks import BipartiteGraph, RandomWalks
from rectorch.data.views import Batch, IndexDataset


def _append_new(nodes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``nodes`` followed by the distinct ``candidates`` not already in it (sorted)."""
    fresh = np.unique(candidates)
    return np.concatenate([nodes, fresh[~np.isin(fresh, nodes)]])


def _worker_generator(seed: int, generators: dict[int, np.random.Generator]) -> np.random.Generator:
    """One generator per DataLoader worker (the main process is worker 0), so workers draw different samples."""
    info = torch.utils.data.get_worker_info()
    worker = 0 if info is None else info.id + 1
    return generators.setdefault(worker, np.random.default_rng([seed, worker]))


def _local(nodes: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Position of each of ``items`` in ``nodes`` (every item must be present; 0 maps to -1)."""
    sorter = np.argsort(nodes)
    found = sorter[np.minimum(np.searchsorted(nodes, items, sorter=sorter), len(nodes) - 1)]
    return np.where(items > 0, found, -1)


class GraphView:
    """Random-walk neighbourhoods, co-engagement pairs and hard negatives for PinSage.

    Training batch (positions index ``nodes``): ``{"nodes": (n_0,), "sizes": [n_0, ..., n_K],
    "neighbors": (n_1, T) (-1 = none), "weights": (n_1, T), "query": (B,), "positive": (B,),
    "negatives": (M,), "hard": (B, H)}``. Layer ``k`` of ``K`` maps the first ``n_{k-1}`` nodes onto the
    first ``n_k``, along the first ``n_k`` rows of ``neighbors``; the ``n_K`` targets come first.
    Query inputs: ``{"history": (B, history_len)}``, like ``SequenceView``.

    Args:
        walks: per-batch walks that sample the training computation graphs.
        inference_walks: walks for the full neighbourhood table used at inference (more walks, less noise).
        hard_walks: walks that rank items for each query; their ``top_k`` is unused.
        num_layers: graph convolutions, i.e. hops of neighbourhood per target node.
        window: a positive is one of the next ``window`` items of the query item in a user's history.
        num_negatives: uniformly random negatives shared by the batch.
        num_hard: hard negatives per query, drawn from ranks ``hard_ranks = [lo, hi)``.
        history_len: most recent items a user query reads.
        seed: seed of the sampling generator (walks, offsets, negatives).
    """

    def __init__(
        self,
        walks: RandomWalks,
        inference_walks: RandomWalks,
        hard_walks: RandomWalks,
        num_layers: int = 2,
        window: int = 3,
        num_negatives: int = 500,
        num_hard: int = 4,
        hard_ranks: tuple[int, int] = (50, 200),
        history_len: int = 50,
        seed: int = 0,
    ) -> None:
        ranks = list(hard_ranks) if isinstance(hard_ranks, Sequence) and not isinstance(hard_ranks, str) else []
        if len(ranks) != 2:
            raise ValueError(f"hard_ranks must be two ranks [lo, hi], got {short(hard_ranks)}")
        lo, hi = positive_int("hard_ranks[0]", ranks[0], low=0), positive_int("hard_ranks[1]", ranks[1], low=0)
        if not lo < hi:
            raise ValueError(f"hard_ranks must be 0 <= lo < hi, got {short(hard_ranks)}")
        num_layers, window = positive_int("num_layers", num_layers), positive_int("window", window)
        history_len = positive_int("history_len", history_len)
        num_negatives, num_hard = positive_int("num_negatives", num_negatives, 0), positive_int("num_hard", num_hard, 0)
        seed = positive_int("seed", seed, low=0)
        if walks.top_k != inference_walks.top_k:
            raise ValueError("walks and inference_walks must keep the same top_k")
        self.walks, self.inference_walks, self.hard_walks = walks, inference_walks, hard_walks
        self.num_layers, self.window, self.history_len = num_layers, window, history_len
        self.num_negatives, self.num_hard, self.hard_ranks = num_negatives, num_hard, (lo, hi)
        self.seed = seed
        self.timings: dict[str, float] = {}

    @property
    def query_len(self) -> int | None:
        return self.history_len

    def neighbourhood_table(self, train: Csr, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's top-T neighbours and importance weights from ``inference_walks`` (seeded).

        Shapes:
            → neighbours ``(num_items + 1, T)`` int64 (0 = none; row 0 empty), weights ``(num_items + 1, T)``.
        """
        start = time.perf_counter()
        graph = BipartiteGraph.from_interactions(train, num_items)
        seeds = np.arange(num_items + 1)
        neighbours, weights = self.inference_walks.neighbours(graph, seeds, np.random.default_rng(self.seed))
        neighbours[0], weights[0] = 0, 0.0
        self.timings["inference_walks_s"] = time.perf_counter() - start
        return torch.from_numpy(neighbours), torch.from_numpy(weights)

    def hard_negative_table(self, graph: BipartiteGraph, rng: np.random.Generator) -> np.ndarray:
        """Items in each item's hard band, shape ``(num_items + 1, hi - lo)``."""
        start = time.perf_counter()
        table = self.hard_walks.band(graph, np.arange(graph.num_items + 1), self.hard_ranks, rng)
        self.timings["hard_walks_s"] = time.perf_counter() - start
        return table

    def train_dataset(self, train: Csr, features: tuple[FeatureTable, FeatureTable]) -> IndexDataset:
        graph = BipartiteGraph.from_interactions(train, int(train.items.max(initial=0)))
        hard = self.hard_negative_table(graph, np.random.default_rng(self.seed)) if self.num_hard else None
        generators: dict[int, np.random.Generator] = {}
        row_end = np.repeat(train.indptr[1:], train.lengths())
        positions = np.flatnonzero(np.arange(len(train.items)) < row_end - 1)

        def build(rows: np.ndarray) -> Batch:
            rng = _worker_generator(self.seed, generators)
            pos = positions[rows]
            reach = np.minimum(self.window, row_end[pos] - 1 - pos)
            query = train.items[pos]
            positive = train.items[pos + 1 + (rng.random(len(pos)) * reach).astype(np.int64)]
            negatives = rng.integers(1, graph.num_items + 1, self.num_negatives)
            picks = rng.integers(0, self.hard_ranks[1] - self.hard_ranks[0], (len(pos), self.num_hard))
            hard_items = np.take_along_axis(hard[query], picks, axis=1) if hard is not None else picks[:, :0]
            return self.computation_graph(graph, query, positive, negatives, hard_items, rng)

        return IndexDataset(len(positions), build)

    def computation_graph(
        self,
        graph: BipartiteGraph,
        query: np.ndarray,
        positive: np.ndarray,
        negatives: np.ndarray,
        hard: np.ndarray,
        rng: np.random.Generator,
    ) -> Batch:
        """The batch dict for these items: ``num_layers`` hops of sampled neighbourhoods around them."""
        nodes = _append_new(np.zeros(0, np.int64), np.concatenate([query, positive, negatives, hard.ravel()]))
        sizes, blocks = [len(nodes)], []
        for _ in range(self.num_layers):
            frontier = nodes[sum(len(b[0]) for b in blocks) :]
            blocks.append(self.walks.neighbours(graph, frontier, rng))
            nodes = _append_new(nodes, blocks[-1][0][blocks[-1][0] > 0])
            sizes.append(len(nodes))
        neighbours = np.concatenate([b[0] for b in blocks])  # rows: nodes[: sizes[-2]]
        weights = np.concatenate([b[1] for b in blocks])
        return {
            "nodes": torch.from_numpy(nodes),
            "sizes": sizes[::-1],
            "neighbors": torch.from_numpy(_local(nodes, neighbours)),
            "weights": torch.from_numpy(weights),
            "query": torch.from_numpy(_local(nodes, query)),
            "positive": torch.from_numpy(_local(nodes, positive)),
            "negatives": torch.from_numpy(_local(nodes, negatives)),
            "hard": torch.from_numpy(_local(nodes, hard)),
        }

    def query(
        self, users: np.ndarray, history: Csr, rows: np.ndarray, features: tuple[FeatureTable, FeatureTable]
    ) -> Batch:
        return {"history": history.padded(rows, self.history_len)}
