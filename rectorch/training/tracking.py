"""MLflow wiring: run names, tags, flattened config params and artifacts for one training run."""

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from rectorch.interprocess import file_lock, retry_busy

PARAM_LIMIT = 6000  # MLflow 3 rejects longer param values; the full config is also an artifact
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under this parent
SWEEP_TAG = "rectorch.sweep_dir"


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """``{"model.loss._target_": "...", ...}`` from a nested dict/list config."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: str(tree)}
    flat: dict[str, str] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config with every interpolation resolved, without Hydra's own ``hydra`` node."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


#: where a run writes or logs, not what it computes: left out of the run-name hash
_OUTPUT_KEYS = frozenset({"paths", "hydra", "logger", "cache_dir", "dirpath", "default_root_dir", "progress_bar"})


def _without_outputs(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _without_outputs(v) for k, v in tree.items() if k not in _OUTPUT_KEYS}
    if isinstance(tree, list):
        return [_without_outputs(v) for v in tree]
    return tree


def config_hash(cfg: DictConfig) -> str:
    """Short hash of everything that defines a run (data, model, trainer, callbacks, evaluation, seed, ...),
    leaving out only where it writes its outputs."""
    keyed = {
        key: _without_outputs(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)
        for key, node in ((key, cfg[key]) for key in cfg if key not in _OUTPUT_KEYS)
    }
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:8]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sweep_parent(cfg: DictConfig, tracking_uri: str, experiment_id: str) -> str | None:
    """Under ``--multirun``, the id of the sweep's parent run in ``experiment_id``, else ``None``.

    The first job of a sweep creates the parent (named ``sweep-<sweep dir name>``, tagged with the sweep
    dir); later jobs find it by that tag, so a sweep over several datasets gets one parent per experiment.
    Find-or-create holds a lock in the sweep dir, so parallel jobs (``hydra/launcher=joblib``) share one.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    from mlflow import MlflowClient

    sweep_dir = str(HydraConfig.get().sweep.dir)
    client = MlflowClient(tracking_uri)
    with file_lock(Path(sweep_dir) / ".mlflow-parent.lock"):
        query = f"tags.`{SWEEP_TAG}` = '{sweep_dir}'"
        found = retry_busy(lambda: client.search_runs([experiment_id], query, max_results=1))
        if found:
            return found[0].info.run_id
        tags = {SWEEP_TAG: sweep_dir}
        name = f"sweep-{Path(sweep_dir).name}"
        return retry_busy(lambda: client.create_run(experiment_id, run_name=name, tags=tags)).info.run_id


def log_run_config(logger: MLFlowLogger, cfg: DictConfig, tags: dict[str, str], output_dir: Path) -> None:
    """Params (flattened resolved config), tags, and the whole config as ``config.yaml``."""
    from mlflow.entities import Param, RunTag

    resolved = resolved_config(cfg)
    params = [Param(k, v[:PARAM_LIMIT]) for k, v in sorted(flatten(resolved).items())]
    client = retry_busy(lambda: logger.experiment)  # creates the run
    run_id = logger.run_id
    for start in range(0, len(params), 100):
        retry_busy(lambda start=start: client.log_batch(run_id, params=params[start : start + 100]))
    retry_busy(lambda: client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))
    config_path = output_dir / "config.yaml"
    config_path.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    client.log_artifact(run_id, str(config_path))


def log_results(logger: MLFlowLogger, files: list[Path], checkpoint: str | None) -> None:
    """Attach the saved run's files (``metrics.json``, ``run.json``, the catalog) and its checkpoint to the run;
    a sweep's parent run ends with its last child."""
    client, run_id = logger.experiment, logger.run_id
    for path in files:
        client.log_artifact(run_id, str(path))
    if checkpoint:
        client.log_artifact(run_id, checkpoint, artifact_path="checkpoints")
    parent = (logger.tags or {}).get(PARENT_TAG)
    if parent:
        retry_busy(lambda: client.set_terminated(parent))
