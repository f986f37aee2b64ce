"""``rectorch-eval RUN_DIR``: validate and test a run's checkpoint under the run's own config and protocol.

Useful for a run that is still training (its best checkpoint so far) or for re-checking a finished one.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from rectorch.resolvers import register_resolvers
from rectorch.training.report import print_metrics
from rectorch.training.train import epoch_of, strip_stage


def evaluate_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Metrics of ``checkpoint`` (default: the run's ``checkpoints/best.ckpt``); also written to ``eval.json``."""
    register_resolvers()
    run_dir = Path(run_dir).resolve()
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a rectorch-train run directory: {config_file} not found")
    checkpoint = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "best.ckpt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    cfg = OmegaConf.load(config_file)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    model = instantiate(cfg.model, spec=datamodule.spec)
    datamodule.view = model.view
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")  # weights are all we need
    val = trainer.validate(model, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)[0]
    test = trainer.test(model, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)[0]
    results = {
        "model": type(model).__name__.removesuffix("Module").lower(),
        "protocol": datamodule.protocol("test").as_dict(),
        "test": strip_stage(test, "test"),
        "val": strip_stage(val, "val"),
        "checkpoint": str(checkpoint),
        "checkpoint_epoch": epoch_of(str(checkpoint)),
    }
    (run_dir / "eval.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rectorch-eval", description=__doc__)
    parser.add_argument("run_dir", help="a rectorch-train output directory (holds .hydra/config.yaml)")
    parser.add_argument("--checkpoint", help="checkpoint to evaluate (default: RUN_DIR/checkpoints/best.ckpt)")
    args = parser.parse_args(argv)
    try:
        results = evaluate_run(args.run_dir, args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"rectorch-eval: error: {error}", file=sys.stderr)
        sys.exit(2)
    print_metrics({**results, "epochs": None, "best_epoch": results["checkpoint_epoch"]})


if __name__ == "__main__":
    main()
