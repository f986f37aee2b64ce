"""``rectorch-train``: the Hydra entry point around ``train(cfg)``."""

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from rectorch.resolvers import CONFIG_DIR, register_resolvers

register_resolvers()

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, InstantiationException, MissingMandatoryValue)


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _discard_run_dir(output_dir: Path) -> None:
    """Remove a run directory that holds no checkpoint or metrics, so failed runs leave nothing behind."""
    if output_dir.exists() and not any(output_dir.rglob("*.ckpt")) and not (output_dir / "metrics.json").exists():
        shutil.rmtree(output_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from rectorch.training.train import train

    try:
        results = train(cfg)
    except USER_ERRORS as error:
        if HydraConfig.get().mode.name == "MULTIRUN":
            raise
        _discard_run_dir(Path(HydraConfig.get().runtime.output_dir))
        cause = _root_cause(error)
        print(f"rectorch-train: error: {type(cause).__name__}: {cause}", file=sys.stderr)
        sys.exit(2)
    return results["val"].get("ndcg@10")


if __name__ == "__main__":
    main()
