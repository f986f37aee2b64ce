"""``rectorch-eval RUN``: validate and test a saved run's checkpoint under the run's own config and protocol.

``RUN`` is a run directory or an MLflow run id. Useful for a run that is still training (``--checkpoint``
names a copy of its best checkpoint so far) or for re-checking a finished one. The run's data is
re-prepared (from the cache when present) to re-evaluate.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import lightning as L

from rectorch.models.checkpoint import checkpoint_epoch, load_weights
from rectorch.runs import load_run
from rectorch.training.console import quiet_console
from rectorch.training.report import print_metrics
from rectorch.training.train import strip_stage


def evaluate_run(source: str | Path, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Metrics of ``checkpoint`` (default: the run's own); also written to the run's ``eval.json``."""
    quiet_console()
    run = load_run(source)
    checkpoint = Path(checkpoint) if checkpoint else run.checkpoint
    if checkpoint != run.checkpoint:
        load_weights(run.model, checkpoint)
    datamodule = run.datamodule()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    val = trainer.validate(run.model, datamodule=datamodule, verbose=False)[0]
    test = trainer.test(run.model, datamodule=datamodule, verbose=False)[0]
    evaluation = run.model.evaluation  # bound by run.datamodule()
    results = {
        "model": run.family,
        "protocol": evaluation.protocol(datamodule.context, "test").as_dict(),
        "test": strip_stage(test, "test"),
        "val": strip_stage(val, "val"),
        "checkpoint": str(checkpoint),
        "checkpoint_epoch": checkpoint_epoch(checkpoint),
    }
    (run.run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rectorch-eval", description=__doc__)
    parser.add_argument("run", help="a saved run: its directory (holds run.json) or its MLflow run id")
    parser.add_argument("--checkpoint", help="checkpoint to evaluate (default: the one the run's run.json names)")
    args = parser.parse_args(argv)
    try:
        results = evaluate_run(args.run, args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"rectorch-eval: error: {error}", file=sys.stderr)
        sys.exit(2)
    print_metrics({**results, "epochs": None, "best_epoch": results["checkpoint_epoch"]})


if __name__ == "__main__":
    main()
