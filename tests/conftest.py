"""Shared fixtures: one OpenMP thread, the real data root, and composed Hydra configs.

Imports nothing heavy at module level: the serving tests also run in a ``[serve]``-only venv without
torch or Hydra.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_SHARED = PROJECT_ROOT.parent / "shared" / "data"
if "RECTORCH_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["RECTORCH_DATA_DIR"] = str(_SHARED)

# a small synthetic dataset keeps every training run in seconds
SMALL_DATA = [
    "data.source.num_users=300",
    "data.source.num_items=120",
    "data.batch_size=64",
]


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def data_dir() -> Path | None:
    """The real-data root, or None when absent."""
    root = os.environ.get("RECTORCH_DATA_DIR")
    return Path(root) if root and Path(root).is_dir() else None


def require_data(relative: str) -> Path:
    """Path of a real data file, or skip the test with the reason."""
    root = data_dir()
    if root is None or not (root / relative).exists():
        pytest.skip(f"real data {relative} not found under RECTORCH_DATA_DIR={root}")
    return root / relative


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., Any]:
    """Compose ``conf/train.yaml`` as ``rectorch-train`` does, with outputs under ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rectorch.resolvers import config_dir

    def _compose(*overrides: str, small: bool = True) -> Any:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(
                config_name="train",
                return_hydra_config=True,
                overrides=[*(SMALL_DATA if small else []), f"paths.log_dir={tmp_path}/logs", *overrides],
            )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.trainer.enable_progress_bar = False
            if cfg.get("callbacks") and "progress_bar" in cfg.callbacks:
                del cfg.callbacks["progress_bar"]
        return cfg

    return _compose
