"""SASRec training throughput on a large catalog: sampled softmax with logQ against full CE, one thread.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python scripts/bench_large_catalog.py --data /tmp/syn50m

``--data`` is a folder written by ``scripts/make_synthetic_large.py``. Each loss trains through
``rectorch-train`` (``data=parquet``: Polars preparation, memory-mapped Arrow cache, the usual split and
training context) for ``--batches`` batches of one epoch; validation and test run on one batch and are not
timed. The run's ``metrics.json`` gives the training seconds and the peak RSS. One JSON line per loss:
sequences per second, seconds per batch, peak RSS; then the ratio. Full CE scores every position against
every item, so it runs few batches.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOSSES = {"mixed_sampled_softmax": None, "full_softmax": 5}  # batches for full CE unless --batches is smaller


def train(data: Path, loss: str, batches: int, args: argparse.Namespace, workdir: Path) -> dict:
    run_dir = workdir / f"run-{loss}"
    command = [
        sys.executable,
        "-m",
        "rectorch.training.cli",
        "data=parquet",
        f"data.source.path={data / 'interactions'}",
        f"data.source.item_features_path={data / 'items.parquet'}",
        "data.source.category_feature=category",
        f"data.source.name={data.name}",
        f"data.batch_size={args.batch_size}",
        "model=sasrec",
        f"model/loss={loss}",
        f"model.view.max_len={args.max_len}",
        f"model.encoder.dim={args.dim}",
        "model.exclude_seen=false",
        "+model.optimizer.fused=true",  # one pass over the 1M-row table per step instead of several
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={batches}",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "logger=none",
        "callbacks.model_checkpoint=null",
        "callbacks.early_stopping=null",
        "callbacks.progress_bar=null",
        f"paths.cache_dir={args.cache_dir}",
        f"paths.log_dir={workdir / 'logs'}",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    if result.returncode != 0:
        sys.exit(f"bench_large_catalog: training with {loss} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seconds = metrics["seconds_per_epoch"]
    return {
        "loss": loss,
        "data": str(data),
        "batches": batches,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "dim": args.dim,
        "train_seconds": round(seconds, 2),
        "seconds_per_batch": round(seconds / batches, 3),
        "sequences_per_second": round(batches * args.batch_size / seconds, 1),
        "peak_rss_mb": metrics["peak_rss_mb"],
        "threads": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-data cache (default: <data>/.cache)")
    parser.add_argument("--timeout", type=int, default=3600)
    args = parser.parse_args()
    if not (args.data / "interactions").is_dir() or not (args.data / "items.parquet").is_file():
        print(f"bench_large_catalog: {args.data} lacks interactions/ or items.parquet", file=sys.stderr)
        sys.exit(2)
    args.cache_dir = args.cache_dir or args.data / ".cache"
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_large_catalog.") as workdir:
        for loss in args.losses:
            batches = min(args.batches, LOSSES[loss] or args.batches)
            rows[loss] = train(args.data, loss, batches, args, Path(workdir))
            print(json.dumps(rows[loss]), flush=True)
    if len(rows) == 2:
        speedup = rows["mixed_sampled_softmax"]["sequences_per_second"] / rows["full_softmax"]["sequences_per_second"]
        print(json.dumps({"sampled_over_full_ce_throughput": round(speedup, 1)}))


if __name__ == "__main__":
    main()
