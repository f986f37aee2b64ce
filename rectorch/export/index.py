"""FAISS item index: one factory string chosen by catalog size, ANN recall measured against exact search."""

import math
import time
from dataclasses import dataclass, field

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure
from faiss.contrib.exhaustive_search import knn_ground_truth

from rectorch.serving.index import apply_search_params


@dataclass
class IndexSettings:
    """How the item index is chosen, built and tuned.

    Args:
        factory: explicit FAISS factory string; ``None`` = choose by catalog size.
        flat_max_items: catalogs up to this size get exact ``Flat`` search.
        large_factory: factory above ``flat_max_items``; ``{nlist}`` becomes a power of two near 4·√N.
        pq_min_items: catalogs from this size on get ``pq_factory`` instead (compact codes, re-ranked).
        pq_factory: factory from ``pq_min_items`` on; ``{nlist}`` as above, ``{m}`` = the number of PQ
            sub-quantizers, the divisor of the vector width nearest to width / ``pq_sub_dim``.
        pq_sub_dim: vector components per PQ sub-quantizer.
        target_recall: recall@max(ks) the search parameters are tuned to reach.
        ks: cut-offs at which recall against exact search is measured.
        recall_queries: queries used for recall measurement and tuning.
        train_size: vectors sampled to train IVF/PQ indexes.
        seed: sampling seed.
    """

    factory: str | None = None
    flat_max_items: int = 100_000
    large_factory: str = "IVF{nlist},Flat"
    pq_min_items: int = 2_000_000
    pq_factory: str = "IVF{nlist},PQ{m}x4fs,Refine(SQ8)"
    pq_sub_dim: int = 2
    target_recall: float = 0.95
    ks: list[int] = field(default_factory=lambda: [10, 100])
    recall_queries: int = 1000
    train_size: int = 200_000
    seed: int = 0


def choose_factory(num_items: int, dim: int, settings: IndexSettings) -> str:
    """``Flat`` for small catalogs, ``large_factory`` above, ``pq_factory`` for the largest; ``nlist ≈ 4·√N``.

    On the 1M-item benchmark catalog IVF4096 reaches recall@100 0.96 at nprobe=16 (0.16 ms),
    where IVF1024 needs nprobe=64 (about 10x the scan) for the same recall. On 10M clustered items
    the default ``pq_factory`` (IVF16384,PQ32x4fs,Refine(SQ8)) reaches 0.958 at 89 B/item
    (``scripts/bench_index_scale.py``).
    """
    if settings.factory:
        return settings.factory
    if num_items <= settings.flat_max_items:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(num_items)))
    if num_items < settings.pq_min_items:
        return settings.large_factory.format(nlist=nlist)
    divisors = [m for m in range(1, dim + 1) if dim % m == 0]
    m = min(divisors, key=lambda m: abs(m - dim / settings.pq_sub_dim))
    return settings.pq_factory.format(nlist=nlist, m=m)


def trained_index(vectors: np.ndarray, factory: str, settings: IndexSettings) -> faiss.Index:
    """Empty inner-product index described by ``factory``, trained on a sample of ``vectors`` when it needs it."""
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(settings.seed)
        sample = rng.choice(len(vectors), size=min(len(vectors), settings.train_size), replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)], np.float32))
    return index


def build_index(vectors: np.ndarray, factory: str, settings: IndexSettings) -> faiss.Index:
    """Inner-product index described by ``factory`` over ``vectors`` (row r = catalog row r)."""
    index = trained_index(vectors, factory, settings)
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


#: re-ranking depths tried for a refined index: the base returns k · k_factor candidates
K_FACTORS = (1, 2, 4, 8, 16)


def _search_grid(index: faiss.Index) -> list[str]:
    """Search parameters to try, cheapest first (a refined index: its base's, at the deepest re-ranking)."""
    if isinstance(index, faiss.IndexRefine):
        deepest = f"k_factor_rf={K_FACTORS[-1]}"
        return [
            f"{params},{deepest}" if params else deepest
            for params in _search_grid(faiss.downcast_index(index.base_index))
        ]
    if faiss.try_extract_index_ivf(index) is not None:
        nlist = faiss.extract_index_ivf(index).nlist
        return [f"nprobe={2**i}" for i in range(int(math.log2(nlist)) + 1)]
    if "HNSW" in type(index).__name__:
        return [f"efSearch={ef}" for ef in (16, 32, 64, 128, 256, 512, 1024, 2048)]
    return [""]


def recall_at(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, ks: list[int]) -> dict[str, float]:
    """``recall@k`` = share of the exact top-k that the index returns in its top-k."""
    _, found = index.search(queries, max(ks))
    return {f"recall@{k}": float(knn_intersection_measure(found[:, :k], truth[:, :k])) for k in ks}


def _sweep(
    index: faiss.Index, grid: list[str], queries: np.ndarray, truth: np.ndarray, ks: list[int], target: float
) -> list[dict]:
    """Recall at each ``grid`` entry in turn, up to the first reaching ``target`` at ``max(ks)``."""
    sweep = []
    for params in grid:
        apply_search_params(index, params)
        sweep.append({"search_params": params, **recall_at(index, queries, truth, ks)})
        if sweep[-1][f"recall@{max(ks)}"] >= target:
            break
    return sweep


def tune_index(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, settings: IndexSettings) -> dict:
    """Smallest ``nprobe``/``efSearch`` reaching ``target_recall`` at ``max(ks)`` (else the best); sets it on the index.

    A refined index is swept at the deepest re-ranking (``k_factor_rf``), then the smallest depth that
    still reaches the target at the chosen ``nprobe`` is kept. Its recall need not grow with ``nprobe``:
    with coarse codes, more lists push true neighbours out of the ``k · k_factor`` candidates re-ranked.

    Returns:
        ``{"search_params", "recall": {...}, "sweep": [...], "search_ms": ...}`` for the manifest.
    """
    ks = [k for k in settings.ks if k <= index.ntotal] or [index.ntotal]
    queries = np.ascontiguousarray(queries[: settings.recall_queries], np.float32)
    _, truth = knn_ground_truth(queries, _blocks(vectors), max(ks), metric_type=faiss.METRIC_INNER_PRODUCT)
    key = f"recall@{max(ks)}"
    sweep = _sweep(index, _search_grid(index), queries, truth, ks, settings.target_recall)
    chosen = max(sweep, key=lambda row: row[key])  # the one reaching the target, else the best
    if isinstance(index, faiss.IndexRefine) and chosen[key] >= settings.target_recall:
        base = chosen["search_params"].rsplit("k_factor_rf=", 1)[0]
        shallower = [f"{base}k_factor_rf={k}" for k in K_FACTORS[:-1]]
        shallow = _sweep(index, shallower, queries, truth, ks, settings.target_recall)
        sweep += shallow
        chosen = next((row for row in shallow if row[key] >= settings.target_recall), chosen)
    apply_search_params(index, chosen["search_params"])
    start = time.perf_counter()
    for query in queries[:200]:
        index.search(query[None], max(ks))
    search_ms = (time.perf_counter() - start) * 1000 / min(len(queries), 200)
    recall = {k: v for k, v in chosen.items() if k.startswith("recall@")}
    return {
        "search_params": chosen["search_params"],
        "recall": recall,
        "target_reached": recall[key] >= settings.target_recall,
        "sweep": sweep,
        "search_ms_batch1": round(search_ms, 4),
        "queries": len(queries),
    }


def _blocks(vectors: np.ndarray, size: int = 65536):
    for start in range(0, len(vectors), size):
        yield np.ascontiguousarray(vectors[start : start + size], np.float32)
