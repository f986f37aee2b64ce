"""The MLflow store and its experiments, created once and safely across processes."""

import contextlib
from pathlib import Path
from typing import Any

from rectorch.interprocess import file_lock, mark_killed_runs, retry_busy


def store_lock_path(tracking_uri: str) -> Path | None:
    """The lock file beside a local store (``mlflow.db.lock``, ``mlruns.lock``); None for a remote one."""
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///").partition("?")[0])
        return database.with_name(database.name + ".lock")
    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        local = Path(tracking_uri.removeprefix("file://").removeprefix("file:"))
        return local.with_name(local.name + ".lock")
    return None


def _store_lock(tracking_uri: str) -> contextlib.AbstractContextManager:
    lock = store_lock_path(tracking_uri)
    return file_lock(lock) if lock is not None else contextlib.nullcontext()


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created when missing; another process creating it first is fine."""
    from mlflow.exceptions import MlflowException

    experiment = retry_busy(lambda: client.get_experiment_by_name(name))
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {name} is deleted in {client.tracking_uri}: restore it "
            f"(mlflow experiments restore) or remove it for good (mlflow gc)"
        )
    if experiment is not None:
        return experiment.experiment_id
    try:
        return retry_busy(lambda: client.create_experiment(name, artifact_location))
    except MlflowException:
        experiment = retry_busy(lambda: client.get_experiment_by_name(name))
        if experiment is None:
            raise
        return experiment.experiment_id


def prepare_store(tracking_uri: str, experiment_name: str, artifact_location: str | None = None) -> str:
    """Create the store and the experiment once, safely across processes; returns the experiment id.

    Holds the lock beside a local store while MLflow creates and migrates its tables (MLflow's sqlite
    store does that without a lock: two fresh starts race on ``alembic_version``) and while the
    experiment is looked up or created (racing creators hit ``UNIQUE constraint failed``). Under the same
    lock, RUNNING runs whose process on this host is gone are marked KILLED.
    """
    from mlflow import MlflowClient

    with _store_lock(tracking_uri):
        client = MlflowClient(tracking_uri)
        experiment_id = _experiment_id(client, experiment_name, artifact_location)
        experiments = retry_busy(lambda: client.search_experiments())
        mark_killed_runs(client, [e.experiment_id for e in experiments])
    return experiment_id
