"""Rebuild a trained model from its run: the saved config, the data module and the best checkpoint."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from rectorch.models.base import RecModule
from rectorch.models.checkpoint import load_weights
from rectorch.resolvers import register_resolvers


@dataclass
class TrainedRun:
    """A rebuilt training run.

    Args:
        run_dir: the run's Hydra output directory.
        cfg: its config (data, model, paths).
        metrics: its ``metrics.json``.
        datamodule: set up, with the model's view.
        model: in eval mode, best checkpoint loaded.
    """

    run_dir: Path
    cfg: DictConfig
    metrics: dict[str, Any]
    datamodule: Any
    model: RecModule

    @property
    def mlflow_run_id(self) -> str | None:
        return self.metrics.get("mlflow_run_id")


def run_config(run_dir: Path) -> DictConfig:
    """The resolved ``config.yaml`` (written with an MLflow logger), else Hydra's ``.hydra/config.yaml``."""
    register_resolvers()
    candidates = [run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"]
    found = [path for path in candidates if path.is_file()]
    cfg = OmegaConf.load(found[0]) if found else None
    if cfg is None or "data" not in cfg or "model" not in cfg:
        raise FileNotFoundError(f"{run_dir} holds no training config ({' or '.join(map(str, candidates))})")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def checkpoint_path(run_dir: Path, metrics: dict[str, Any]) -> Path:
    """The run's best checkpoint: ``metrics.json``'s path, else ``checkpoints/best.ckpt`` under the run."""
    recorded = Path(metrics.get("checkpoint") or "")
    if metrics.get("checkpoint") and recorded.is_file():
        return recorded
    fallback = run_dir / "checkpoints" / (recorded.name or "best.ckpt")
    if not fallback.is_file():
        raise FileNotFoundError(f"no checkpoint for run {run_dir} (looked for {recorded} and {fallback})")
    return fallback


def load_run(run_dir: str | Path) -> TrainedRun:
    """Re-instantiate data and model from the run's own config and load its best checkpoint.

    Raises:
        FileNotFoundError: not a finished run directory (no config, metrics or checkpoint).
    """
    run_dir = Path(run_dir).resolve()
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished training run: metrics.json not found")
    metrics = json.loads(metrics_file.read_text())
    cfg = run_config(run_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    model: RecModule = instantiate(cfg.model, spec=datamodule.spec)
    datamodule.view = model.view
    load_weights(model, checkpoint_path(run_dir, metrics))
    return TrainedRun(run_dir, cfg, metrics, datamodule, model.eval())


def download_run(run_id: str, tracking_uri: str, dst: Path) -> Path:
    """Fetch a run's ``config.yaml``, ``metrics.json`` and checkpoint from MLflow into a run-dir layout."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    client.get_run(run_id)
    dst.mkdir(parents=True, exist_ok=True)
    for artifact in ("config.yaml", "metrics.json", "checkpoints"):
        client.download_artifacts(run_id, artifact, str(dst))
    metrics_file = dst / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["checkpoint"] = str(dst / "checkpoints" / Path(metrics.get("checkpoint") or "best.ckpt").name)
    metrics_file.write_text(json.dumps(metrics, indent=2))
    return dst
