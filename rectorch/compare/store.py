"""Read finished rectorch training runs back from an MLflow tracking store."""

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from rectorch.interprocess import mark_killed_runs, retry_busy
from rectorch.resolvers import rectorch_home

EXPERIMENT_PREFIX = "rectorch-"
SWEEP_TAG = "rectorch.sweep_dir"
PARENT_TAG = "mlflow.parentRunId"

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The tracking store or a requested experiment does not exist."""


@dataclass
class RunSummary:
    """What the leaderboard and the plots need from one finished training run.

    Args:
        run_id: the MLflow run id.
        run_name: ``<model>-<config hash>``.
        experiment: the experiment name (``rectorch-<dataset>``).
        model: the model family (``sasrec``, ``ease``, ...).
        params: the flattened resolved config.
        tags: the run's tags (fingerprint, protocol, git commit, seed, parent run).
        results: the run's ``metrics.json`` (protocol, test, val, epochs, timings, memory).
        val_history: validation metric name (``"ndcg@10"``) -> its value at every epoch, in order.
    """

    run_id: str
    run_name: str
    experiment: str
    model: str
    params: dict[str, str]
    tags: dict[str, str]
    results: dict[str, Any]
    val_history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def protocol(self) -> dict[str, Any]:
        return self.results["protocol"]

    @property
    def metric_prefix(self) -> str:
        """``""`` under full ranking, ``"sampled-N/"`` under sampled ranking (see ``Protocol``)."""
        ranking = self.protocol.get("ranking", "full")
        return "" if ranking == "full" else f"{ranking}/"

    def test_metric(self, name: str) -> float:
        """A test metric such as ``"ndcg@10"`` under the run's own protocol; NaN when not measured."""
        return float(self.results["test"].get(f"{self.metric_prefix}{name}", float("nan")))


def default_tracking_uri() -> str:
    """rectorch's local store, the one ``rectorch-train`` writes (``paths.mlflow_uri``).

    ``MLFLOW_TRACKING_URI`` is deliberately not read: MLflow sets it in-process whenever a logger
    picks a store, so it can point at a store other than the one the user means.
    """
    return f"sqlite:///{rectorch_home()}/logs/mlflow/mlflow.db"


def open_store(tracking_uri: str) -> MlflowClient:
    """A client on an existing store; a missing sqlite file is an error, never silently created.

    Also turns off MLflow's per-download progress bars (one per run would bury the leaderboard).
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        path = path if path.is_absolute() else Path.cwd() / path
        if not path.is_file():
            raise StoreError(f"no MLflow store at {path} (train a model first: rectorch-train)")
    return MlflowClient(tracking_uri)


def _experiment_ids(client: MlflowClient, names: list[str] | None) -> dict[str, str]:
    """``{id: name}`` of the named experiments, or of every ``rectorch-*`` experiment."""
    existing = {e.name: e.experiment_id for e in client.search_experiments()}
    if not names:
        return {eid: name for name, eid in existing.items() if name.startswith(EXPERIMENT_PREFIX)}
    unknown = [name for name in names if name not in existing]
    if unknown:
        available = ", ".join(sorted(existing)) or "none"
        raise StoreError(f"unknown experiment {', '.join(unknown)}; available: {available}")
    return {existing[name]: name for name in names}


def _filter_string(tags: dict[str, str], status: str = "= 'FINISHED'") -> str:
    clauses = [f"attributes.status {status}"]
    clauses += [f"tags.`{key}` = '{value}'" for key, value in sorted(tags.items())]
    return " and ".join(clauses)


def unfinished_runs(client: MlflowClient, experiment_ids: list[str], tags: dict[str, str] | None = None) -> list[Run]:
    """Training runs that are not FINISHED (RUNNING, KILLED, FAILED, SCHEDULED), after marking as KILLED
    every RUNNING run whose process on this host is gone. Sweep parents are left out."""
    try:
        mark_killed_runs(client, experiment_ids)
    except MlflowException as error:  # a read-only store: the runs are still listed, as RUNNING
        log.warning("rectorch-compare: note: could not mark dead runs KILLED: %s", str(error).splitlines()[0])
    query = _filter_string(tags or {}, status="!= 'FINISHED'")
    runs = retry_busy(lambda: client.search_runs(experiment_ids, query, order_by=["attributes.start_time DESC"]))
    return [run for run in runs if SWEEP_TAG not in run.data.tags]


def _note_unfinished(runs: list[Run]) -> None:
    """One line on stderr per status, naming the runs the leaderboard leaves out."""
    by_status: dict[str, list[str]] = {}
    for run in runs:
        by_status.setdefault(run.info.status, []).append(f"{run.info.run_name} ({run.info.run_id[:8]})")
    for status, names in sorted(by_status.items()):
        shown = ", ".join(names[:10]) + (f", ... {len(names) - 10} more" if len(names) > 10 else "")
        log.warning("rectorch-compare: note: %d %s run(s) not in the leaderboard: %s", len(names), status, shown)


def _download_json(client: MlflowClient, run_id: str, path: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(local).read_text())


def _history(client: MlflowClient, run_id: str, key: str, epochs: int) -> list[float]:
    """Per-epoch values of a metric; the re-validation of the best checkpoint after fit is dropped."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [m.value for m in points][:epochs]


def _summary(client: MlflowClient, run: Run, experiment: str) -> RunSummary | None:
    results = _download_json(client, run.info.run_id, "metrics.json")
    if results is None or "test" not in results or "protocol" not in results:
        return None
    summary = RunSummary(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id[:8],
        experiment=experiment,
        model=run.data.tags.get("model_family") or results.get("model", "?"),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        results=results,
    )
    epochs = int(results.get("epochs") or 1)
    for name in ("ndcg@10", "hr@10"):
        key = f"val/{summary.metric_prefix}{name.replace('@', '')}"
        summary.val_history[name] = _history(client, run.info.run_id, key, epochs)
    return summary


def load_runs(
    tracking_uri: str | None = None,
    experiments: list[str] | None = None,
    tags: dict[str, str] | None = None,
) -> list[RunSummary]:
    """Finished training runs (those that wrote ``metrics.json``), newest first.

    Runs that did not finish are left out with a note (a logged warning) naming them by status; a RUNNING
    run whose process on this host is gone (killed without a chance to close) is marked KILLED first.

    Args:
        tracking_uri: the store; default :func:`default_tracking_uri`.
        experiments: experiment names; default every ``rectorch-*`` experiment.
        tags: exact tag matches, e.g. ``{"model_family": "sasrec"}`` or ``{"mlflow.parentRunId": id}``.

    Raises:
        StoreError: when the store or a named experiment does not exist.
    """
    client = open_store(tracking_uri or default_tracking_uri())
    ids = _experiment_ids(client, experiments)
    if not ids:
        return []
    _note_unfinished(unfinished_runs(client, list(ids), tags))
    runs = client.search_runs(list(ids), _filter_string(tags or {}), order_by=["attributes.start_time DESC"])
    summaries = (_summary(client, run, ids[run.info.experiment_id]) for run in runs)
    return [summary for summary in summaries if summary is not None]
