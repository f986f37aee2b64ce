"""Tiny trained runs of every model family on the small synthetic dataset, composed from the real configs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from rectorch.resolvers import config_dir

SMALL = [
    "data.source.num_users=200",
    "data.source.num_items=80",
    "data.batch_size=64",
    "~callbacks.progress_bar",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.enable_progress_bar=false",
]
MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def compose_config(name: str, overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The real ``conf/<name>.yaml`` with ``overrides``; Hydra's runtime dir set to ``output_dir``."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=name, return_hydra_config=True, overrides=overrides)
    HydraConfig().set_config(cfg)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture(scope="session")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``train_run(model, logger, *overrides) -> run dir`` (cached per arguments)."""
    from rectorch.training.train import train

    cache: dict[tuple[str, ...], Path] = {}

    def _train(model: str, logger: str = "none", *extra: str) -> Path:
        key = (model, logger, *extra)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"run-{model}")
            overrides = [*SMALL, f"model={model}", f"logger={logger}", f"paths.log_dir={root}/logs", *extra]
            cfg = compose_config("train", overrides, root / "run")
            train(cfg)
            cache[key] = root / "run"
        return cache[key]

    return _train
