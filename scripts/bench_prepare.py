"""Preparation at scale: the pandas and Polars engines side by side, each in a fresh process.

    OMP_NUM_THREADS=1 python scripts/bench_prepare.py --dataset ml1m
    OMP_NUM_THREADS=1 python scripts/bench_prepare.py --dataset /tmp/syn10m --engines pandas polars
    OMP_NUM_THREADS=1 python scripts/bench_prepare.py --dataset /tmp/syn50m --engines polars

``--dataset`` is ``ml1m`` (``$RECTORCH_DATA_DIR/ml-1m``) or a folder written by
``scripts/make_synthetic_large.py`` (``interactions/*.parquet`` + ``items.parquet``). Each engine prepares
through ``load_or_prepare`` into an empty temporary cache (``--cache-format``): fingerprint, read, prepare,
write the entry; then a second process loads the entry. One JSON line per engine (seconds per stage, peak RSS
of that process, rows, seconds per 1M interactions), then one line with the pandas/Polars ratio when both ran.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
from rectorch.data.cache import fingerprint
from rectorch.data.prepare import Preprocessing, load_or_prepare
if spec["dataset"] == "ml1m":
    import os
    from rectorch.data.movielens import MovieLens1MSasrecSource
    source = MovieLens1MSasrecSource(root=Path(os.environ["RECTORCH_DATA_DIR"]) / "ml-1m", with_features=True)
else:
    from rectorch.data.parquet_source import ParquetSource
    root = Path(spec["dataset"])
    items = root / "items.parquet"
    source = ParquetSource(root / "interactions", item_features_path=items if items.is_file() else None,
                           category_feature="category" if items.is_file() else None, name=root.name)
preprocessing = Preprocessing(engine=spec["engine"], **spec["preprocessing"])
start = time.perf_counter()
key = fingerprint(source, preprocessing)
hashed = time.perf_counter()
dataset = load_or_prepare(source, preprocessing, spec["cache"], spec["format"])
done = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"fingerprint_s": round(hashed - start, 2), "total_s": round(done - start, 2),
                  "interactions": int(dataset.num_interactions), "users": int(dataset.num_users),
                  "items": int(dataset.num_items), "peak_rss_mb": round(rss, 1), "key": key}))
"""


def child(spec: dict) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env, timeout=3600
    )
    if result.returncode != 0:
        sys.exit(f"bench_prepare: the {spec['engine']} engine failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="ml1m, or a folder from scripts/make_synthetic_large.py")
    parser.add_argument("--engines", nargs="+", default=["pandas", "polars"], choices=["pandas", "polars"])
    parser.add_argument("--cache-format", default="arrow", choices=["npz", "arrow"])
    parser.add_argument("--user-core", type=int, default=0)
    parser.add_argument("--item-core", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the temporary caches go (default: the system temp)")
    args = parser.parse_args()
    if args.dataset != "ml1m" and not (Path(args.dataset) / "interactions").is_dir():
        print(f"bench_prepare: {args.dataset} has no interactions/ folder", file=sys.stderr)
        sys.exit(2)
    preprocessing = {"user_core": args.user_core, "item_core": args.item_core}
    rows = {}
    for engine in args.engines:
        cache = tempfile.mkdtemp(prefix="bench_prepare.", dir=args.workdir)
        try:
            spec = {"dataset": args.dataset, "engine": engine, "cache": cache, "format": args.cache_format}
            spec["preprocessing"] = preprocessing
            prepared = child(spec)
            loaded = child(spec)  # the entry now exists: this measures a load
        finally:
            shutil.rmtree(cache)
        row = {
            "dataset": args.dataset,
            "engine": engine,
            "cache_format": args.cache_format,
            "interactions": prepared["interactions"],
            "users": prepared["users"],
            "items": prepared["items"],
            "prepare_s": prepared["total_s"],
            "fingerprint_s": prepared["fingerprint_s"],
            "s_per_1m_interactions": round(prepared["total_s"] / prepared["interactions"] * 1e6, 3),
            "peak_rss_mb": prepared["peak_rss_mb"],
            "load_cached_s": loaded["total_s"],
            "load_cached_rss_mb": loaded["peak_rss_mb"],
            "threads": os.environ.get("OMP_NUM_THREADS"),
        }
        rows[engine] = row
        print(json.dumps(row), flush=True)
    if len(rows) == 2:
        ratio = rows["pandas"]["prepare_s"] / rows["polars"]["prepare_s"]
        rss = rows["pandas"]["peak_rss_mb"] / rows["polars"]["peak_rss_mb"]
        print(
            json.dumps(
                {
                    "dataset": args.dataset,
                    "pandas_over_polars_seconds": round(ratio, 2),
                    "pandas_over_polars_rss": round(rss, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
