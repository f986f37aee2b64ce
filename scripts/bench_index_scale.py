"""The item index at catalog scale: build time, memory, recall against exact search and search latency.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python scripts/bench_index_scale.py --items 1000000 10000000
    OMP_NUM_THREADS=1 python scripts/bench_index_scale.py --items 1000000 --set pq_factory=IVF{nlist},SQ8

Per size, ``--items`` unit-norm item vectors (a mixture of ``--clusters`` Gaussian clusters, scored by inner
product like a bundle's ``ip`` index; at ``--noise 1.0`` a top-100 spans many IVF lists, where the 0.35 of
``bench_serving.py`` keeps it in one or two) are generated in chunks into a memory-mapped ``.npy`` under
``--workdir``. The index is chosen, built (trained on a sample, then every vector added) and tuned to
``target_recall`` by the export's own code (``conf/export/index/auto.yaml``, with ``--set KEY=VALUE``
overrides; ``pq_min_items=0`` unless set, so every size measures the IVF-PQ tier), written as
``faiss.write_index`` bytes, and loaded back through serving's ``ItemIndex``. Measured on that loaded index,
with held-out queries from the same mixture: recall@10/@100 against exact search, single-query
p50/p99 latency on one thread (top ``--k``; wall and the thread's CPU time, which on a shared
machine leaves out the waits). One JSON line per size: ``factory``, ``search_params``,
``train_s``, ``add_s``, ``build_s``, ``index_bytes``, ``bytes_per_item``, ``load_s``, the recalls,
``p50_ms``, ``p99_ms``, ``peak_rss_gb`` (the process's peak resident set during that size, the mapped
vectors included) and ``vectors_gb`` (the part of it that is the memory-mapped vectors).

``--extrapolate-to N`` adds a line labelled ``"extrapolated": true``: bytes per item and build seconds at
``N`` from the two largest measured sizes (bytes linear in N, seconds a power law in N: use sizes where
adding, not the fixed-size training, dominates); recall and latency are not extrapolated (the largest
measured size's are repeated under ``measured_at``).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import time
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure
from faiss.contrib.exhaustive_search import knn_ground_truth
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rectorch.export.index import IndexSettings, choose_factory, trained_index, tune_index
from rectorch.resolvers import config_dir
from rectorch.serving.index import ItemIndex

CHUNK = 262_144  # rows generated, or scanned for exact search, per step


class Mixture:
    """Unit-norm vectors: a random cluster center (N(0, 1) per component) plus ``noise`` · N(0, 1), normalised."""

    def __init__(self, clusters: int, dim: int, noise: float, seed: int) -> None:
        self.centers = np.random.default_rng(seed).normal(size=(clusters, dim)).astype(np.float32)
        self.noise = noise

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rows = self.centers[rng.integers(0, len(self.centers), n)]
        rows += self.noise * rng.standard_normal(rows.shape, np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return rows


def write_items(path: Path, mixture: Mixture, n: int, seed: int) -> np.ndarray:
    """``n`` mixture vectors written chunk by chunk to a ``.npy`` at ``path``, returned memory-mapped."""
    items = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, mixture.centers.shape[1]))
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        items[start : start + CHUNK] = mixture.sample(min(CHUNK, n - start), rng)
    items.flush()
    return np.load(path, mmap_mode="r")


def blocks(vectors: np.ndarray):
    for start in range(0, len(vectors), CHUNK):
        yield np.ascontiguousarray(vectors[start : start + CHUNK])


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM restarts from the current RSS


def peak_rss_gb() -> float:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0]) / 2**20


def settings_from(overrides: list[str]) -> IndexSettings:
    """``conf/export/index/auto.yaml`` with ``pq_min_items=0`` (unless set) and ``overrides``, type-checked."""
    cfg = OmegaConf.load(config_dir() / "export" / "index" / "auto.yaml")
    cfg.pop("_target_")
    dotlist = OmegaConf.from_dotlist(["pq_min_items=0", *overrides])
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(IndexSettings), cfg, dotlist))


def latency_ms(index: ItemIndex, queries: np.ndarray, k: int) -> dict[str, float]:
    """p50/p99 wall and thread-CPU milliseconds of single-query searches (the first 20 only warm up)."""
    wall, cpu = [], []
    for query in queries:
        start, start_cpu = time.perf_counter(), time.thread_time()
        index.search(query[None], k)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    out = {}
    for name, times in (("", wall), ("cpu_", cpu)):
        p50, p99 = np.percentile(np.array(times[20:]) * 1000, [50, 99])
        out |= {f"{name}p50_ms": round(float(p50), 4), f"{name}p99_ms": round(float(p99), 4)}
    return out


def work_files(n: int, args: argparse.Namespace) -> tuple[Path, Path]:
    """The item vectors and index files of size ``n`` under ``--workdir`` (created, then removed, per size)."""
    path = args.workdir / f"bench_index_items_{n}_d{args.dim}_s{args.seed}.npy"
    return path, path.with_suffix(".faiss")


def measure(n: int, args: argparse.Namespace, settings: IndexSettings, mixture: Mixture) -> dict:
    path, index_path = work_files(n, args)
    reset_peak_rss()
    try:
        start = time.perf_counter()
        vectors = write_items(path, mixture, n, args.seed)
        generate_s = time.perf_counter() - start
        rng = np.random.default_rng(args.seed + 1)
        tuning = mixture.sample(settings.recall_queries, rng)
        queries = mixture.sample(args.queries, rng)
        latency_queries = mixture.sample(args.latency_queries + 20, rng)

        factory = choose_factory(n, args.dim, settings)
        start = time.perf_counter()
        index = trained_index(vectors, factory, settings)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        index.add(vectors)  # as build_index does after training
        add_s = time.perf_counter() - start
        info = tune_index(index, vectors, tuning, settings)
        faiss.write_index(index, str(index_path))
        del index
        data = index_path.read_bytes()
        start = time.perf_counter()
        loaded = ItemIndex.from_bytes(index_path.name, data, info["search_params"], n, args.dim)
        load_s = time.perf_counter() - start

        _, truth = knn_ground_truth(queries, blocks(vectors), 100, metric_type=faiss.METRIC_INNER_PRODUCT)
        _, found = loaded.search(queries, 100)
        recall = {
            f"recall@{k}": round(float(knn_intersection_measure(found[:, :k], truth[:, :k])), 4) for k in (10, 100)
        }
        latency = latency_ms(loaded, latency_queries, args.k)
        return {
            "items": n,
            "dim": args.dim,
            "clusters": args.clusters,
            "factory": factory,
            "search_params": info["search_params"],
            "tuned_recall": info["recall"],
            "sweep": [[row["search_params"], round(row[f"recall@{max(settings.ks)}"], 4)] for row in info["sweep"]],
            "generate_s": round(generate_s, 1),
            "train_s": round(train_s, 1),
            "add_s": round(add_s, 1),
            "build_s": round(train_s + add_s, 1),
            "index_bytes": len(data),
            "bytes_per_item": round(len(data) / n, 1),
            "load_s": round(load_s, 2),
            **recall,
            "queries": len(queries),
            "k": args.k,
            **latency,
            "latency_queries": args.latency_queries,
            "threads": faiss.omp_get_max_threads(),
            "peak_rss_gb": round(peak_rss_gb(), 2),
            "vectors_gb": round(vectors.nbytes / 2**30, 2),
        }
    finally:
        path.unlink(missing_ok=True)
        index_path.unlink(missing_ok=True)


def extrapolate(rows: list[dict], n: int) -> dict:
    """Bytes per item (linear in N) and build seconds (power law in N) at ``n`` from the two largest rows."""
    small, large = sorted(rows, key=lambda row: row["items"])[-2:]
    slope = (large["index_bytes"] - small["index_bytes"]) / (large["items"] - small["items"])
    index_bytes = large["index_bytes"] + slope * (n - large["items"])
    exponent = math.log(max(large["build_s"], 0.1) / max(small["build_s"], 0.1)) / math.log(
        large["items"] / small["items"]
    )
    return {
        "items": n,
        "extrapolated": True,
        "from_items": [small["items"], large["items"]],
        "index_bytes": int(index_bytes),
        "bytes_per_item": round(index_bytes / n, 1),
        "build_s": round(large["build_s"] * (n / large["items"]) ** exponent, 1),
        "build_s_exponent": round(exponent, 2),
        "measured_at": large["items"],
        **{
            key: large[key]
            for key in ("factory", "search_params", "recall@10", "recall@100", "p50_ms", "p99_ms", "cpu_p99_ms")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--noise", type=float, default=1.0, help="per-component noise around a center")
    parser.add_argument("--queries", type=int, default=500, help="held-out queries for recall")
    parser.add_argument("--latency-queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=100, help="results per latency query")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="IndexSettings overrides")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--extrapolate-to", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.workdir.is_dir():
        parser.error(f"--workdir {args.workdir} is not a directory")
    if min(args.items) < 1000:
        parser.error(f"--items {min(args.items)}: each size must be at least 1000")
    if args.extrapolate_to and len(set(args.items)) < 2:
        parser.error("--extrapolate-to needs at least two --items sizes")
    taken = [str(f) for n in args.items for f in work_files(n, args) if os.path.lexists(f)]
    if taken:
        parser.error(f"{taken[0]} exists; the benchmark writes (and removes) that file, choose another --workdir")
    try:
        settings = settings_from(args.set)
    except OmegaConfBaseException as error:
        parser.error(f"--set {' '.join(args.set)}: {str(error).strip().splitlines()[0]}")
    mixture = Mixture(args.clusters, args.dim, args.noise, args.seed)
    rows = []
    for n in args.items:
        rows.append(measure(n, args, settings, mixture))
        print(json.dumps(rows[-1]), flush=True)
    if args.extrapolate_to:
        print(json.dumps(extrapolate(rows, args.extrapolate_to)), flush=True)


if __name__ == "__main__":
    main()
