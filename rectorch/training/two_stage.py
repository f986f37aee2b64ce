"""``train_two_stage(cfg)``: train (or reuse) the channel runs, fit the ranker over their candidates, save and log it.

``rectorch-train experiment=two_stage_ml1m`` lands here (the config has a ``two_stage`` node). A run channel
whose ``run`` is null is trained first by :func:`rectorch.training.train.train`, with its ``train`` overrides,
on the recipe's own data, into ``<output_dir>/channels/<name>``; every channel run is linked from the
two-stage MLflow run by the tag ``channel.<name>.run_id``.
"""

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from rectorch.interprocess import owner_tags, retry_busy
from rectorch.ranking.pipeline import TwoStage
from rectorch.ranking.saved import save_ranking
from rectorch.training.console import quiet_console
from rectorch.training.report import print_metrics
from rectorch.training.store import prepare_store
from rectorch.training.tracking import config_hash, flatten, git_commit, resolved_config

FAMILY = "two_stage"
RUN_CHANNEL = "rectorch.ranking.channels.RunChannel"
#: config nodes a two-stage run does not read (its channels carry their own model and trainer)
_UNUSED = frozenset({"model", "trainer", "callbacks", "init_from", "ckpt_path", "model_data"})


def _train_channel(cfg: DictConfig, name: str, overrides: list[str], output_dir: Path) -> str:
    """Train one channel on the recipe's data; returns its saved run directory."""
    from rectorch.training.train import train

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    data = [f"data={choices['data']}"] if choices.get("data") else []
    channel = compose(config_name="train", overrides=[*data, *overrides])
    directory = output_dir / "channels" / name
    with open_dict(channel):
        channel.data = cfg.data  # exactly the recipe's data, whatever the channel's experiment chose
        channel.paths = cfg.paths
        channel.paths.output_dir = str(directory)
        channel.logger = cfg.logger
        channel.seed = cfg.seed
    train(channel)
    return str(directory)


def _channels(cfg: DictConfig, output_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Instantiated channels in config order, and the run directory of every channel trained here."""
    trained: dict[str, str] = {}
    channels: dict[str, Any] = {}
    for name, node in cfg.two_stage.channels.items():
        node = OmegaConf.to_container(node, resolve=True)
        overrides = node.get("train") or []
        if node.get("_target_") == RUN_CHANNEL and node.get("run") is None:
            if not overrides:
                raise ValueError(
                    f"two_stage.channels.{name}: give run=<saved run dir or MLflow id> or train=[overrides]"
                )
            trained[name] = node["run"] = _train_channel(cfg, name, list(overrides), output_dir)
        channels[name] = instantiate(node, name=name)
    return channels, trained


def train_two_stage(cfg: DictConfig) -> dict[str, Any]:
    """Fit and evaluate the two-stage pipeline of ``cfg.two_stage``; returns what its ``metrics.json`` holds."""
    quiet_console()
    if cfg.get("privacy"):
        raise ValueError(
            "privacy=dp trains one model: train the channel with it and give the run, "
            "two_stage.channels.<name>.run=<run dir or MLflow id>"
        )
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    channels, trained = _channels(cfg, output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    evaluation = instantiate(cfg.evaluation)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    evaluation.validate(datamodule.spec.num_items)
    dataset, context = datamodule.dataset, datamodule.context
    for name, channel in channels.items():
        run = getattr(channel, "run", None)
        if run is not None and run.record.data_fingerprint != dataset.fingerprint:
            raise ValueError(
                f"two_stage.channels.{name}: run {run.run_dir} was trained on data {run.record.data_fingerprint[:12]}, "
                f"not this recipe's {dataset.fingerprint[:12]}"
            )
    node = OmegaConf.to_container(cfg.two_stage, resolve=True)
    node.pop("channels")
    pipeline: TwoStage = instantiate(node, channels=channels, ranker=instantiate(cfg.ranker))
    result = pipeline.fit_evaluate(dataset, datamodule.split, context, evaluation)

    protocol = evaluation.protocol(context, "test").as_dict()
    results: dict[str, Any] = {
        "model": FAMILY,
        "protocol": protocol,
        "val_protocol": {
            **evaluation.protocol(context, "val").as_dict(),
            "users": result.metrics["queries"]["early_stop"],
        },
        "pipeline": f"two-stage: {', '.join(channels)} → {result.ranker.name}, candidates-{pipeline.max_candidates}; "
        "a target no channel retrieved is a miss",
        **result.metrics,
        "train_seconds": round(time.perf_counter() - start, 3),
        "dataset_fingerprint": dataset.fingerprint,
        "channels_trained": sorted(trained),
        "mlflow_run_id": None,
    }
    settings = {
        "last_n": pipeline.last_n,
        "user_fields": list(pipeline.user_fields),
        "max_candidates": pipeline.max_candidates,
    }
    saved = save_ranking(output_dir, result, dataset.fingerprint, settings)
    results["mlflow_run_id"] = _log_mlflow(cfg, results, result.channels, saved)
    (output_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    if results["mlflow_run_id"] is not None:
        _log_artifact(cfg, results["mlflow_run_id"], output_dir / "metrics.json")
    print_metrics(results)
    for name, metrics in results["channels"].items():
        print(f"channel {name}: test ndcg@10 {metrics['test'].get('ndcg@10', float('nan')):.4f}")
    return results


def _mlflow_node(cfg: DictConfig) -> DictConfig | None:
    return next((n for n in (cfg.get("logger") or {}).values() if n and "MLFlowLogger" in str(n.get("_target_"))), None)


def _log_mlflow(cfg: DictConfig, results: dict[str, Any], channels: list[dict], files: list[Path]) -> str | None:
    """One MLflow run for the pipeline: params, protocol tags, channel links, metrics, the ranking files."""
    node = _mlflow_node(cfg)
    if node is None:
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    protocol = results["protocol"]
    experiment_id = prepare_store(node.tracking_uri, f"rectorch-{protocol['dataset']}", node.get("artifact_location"))
    client = MlflowClient(node.tracking_uri)
    tags = {
        **owner_tags(),
        "model_family": FAMILY,
        "dataset": protocol["dataset"],
        "dataset_fingerprint": results["dataset_fingerprint"],
        "git_commit": git_commit(),
        "seed": str(cfg.get("seed")),
        **{f"protocol.{k}": str(v) for k, v in protocol.items()},
        **{f"channel.{c['name']}.run_id": str(c.get("mlflow_run_id")) for c in channels if c["kind"] == "run"},
    }
    run = retry_busy(lambda: client.create_run(experiment_id, run_name=f"{FAMILY}-{config_hash(cfg)}", tags=tags))
    run_id = run.info.run_id
    config = {k: v for k, v in resolved_config(cfg).items() if k not in _UNUSED}
    params = [Param(k, v[:6000]) for k, v in sorted(flatten(config).items())]
    for begin in range(0, len(params), 100):
        retry_busy(lambda b=begin: client.log_batch(run_id, params=params[b : b + 100]))
    now = int(time.time() * 1000)
    metrics = [Metric(f"test/{k}", float(v), now, 0) for k, v in results["test"].items()]
    metrics += [Metric(f"val/{k}", float(v), now, 0) for k, v in results["val"].items()]
    for name, stages in results["channels"].items():
        metrics += [Metric(f"channel.{name}/test/{k}", float(v), now, 0) for k, v in stages["test"].items()]
    metrics = [Metric(m.key.replace("@", ""), m.value, m.timestamp, m.step) for m in metrics]  # as Lightning logs them
    for begin in range(0, len(metrics), 500):
        retry_busy(lambda b=begin: client.log_batch(run_id, metrics=metrics[b : b + 500]))
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="ranking")
    retry_busy(lambda: client.set_terminated(run_id))
    return run_id


def _log_artifact(cfg: DictConfig, run_id: str, path: Path) -> None:
    from mlflow import MlflowClient

    MlflowClient(_mlflow_node(cfg).tracking_uri).log_artifact(run_id, str(path))
