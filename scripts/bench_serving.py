"""Serving latency on a synthetic 1M-item catalog: encode, search, recommend in-process and over HTTP, and the
learned ranking stage.

Builds (or reuses) one bundle per model family with the real encoder architecture (``conf/model/<name>.yaml``;
transformer/tower weights from ``--run-dir`` when given, item tables replaced by clustered synthetic vectors),
then prints one JSON line per measurement with ``stage``, ``items``, ``precision``, ``threads``,
``concurrency``, ``p50_ms``, ``p95_ms``, ``p99_ms``, ``qps`` (and ``errors`` for HTTP).

``--stages`` picks what is measured (default: all three): ``retrieval`` (``encode``, ``search``, ``recommend``
rows), ``http`` (``--skip-http`` drops it) and ``ranking``: two-stage bundles derived from that bundle (item
statistics from synthetic interactions, a LightGBM LambdaRank ranker of ``--ranker-trees`` ×
``--ranker-leaves`` exported to ONNX; see ``bench_ranking.py``), which add the rows ``ranker``, ``channels``,
``features``, ``ranking_stage`` and ``recommend_two_stage``, with ``channels`` (the channel set: ``ann+popular``,
``ann+popular+covisit``, ``ann400+popular+covisit``), ``candidates`` (mean per request; 500 rows for ``ranker``),
``trees``, ``leaves``, ``features``, ``round`` (``--rounds`` repeats every ranking section) and ``cpu_p50_ms``,
``cpu_p95_ms``, ``cpu_p99_ms`` (the thread's CPU time per call: on a shared machine, the cost without the waits).

    OMP_NUM_THREADS=1 python scripts/bench_serving.py --models sasrec two_tower --items 1000000
    OMP_NUM_THREADS=1 python scripts/bench_serving.py --models sasrec --stages ranking --precisions int8 --rounds 2
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch  # before faiss (see notes/dependencies.md)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, also when run as a file by runpy
import bench_ranking

from rectorch.data.spec import DataSpec
from rectorch.export.index import IndexSettings, build_index, choose_factory, tune_index
from rectorch.export.onnx_export import OnnxSettings, export_onnx, validate
from rectorch.export.quantize import quantize_int8
from rectorch.serving import Catalog, Recommender
from rectorch.serving.bundle import write_bundle
from rectorch.serving.encoder import build_feed, session

CLUSTERS, CATEGORIES, HISTORY = 2048, 20, 50
STAGES = ("retrieval", "http", "ranking")
NOW = 1_700_000_000.0


def build_model(name: str, num_items: int, run_dir: Path | None) -> torch.nn.Module:
    """The configured model for a catalog of ``num_items``; non-item weights from ``run_dir`` when given."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rectorch.resolvers import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    spec = DataSpec(name="synthetic-1m", num_users=1000, num_items=num_items, max_history=200)
    model = instantiate(cfg.model, spec=spec).eval()
    if run_dir is not None:
        from rectorch.models.checkpoint import read_checkpoint
        from rectorch.runs import RunRecord

        state = read_checkpoint(run_dir / RunRecord.read(run_dir).checkpoint)["state_dict"]
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return model


def plant_items(model: torch.nn.Module, num_items: int, rng: np.random.Generator) -> np.ndarray:
    """Fill every item table (rows ≥ num_items + 1) with clustered vectors; returns each item's cluster."""
    cluster = rng.integers(0, CLUSTERS, num_items + 1)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.ndim == 2 and tensor.shape[0] >= num_items + 1 and tensor.is_floating_point():
                dim = tensor.shape[1]
                centers = rng.normal(size=(CLUSTERS, dim)).astype(np.float32)
                rows = centers[cluster] + 0.35 * rng.normal(size=(num_items + 1, dim)).astype(np.float32)
                scale = float(tensor.std()) or 1.0
                tensor[: num_items + 1] = torch.from_numpy(rows * scale)
                tensor[0] = 0.0
            elif tensor.shape == (num_items + 1,) and "known" in name:
                tensor.fill_(1)
    return cluster


def histories(cluster: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sessions of ``HISTORY`` items drawn mostly from one or two clusters (model item ids)."""
    by_cluster = np.argsort(cluster[1:], kind="stable") + 1
    starts = np.searchsorted(cluster[by_cluster], np.arange(CLUSTERS + 1))
    out = []
    for _ in range(count):
        picks = cluster[rng.integers(1, len(cluster), 2)]  # clusters of two random items: never empty
        pools = [by_cluster[starts[c] : starts[c + 1]] for c in picks]
        out.append(np.concatenate([rng.choice(p, HISTORY // 2) for p in pools]))
    return out


def catalog_for(num_items: int, cluster: np.ndarray, rng: np.random.Generator) -> Catalog:
    return Catalog(
        ids=[f"item{r}" for r in range(num_items)],
        popularity=rng.zipf(1.3, num_items).clip(max=1e6).astype(np.float32),
        category=(cluster[1:] % CATEGORIES + 1).astype(np.int32),
        categories=["", *(f"cat{c}" for c in range(CATEGORIES))],
        created_at=NOW - rng.uniform(0, 730, num_items) * 86400.0,
        available=rng.random(num_items) > 0.01,
    )


def build_bundle(name: str, num_items: int, run_dir: Path | None, out: Path, seed: int) -> dict:
    """Export the synthetic-catalog model to ``out`` (fp32 + int8, tuned index); returns build timings."""
    rng = np.random.default_rng(seed)
    timings: dict = {}
    start = time.perf_counter()
    model = build_model(name, num_items, run_dir)
    cluster = plant_items(model, num_items, rng)
    examples = model.export_inputs()
    fp32, spec = export_onnx(model, examples, OnnxSettings())
    probe = {k: v.numpy() for k, v in examples.items()}
    validation = validate(model, fp32, [probe], OnnxSettings().atol)
    timings["export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    int8 = quantize_int8(fp32, _feeds(spec, histories(cluster, 1024, rng)))  # calibrated on planted histories
    timings["quantize_s"] = time.perf_counter() - start
    with torch.no_grad():
        vectors = model.item_vectors()[1 : num_items + 1].float().numpy()
    runtime = session(fp32)
    queries = np.vstack([runtime.run(None, feed)[0] for feed in _feeds(spec, histories(cluster, 1000, rng))])
    settings = IndexSettings()
    factory = choose_factory(num_items, vectors.shape[1], settings)
    start = time.perf_counter()
    index = build_index(vectors, factory, settings)
    timings["index_build_s"] = time.perf_counter() - start
    info = {"factory": factory, **tune_index(index, vectors, queries, settings)}
    catalog = catalog_for(num_items, cluster, rng)
    encoders = {"fp32": fp32, "int8": int8}
    reason = "benchmark bundle: both precisions are measured"
    write_bundle(
        out,
        family=type(model).__name__,
        encoders=encoders,
        inputs=spec,
        index=index,
        catalog=catalog,
        precision="int8",
        precision_reason=reason,
        index_info=info,
        reports={"validation": validation},
    )
    np.save(out / "bench_cluster.npy", cluster)
    return {**timings, "factory": factory, "search_params": info["search_params"], **info["recall"]}


def _feeds(spec: list, batch: list[np.ndarray], size: int = 256) -> list[dict]:
    return [
        build_feed(spec, batch[i : i + size], [None] * len(batch[i : i + size])) for i in range(0, len(batch), size)
    ]


def percentiles(seconds: list[float], prefix: str = "") -> dict:
    ms = np.asarray(seconds) * 1000
    return {f"{prefix}p{q}_ms": round(float(np.percentile(ms, q)), 4) for q in (50, 95, 99)}


def emit(stage: str, items: int, precision: str, concurrency: int, seconds: list[float], wall: float, **extra) -> None:
    record = {"stage": stage, "items": items, "precision": precision, "threads": 1, "concurrency": concurrency}
    record.update(percentiles(seconds), qps=round(len(seconds) / wall, 1), **extra)
    print(json.dumps(record), flush=True)


def requests_for(bundle: Path, count: int, seed: int) -> list[list[str]]:
    cluster = np.load(bundle / "bench_cluster.npy")
    return [[f"item{i - 1}" for i in h] for h in histories(cluster, count, np.random.default_rng(seed + 1))]


def bench_inprocess(bundle: Path, precision: str, requests: list[list[str]]) -> None:
    recommender = Recommender.from_bundle(bundle, precision=precision, threads=1)  # the settings it records
    items, catalog, settings = recommender.manifest.num_items, recommender.catalog, recommender.settings
    for history in requests[:50]:
        recommender.recommend(history, now=NOW)
    stages: dict[str, list[float]] = {"encode": [], "search": [], "recommend": []}
    walls = dict.fromkeys(stages, 0.0)
    for history in requests:
        rows = catalog.rows(history)[0] + recommender.manifest.id_offset
        t0 = time.perf_counter()
        query = recommender.encoder.encode([rows], [None])
        t1 = time.perf_counter()
        recommender.index.search(query, settings.candidates)
        t2 = time.perf_counter()
        recommender.recommend(history, now=NOW)
        t3 = time.perf_counter()
        for stage, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            stages[stage].append(seconds)
            walls[stage] += seconds
    for stage, seconds in stages.items():
        emit(stage, items, precision, 1, seconds, walls[stage])


def start_server(bundle: Path, precision: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "rectorch.serving.cli",
        f"bundle={bundle}",
        f"port={port}",
        f"precision={precision}",
    ]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, port
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("rectorch-serve did not start")


def http_client(port: int, bodies: list[bytes], latencies: list[float], errors: list[int]) -> None:
    """One keep-alive connection sending ``bodies`` one after the other."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    for body in bodies:
        start = time.perf_counter()
        try:
            connection.request("POST", "/recommend", body, headers)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            ok = False
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - start)
        errors.append(0 if ok else 1)


def bench_http(bundle: Path, precision: str, requests: list[list[str]], items: int, per_client: int) -> None:
    server, port = start_server(bundle, precision)
    try:
        bodies = [json.dumps({"history": h, "k": 10, "now": NOW}).encode() for h in requests]
        http_client(port, bodies[:50], [], [])
        for concurrency in (1, 16):
            latencies: list[float] = []
            errors: list[int] = []
            chunks = [bodies[(i * per_client) % len(bodies) :][:per_client] for i in range(concurrency)]
            threads = [threading.Thread(target=http_client, args=(port, c, latencies, errors)) for c in chunks]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            emit("http", items, precision, concurrency, latencies, time.perf_counter() - start, errors=sum(errors))
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["sasrec", "two_tower"])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--run-dir", type=Path, action="append", default=[], help="trained run(s) to take weights from")
    parser.add_argument("--bundle-root", type=Path, default=Path("/tmp/rectorch-bench"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--requests", type=int, default=2000, help="in-process requests per precision")
    parser.add_argument("--http-requests", type=int, default=1000, help="HTTP requests per client")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--skip-http", action="store_true", help="same as leaving http out of --stages")
    parser.add_argument("--seed", type=int, default=0)
    ranking = parser.add_argument_group("ranking stage")
    ranking.add_argument("--channel-sets", nargs="+", choices=list(bench_ranking.CHANNEL_SETS))
    ranking.add_argument("--ranker-trees", type=int, default=300)
    ranking.add_argument("--ranker-leaves", type=int, nargs="+", default=[63, 31], help="the first is served")
    ranking.add_argument("--ranker-queries", type=int, default=2000, help="synthetic queries the ranker learns from")
    ranking.add_argument("--ranker-calls", type=int, default=2000, help="RankerModel.score calls per ranker row")
    ranking.add_argument("--users", type=int, default=200_000, help="synthetic users behind the item statistics")
    ranking.add_argument("--interactions", type=int, default=2_000_000, help="their interactions")
    ranking.add_argument("--rounds", type=int, default=1, help="times each ranking section is measured")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stages = set(args.stages) - ({"http"} if args.skip_http else set())
    options = bench_ranking.Options(
        channel_sets=args.channel_sets or list(bench_ranking.CHANNEL_SETS),
        users=args.users,
        interactions=args.interactions,
        queries=args.ranker_queries,
        trees=args.ranker_trees,
        leaves=args.ranker_leaves,
        calls=args.ranker_calls,
        rounds=args.rounds,
        seed=args.seed,
    )
    runs = {json.loads((r / "metrics.json").read_text())["model"]: r for r in args.run_dir}
    for name in args.models:
        bundle = args.bundle_root / f"{name}-{args.items}"
        if not (bundle / "manifest.json").is_file():
            build = build_bundle(name, args.items, runs.get(name.replace("_", "")), bundle, args.seed)
            print(json.dumps({"stage": "build", "model": name, "items": args.items, **build}), flush=True)
        requests = requests_for(bundle, max(args.requests, 16 * 50), args.seed)
        for precision in args.precisions:
            if "retrieval" in stages:
                bench_inprocess(bundle, precision, requests[: args.requests])
            if "http" in stages:
                bench_http(bundle, precision, requests, args.items, args.http_requests)
        if "ranking" in stages:
            bench_two_stage(bundle, name, args.precisions, requests[: args.requests], options, args.seed)


def bench_two_stage(
    bundle: Path,
    model: str,
    precisions: list[str],
    requests: list[list[str]],
    options: bench_ranking.Options,
    seed: int,
) -> None:
    """Build the missing two-stage bundles (``build`` rows), then print the ranking rows."""
    rng = np.random.default_rng(seed + 2)
    train = bench_ranking.with_times(requests_for(bundle, options.queries, seed + 100), NOW, rng)
    for row in bench_ranking.build(bundle, options, train, NOW):
        print(json.dumps({**row, "model": model}), flush=True)
    queries = bench_ranking.with_times(requests, NOW, rng)
    for row in bench_ranking.rows(bundle, precisions, queries, options, NOW):
        cpu = percentiles(row.pop("cpu"), "cpu_")
        emit(**row, **cpu, model=model)


if __name__ == "__main__":
    main()
