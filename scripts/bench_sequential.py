"""Benchmark sequential recipes: full training runs (quality) or training-step speed.

Quality: train a pinned recipe through ``rectorch.training.train.train`` and print one JSON line::

    OMP_NUM_THREADS=1 python scripts/bench_sequential.py train experiment=sasrec_ml1m seed=42

Speed: time training steps of a recipe without validation or Lightning (the same data module, model,
loss and optimizer), print one JSON line, and optionally a profile of one step::

    OMP_NUM_THREADS=1 python scripts/bench_sequential.py speed experiment=sasrec_ml1m --epochs 2 --profile

Extra Hydra overrides go after the mode, e.g. ``model.encoder.attention_dropout=0``.
"""

import argparse
import json
import resource
import statistics
import sys
import time
import warnings
from contextlib import nullcontext

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from rectorch.resolvers import config_dir
from rectorch.training.memory import fix_mmap_threshold
from rectorch.training.train import build, train


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_training(overrides: list[str]) -> dict:
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.run.dir
        cfg.trainer.enable_progress_bar = False
        cfg.callbacks.pop("progress_bar", None)
    results = train(cfg)
    return {
        "command": " ".join(["python", *sys.argv]),
        "threads": torch.get_num_threads(),
        **{key: results[key] for key in ("model", "protocol", "test", "val", "epochs", "best_epoch")},
        "seconds_per_epoch": results["seconds_per_epoch"],
        "train_seconds": results["train_seconds"],
        "peak_rss_mb": results["peak_rss_mb"],
        "output_dir": cfg.paths.output_dir,
    }


def training_steps(overrides: list[str], bf16: bool, compiled: bool):
    """(step function, training loader) for the configured model; no Lightning, no validation."""
    cfg = compose_config(overrides)
    torch.manual_seed(cfg.seed)
    fix_mmap_threshold(cfg.get("malloc_mmap_threshold_mb"))
    datamodule, model, _ = build(cfg)
    if compiled:
        model.encoder = torch.compile(model.encoder, dynamic=True)
    optimizer = model.configure_optimizers()
    model.train()

    def step(batch: dict) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = model.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, datamodule.train_dataloader()


def run_speed(overrides: list[str], args: argparse.Namespace) -> dict:
    step, loader = training_steps(overrides, args.bf16, args.compile)
    step_seconds, epoch_seconds, first_step = [], [], None
    for _ in range(args.epochs):
        start = time.perf_counter()
        for index, batch in enumerate(loader):
            if args.max_steps is not None and index >= args.max_steps:
                break
            t0 = time.perf_counter()
            step(batch)
            step_seconds.append(time.perf_counter() - t0)
            first_step = first_step or step_seconds[0]
        epoch_seconds.append(time.perf_counter() - start)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        batch = next(iter(loader))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile), file=sys.stderr)
    steady = step_seconds[1:] or step_seconds
    return {
        "command": " ".join(["python", *sys.argv]),
        "threads": torch.get_num_threads(),
        "steps_per_epoch": len(loader),
        "epoch_seconds": [round(s, 2) for s in epoch_seconds],
        "median_step_ms": round(1000 * statistics.median(steady), 1),
        "step_ms_p10_p90": [round(1000 * q, 1) for q in statistics.quantiles(steady, n=10)[::8]],
        "epoch_seconds_from_median_step": round(statistics.median(steady) * len(loader), 2),
        "first_step_seconds": round(first_step, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["train", "speed"])
    parser.add_argument("--epochs", type=int, default=1, help="speed: epochs to time")
    parser.add_argument("--max-steps", type=int, default=None, help="speed: steps per epoch to time")
    parser.add_argument("--bf16", action="store_true", help="speed: run the step under bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="speed: torch.compile the encoder")
    parser.add_argument("--profile", type=int, default=0, help="speed: print the top-N ops of one step")
    args, overrides = parser.parse_known_args()
    warnings.filterwarnings("ignore")
    result = run_training(overrides) if args.mode == "train" else run_speed(overrides, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
