"""Compose the real ``conf/train.yaml`` the way ``rectorch-train`` does, pointed at ``tmp_path``."""

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from rectorch.training.resolvers import CONFIG_DIR

# a small synthetic dataset keeps every run in seconds
SMALL_DATA = [
    "data.source.num_users=300",
    "data.source.num_items=120",
    "data.batch_size=64",
]


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    def _compose(*overrides: str, small: bool = True) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
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
