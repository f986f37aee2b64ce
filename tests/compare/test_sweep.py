"""A ``rectorch-train --multirun`` sweep is one MLflow parent run with a child run per job."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rectorch.compare import compare
from rectorch.training.tracking import PARENT_TAG, SWEEP_TAG


@pytest.mark.slow
def test_multirun_sweep_nests_child_runs(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "rectorch.training.cli", "--multirun", "model=popularity,ease"]
    command += ["data.source.num_users=300", "data.source.num_items=120", "callbacks.progress_bar=null"]
    command += [f"paths.log_dir={tmp_path}/logs"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    uri = f"sqlite:///{tmp_path}/logs/mlflow/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("rectorch-synthetic")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if SWEEP_TAG in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    assert parents[0].info.run_name.startswith("sweep-")
    children = [run for run in runs if run.data.tags.get(PARENT_TAG) == parent_id]
    assert sorted(run.data.tags["model_family"] for run in children) == ["ease", "popularity"]
    assert len(compare(uri, tags={PARENT_TAG: parent_id}).runs) == 2
