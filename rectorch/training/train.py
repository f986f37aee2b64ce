"""``train(cfg)``: seed → data → model → callbacks/loggers → trainer → fit → validate/test best → outputs."""

import json
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from rectorch.models.checkpoint import load_weights
from rectorch.training.memory import fix_mmap_threshold
from rectorch.training.report import print_metrics
from rectorch.training.timer import TrainTimer
from rectorch.training.tracking import PARENT_TAG, config_hash, git_commit, log_results, log_run_config, sweep_parent


def _instantiate_all(group: DictConfig | None, **kwargs: Any) -> list[Any]:
    """Every ``_target_`` node of a config group (``callbacks``, ``logger``); null entries are skipped."""
    if not group:
        return []
    return [instantiate(node, **kwargs) for node in group.values() if node and "_target_" in node]


def strip_stage(metrics: dict[str, float], stage: str) -> dict[str, float]:
    prefix = f"{stage}/"
    return {k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configured model; returns what ``metrics.json`` holds."""
    warnings.filterwarnings("ignore", message="MLFlow only allows")  # '@' is dropped from MLflow metric names
    warnings.filterwarnings("ignore", message=".*sync_dist=True")  # evaluation state is reduced before logging
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    fix_mmap_threshold(cfg.get("malloc_mmap_threshold_mb"))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = instantiate(cfg.model, spec=datamodule.spec)
    init_from = OmegaConf.select(cfg, "init_from", throw_on_missing=True)
    if init_from:
        load_weights(model, init_from)
    datamodule.view = model.view
    family = type(model).__name__.removesuffix("Module").lower()

    timer = TrainTimer()
    callbacks = [timer, *_instantiate_all(cfg.get("callbacks"))]
    loggers: list[Logger] = _instantiate_all(cfg.get("logger"), **_logger_names(cfg, datamodule.spec.name, family))
    overrides = {"max_epochs": 1} if model.closed_form else {}
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)

    mlflow = next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)
    protocol = datamodule.protocol("test")
    if mlflow is not None and trainer.is_global_zero:
        log_run_config(mlflow, cfg, _tags(cfg, datamodule, family, protocol.as_dict()), output_dir)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    train_seconds = time.perf_counter() - start

    checkpoint = _best_checkpoint(trainer, model)
    best_epoch = 1 if model.closed_form else epoch_of(checkpoint)
    ckpt_path = checkpoint or None
    val = strip_stage(trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0], "val")
    test = strip_stage(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0], "test")

    results = {
        "model": family,
        "protocol": protocol.as_dict(),
        "val_protocol": datamodule.protocol("val").as_dict(),
        "test": test,
        "val": val,
        "epochs": trainer.current_epoch if not model.closed_form else 1,
        "best_epoch": best_epoch,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(timer.total / max(len(timer.epoch_seconds), 1), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "dataset_fingerprint": datamodule.dataset.fingerprint,
        "checkpoint": checkpoint,
        "mlflow_run_id": mlflow.run_id if mlflow is not None else None,
    }
    if trainer.is_global_zero:
        metrics_path = output_dir / "metrics.json"
        metrics_path.write_text(json.dumps(results, indent=2))
        print_metrics(results)
        if mlflow is not None:
            log_results(mlflow, metrics_path, checkpoint)
    return results


def _logger_names(cfg: DictConfig, dataset: str, family: str) -> dict[str, Any]:
    """MLflow organisation: one experiment per dataset, run name ``<model>-<config hash>``, sweeps nested."""
    if not any(node and "MLFlowLogger" in str(node.get("_target_", "")) for node in (cfg.get("logger") or {}).values()):
        return {}
    names = {"experiment_name": f"rectorch-{dataset}", "run_name": f"{family}-{config_hash(cfg)}"}
    parent = sweep_parent(cfg, names["experiment_name"])
    return names if parent is None else {**names, "tags": {PARENT_TAG: parent}}


def _tags(cfg: DictConfig, datamodule: Any, family: str, protocol: dict[str, Any]) -> dict[str, str]:
    spec = datamodule.spec
    tags = {
        "model_family": family,
        "dataset": spec.name,
        "dataset_fingerprint": datamodule.dataset.fingerprint,
        "dataset_users": str(spec.num_users),
        "dataset_items": str(spec.num_items),
        "dataset_interactions": str(datamodule.dataset.num_interactions),
        "git_commit": git_commit(),
        "seed": str(cfg.get("seed")),
    }
    tags.update({f"protocol.{k}": str(v) for k, v in protocol.items()})
    return tags


def _best_checkpoint(trainer: L.Trainer, model: Any) -> str:
    """Path of the best checkpoint; a closed-form model (no optimizer steps) saves its single state."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return ""
    if not callback.best_model_path and model.closed_form and callback.dirpath:
        path = Path(callback.dirpath) / f"{callback.filename or 'best'}.ckpt"
        callback.best_model_path = str(path)
        trainer.save_checkpoint(path)
    return callback.best_model_path


def epoch_of(checkpoint: str) -> int | None:
    """1-based epoch stored in a Lightning checkpoint (memory-mapped; only the counter is read)."""
    if not checkpoint:
        return None
    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    return int(state.get("epoch", 0)) + 1
