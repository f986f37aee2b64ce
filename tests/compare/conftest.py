"""Stores for the compare tests: real training runs of three models, and hand-made runs with chosen protocols."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from omegaconf import open_dict

from rectorch.resolvers import config_dir

SMALL = ["data.source.num_users=300", "data.source.num_items=120", "data.batch_size=64", "debug=limit"]
FULL = {"dataset": "synthetic", "split": "loo", "ranking": "full", "mask_seen": True, "k": [10], "users": 300}


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tracking URI of a store holding one real run each of popularity, EASE and SASRec (2 short epochs)."""
    from rectorch.training.train import train

    root = tmp_path_factory.mktemp("trained")
    for model in ("popularity", "ease", "sasrec"):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(
                config_name="train",
                return_hydra_config=True,
                overrides=[*SMALL, f"model={model}", f"paths.log_dir={root}/logs", "callbacks.progress_bar=null"],
            )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(root / model)
            cfg.trainer.enable_progress_bar = False
        train(cfg)
    return f"sqlite:///{root}/logs/mlflow/mlflow.db"


@pytest.fixture(scope="session")
def _migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty sqlite store, created once: MLflow's schema migrations take seconds per new file."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def empty_store(tmp_path: Path, _migrated_store: Path) -> str:
    """Tracking URI of a fresh, empty sqlite store under ``tmp_path``."""
    shutil.copy(_migrated_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def log_fake_run(
    uri: str,
    model: str,
    ndcg: float,
    protocol: dict[str, Any] = FULL,
    fingerprint: str = "f00dcafe",
    experiment: str = "rectorch-synthetic",
) -> str:
    """A finished run shaped like a training run (tags, per-epoch val metric, ``metrics.json``); returns its id."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, str(artifacts))
    tags = {"model_family": model, "dataset_fingerprint": fingerprint}
    run_id = client.create_run(experiment_id, run_name=f"{model}-{fingerprint[:4]}", tags=tags).info.run_id
    prefix = "" if protocol["ranking"] == "full" else f"{protocol['ranking']}/"
    for epoch in range(3):
        client.log_metric(run_id, f"val/{prefix}ndcg10", ndcg * (epoch + 1) / 3, step=epoch)
    client.log_param(run_id, "model.optimizer.lr", "0.001")
    test = {f"{prefix}{name}@10": ndcg * scale for name, scale in (("ndcg", 1), ("hr", 2), ("mrr", 0.8))}
    test |= {f"{prefix}coverage@10": 0.5, f"{prefix}pop_bias@10": 0.6}
    results = {"model": model, "protocol": protocol, "test": test, "val": {}, "epochs": 3, "best_epoch": 3}
    results |= {
        "train_seconds": 3.0,
        "seconds_per_epoch": 1.0,
        "peak_rss_mb": 500.0,
        "dataset_fingerprint": fingerprint,
    }
    path = artifacts.parent / f"{run_id}-metrics" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results))
    client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id
