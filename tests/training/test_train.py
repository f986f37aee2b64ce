"""End-to-end training through the composed Hydra config, as ``rectorch-train`` runs it."""

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from rectorch.resolvers import CONFIG_DIR
from rectorch.training.train import train

MODEL_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_fast_dev_run_every_model(compose_train, model: str) -> None:
    cfg = compose_train(f"model={model}", "debug=fast_dev_run")
    results = train(cfg)
    assert set(results["test"]) >= {"ndcg@10", "hr@10", "mrr@10", "coverage@10", "pop_bias@10"}
    assert 0.0 <= results["test"]["ndcg@10"] <= 1.0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_runs(compose_train, experiment: str) -> None:
    """Recipes name real files; on the small synthetic data each runs one fast_dev_run batch."""
    cfg = compose_train(f"experiment={experiment}", "debug=fast_dev_run", small=False)
    with open_dict(cfg):
        cfg.data = compose_train("debug=fast_dev_run").data
    results = train(cfg)
    assert "ndcg@10" in results["test"]


def test_run_writes_metrics_and_mlflow(compose_train, tmp_path: Path) -> None:
    import mlflow

    cfg = compose_train("model=ease", "debug=limit")
    results = train(cfg)

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["protocol"] == results["protocol"]
    assert metrics["protocol"]["dataset"] == "synthetic" and metrics["protocol"]["ranking"] == "full"
    assert metrics["protocol"]["split"] == "loo" and metrics["protocol"]["mask_seen"] is True
    assert metrics["test"]["ndcg@10"] > 0.0 and Path(metrics["checkpoint"]).is_file()

    client = mlflow.MlflowClient(cfg.paths.mlflow_uri)
    run = client.get_run(results["mlflow_run_id"])
    assert run.data.params["model.l2"] == "200.0"
    assert run.data.tags["dataset_fingerprint"] == metrics["dataset_fingerprint"]
    assert run.data.tags["protocol.split"] == "loo" and run.data.tags["model_family"] == "ease"
    assert any(key.startswith("test/ndcg") for key in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "checkpoints"} <= artifacts
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "rectorch-synthetic" and run.info.run_name.startswith("ease-")


def test_ease_beats_popularity_on_planted_structure(compose_train) -> None:
    """Personal co-occurrence structure is learnable; popularity cannot see it."""
    scores = {}
    for model in ("popularity", "ease"):
        cfg = compose_train(f"model={model}", "logger=none", "callbacks=none")
        scores[model] = train(cfg)["test"]["ndcg@10"]
    assert scores["ease"] > 1.5 * scores["popularity"], scores
