"""``rectorch-train -m hparams_search=sasrec_optuna``: Optuna trials land in MLflow as one sweep.

One parent run, one child run per trial, each child holding the values its trial drew.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from rectorch.training.tracking import PARENT_TAG, SWEEP_TAG

TINY = ["data.source.num_users=300", "data.source.num_items=120", "data.batch_size=64", "model.view.max_len=20"]


def test_optuna_sweep_is_one_parent_run_with_a_child_per_trial(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "rectorch.training.cli", "-m", "hparams_search=sasrec_optuna", "data=synthetic"]
    command += ["hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "callbacks.progress_bar=null", *TINY]
    command += [f"paths.log_dir={tmp_path}/logs"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    (sweep_dir,) = (tmp_path / "logs" / "multiruns").iterdir()
    trials = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in trials] == ["0", "1"]
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna"
    assert set(result["best_params"]) == {"model.optimizer.lr", "model.encoder.dropout", "model.encoder.dim"}

    client = MlflowClient(f"sqlite:///{tmp_path}/logs/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("rectorch-synthetic")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if SWEEP_TAG in run.data.tags]
    assert len(parents) == 1 and parents[0].data.tags[SWEEP_TAG] == str(sweep_dir)
    children = [run for run in runs if run.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    assert len(children) == 2 and len(runs) == 3

    # each child holds the values its trial drew, inside the configured search space
    searched = set(result["best_params"])
    drawn = [yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text()) for trial in trials]
    drawn = [dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in searched) for overrides in drawn]
    params = [{k: run.data.params[k] for k in searched} for run in children]
    assert {frozenset(d.items()) for d in drawn} == {frozenset(p.items()) for p in params}
    for p in params:
        assert 1e-4 <= float(p["model.optimizer.lr"]) <= 1e-2
        assert 0.0 <= float(p["model.encoder.dropout"]) <= 0.5
        assert p["model.encoder.dim"] in {"32", "64", "128"}

    # the value Optuna maximized is the best trial's validation NDCG@10 as logged in MLflow ('@' is dropped)
    best = max(children, key=lambda run: run.data.metrics["val/ndcg10"])
    assert result["best_value"] == pytest.approx(best.data.metrics["val/ndcg10"], abs=1e-6)
    assert {k: best.data.params[k] for k in searched} == {k: str(v) for k, v in result["best_params"].items()}
