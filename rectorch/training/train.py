"""``train(cfg)``: seed → data → model → callbacks/loggers → trainer → fit → validate/test best → saved run."""

import json
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from rectorch import __version__
from rectorch.data.catalog import DataCatalog
from rectorch.interprocess import owner_tags
from rectorch.models.checkpoint import checkpoint_epoch, load_weights
from rectorch.runs.record import RunRecord
from rectorch.training.checks import check_config
from rectorch.training.console import quiet_console
from rectorch.training.memory import fix_mmap_threshold
from rectorch.training.report import print_metrics
from rectorch.training.resume import RandomStateCheckpoint
from rectorch.training.store import prepare_store
from rectorch.training.timer import TrainTimer
from rectorch.training.tracking import (
    PARENT_TAG,
    config_hash,
    git_commit,
    log_results,
    log_run_config,
    resolved_config,
    sweep_parent,
)


def _instantiate_all(group: DictConfig | None, **kwargs: Any) -> list[Any]:
    """Every ``_target_`` node of a config group (``callbacks``, ``logger``); null entries are skipped."""
    if not group:
        return []
    return [instantiate(node, **kwargs) for node in group.values() if node and "_target_" in node]


def strip_stage(metrics: dict[str, float], stage: str) -> dict[str, float]:
    prefix = f"{stage}/"
    return {k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """``(datamodule, model, evaluation)``: data prepared and split, the model built from its spec (and
    ``init_from`` weights) and bound to the data's context, the datamodule reading through the model's view."""
    evaluation = instantiate(cfg.evaluation)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    evaluation.validate(datamodule.spec.num_items)
    model = instantiate(cfg.model, spec=datamodule.spec)
    init_from = OmegaConf.select(cfg, "init_from", throw_on_missing=True)
    if init_from:
        load_weights(model, init_from)
    model.bind(datamodule.context, evaluation)
    datamodule.view = model.view
    return datamodule, model, evaluation


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configured model; returns what ``metrics.json`` holds.

    The run directory ends up a saved run (see :mod:`rectorch.runs`): ``run.json``, the catalog,
    ``metrics.json`` and the checkpoint its ``run.json`` names.
    """
    quiet_console()
    check_config(cfg)  # before the seed: its dry build draws random numbers that seeding then resets
    warnings.filterwarnings("ignore", message="MLFlow only allows")  # '@' is dropped from MLflow metric names
    warnings.filterwarnings("ignore", message=".*sync_dist=True")  # evaluation state is reduced before logging
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    fix_mmap_threshold(cfg.get("malloc_mmap_threshold_mb"))
    privacy = _privacy(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule, model, evaluation = build(cfg)
    context = datamodule.context

    timer = TrainTimer()
    callbacks = [timer, RandomStateCheckpoint(), *([privacy] if privacy else [])]
    callbacks += _instantiate_all(cfg.get("callbacks"))
    loggers: list[Logger] = _instantiate_all(cfg.get("logger"), **_logger_names(cfg, context.spec.name, model.family))
    overrides = {"max_epochs": 1} if model.closed_form else {}
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **overrides)

    mlflow = next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)
    protocol = evaluation.protocol(context, "test")
    if mlflow is not None and trainer.is_global_zero:
        log_run_config(mlflow, cfg, _tags(cfg, datamodule, model.family, protocol.as_dict()), output_dir)

    start = time.perf_counter()
    fit_data = privacy.datamodule(datamodule) if privacy else datamodule
    trainer.fit(model, datamodule=fit_data, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    train_seconds = time.perf_counter() - start

    checkpoint = _best_checkpoint(trainer, model, output_dir)
    best_epoch = 1 if model.closed_form else checkpoint_epoch(checkpoint)
    evaluate = {"datamodule": datamodule, "ckpt_path": str(checkpoint), "verbose": False, "weights_only": True}
    val = strip_stage(trainer.validate(model, **evaluate)[0], "val")
    test = strip_stage(trainer.test(model, **evaluate)[0], "test")

    results = {
        "model": model.family,
        "protocol": protocol.as_dict(),
        "val_protocol": evaluation.protocol(context, "val").as_dict(),
        "test": test,
        "val": val,
        "epochs": trainer.current_epoch if not model.closed_form else 1,
        "best_epoch": best_epoch,
        "train_seconds": round(train_seconds, 3),
        "seconds_per_epoch": round(timer.total / max(len(timer.epoch_seconds), 1), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "dataset_fingerprint": datamodule.dataset.fingerprint,
        "checkpoint": str(checkpoint),
        "mlflow_run_id": mlflow.run_id if mlflow is not None else None,
    }
    if privacy is not None:
        results["privacy"] = privacy.report()
    if trainer.is_global_zero:
        metrics_path = output_dir / "metrics.json"
        metrics_path.write_text(json.dumps(results, indent=2))
        saved = save_run(cfg, model, datamodule, results, output_dir, checkpoint)
        print_metrics(results)
        if mlflow is not None:
            log_results(mlflow, [metrics_path, *saved], str(checkpoint))
    return results


def _privacy(cfg: DictConfig) -> Any:
    """The DP-SGD callback when the config has a ``privacy`` node (``privacy=dp``), else ``None``."""
    if not cfg.get("privacy"):
        return None
    try:
        from rectorch.training.privacy import private_training
    except ImportError as error:
        raise ValueError(f"privacy: DP-SGD needs Opacus (pip install 'rectorch[privacy]'): {error}") from error
    return private_training(cfg)


def save_run(
    cfg: DictConfig, model: Any, datamodule: Any, results: dict[str, Any], output_dir: Path, checkpoint: Path
) -> list[Path]:
    """Write the catalog and, last, ``run.json``: the files that make ``output_dir`` a saved run."""
    catalog = DataCatalog.build(datamodule.dataset, datamodule.context).save(output_dir)
    record = RunRecord(
        family=model.family,
        config=resolved_config(cfg),
        spec=datamodule.spec,
        data_fingerprint=datamodule.dataset.fingerprint,
        protocol=results["protocol"],
        checkpoint=str(checkpoint.relative_to(output_dir) if checkpoint.is_relative_to(output_dir) else checkpoint),
        mlflow_run_id=results["mlflow_run_id"],
        extra={"seed": cfg.get("seed"), "git_commit": git_commit(), "rectorch_version": __version__},
    )
    return [*catalog, record.write(output_dir)]


def _logger_names(cfg: DictConfig, dataset: str, family: str) -> dict[str, Any]:
    """MLflow organisation: one experiment per dataset, run name ``<model>-<config hash>``, sweeps nested.

    The store and the experiment are created here, under an inter-process lock, before the logger touches
    them; the run is born tagged with this process (host, pid), which lets a later start mark it KILLED.
    """
    node = next((n for n in (cfg.get("logger") or {}).values() if n and "MLFlowLogger" in str(n.get("_target_"))), None)
    if node is None:
        return {}
    experiment = f"rectorch-{dataset}"
    experiment_id = prepare_store(node.tracking_uri, experiment, node.get("artifact_location"))
    tags = owner_tags()
    parent = sweep_parent(cfg, node.tracking_uri, experiment_id)
    if parent is not None:
        tags[PARENT_TAG] = parent
    return {"experiment_name": experiment, "run_name": f"{family}-{config_hash(cfg)}", "tags": tags}


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


def _best_checkpoint(trainer: L.Trainer, model: Any, output_dir: Path) -> Path:
    """The best checkpoint; a closed-form model (no optimizer steps) or a run without a checkpoint callback
    saves its final state, so that every run can be loaded back."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.best_model_path:
        return Path(callback.best_model_path)
    directory = Path(callback.dirpath) if callback is not None and callback.dirpath else output_dir / "checkpoints"
    name = f"{callback.filename or 'best'}.ckpt" if callback is not None else "last.ckpt"
    path = directory / name
    trainer.save_checkpoint(path)
    if callback is not None:
        callback.best_model_path = str(path)
    return path
