"""Cost and quality report of a finished PinSage run, printed as JSON.

Usage (after ``rectorch-train experiment=pinsage_ml1m``)::

    OMP_NUM_THREADS=1 python scripts/pinsage_report.py logs/runs/<run dir>

Loads the saved run (``rectorch.runs.load_run``), re-prepares its data for the test users, and reports:
walk time and peak traced memory of the full neighbourhood table, hard-negative band table time,
all-item inference time, the run's training seconds per epoch and peak RSS, user-to-item test metrics
(from ``metrics.json``) and item-to-item HR@10 ("the next item is among the 10 nearest neighbours of
the last item") on the test users.
"""

import argparse
import json
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from rectorch.data.random_walks import BipartiteGraph
from rectorch.evaluation.item_to_item import item_to_item_hit_rate, last_and_next
from rectorch.runs import load_run


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a rectorch-train output directory of a PinSage run")
    parser.add_argument("--k", type=int, default=10, help="neighbours for item-to-item HR@k")
    args = parser.parse_args()
    torch.set_num_threads(1)

    run = load_run(args.run_dir)
    metrics, model = run.metrics, run.model
    datamodule = run.datamodule()
    view, train, num_items = model.view, datamodule.split.train, run.spec.num_items

    tracemalloc.start()
    _, walk_seconds = _timed(view.neighbourhood_table, train, num_items)
    walk_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    graph = BipartiteGraph.from_interactions(train, num_items)
    _, hard_seconds = _timed(view.hard_negative_table, graph, np.random.default_rng(0))

    vectors, inference_seconds = _timed(model.item_vectors)
    last, following = last_and_next(datamodule.split.test)
    report = {
        "run_dir": str(args.run_dir),
        "items": num_items,
        "training_edges": len(train.items),
        "walks": {
            "neighbourhood_table_s": round(walk_seconds, 3),
            "neighbourhood_table_peak_mb": round(walk_peak_mb, 1),
            "hard_band_table_s": round(hard_seconds, 3),
            "walks_per_item": view.inference_walks.num_walks,
            "top_k": view.inference_walks.top_k,
        },
        "train_seconds_per_epoch": metrics["seconds_per_epoch"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "train_peak_rss_mb": metrics["peak_rss_mb"],
        "all_item_inference_s": round(inference_seconds, 3),
        "report_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "user_to_item": {"protocol": metrics["protocol"], "test": metrics["test"], "val": metrics["val"]},
        "item_to_item": {f"hr@{args.k}": item_to_item_hit_rate(vectors, last, following, args.k), "pairs": len(last)},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
