"""``load_run``: the one way eval, export, compare, ranking and scripts get a trained model back."""

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rectorch.data.catalog import ARRAYS_FILE, META_FILE, DataCatalog
from rectorch.data.spec import DataSpec
from rectorch.models.base import RecModule
from rectorch.models.checkpoint import load_weights
from rectorch.resolvers import rectorch_home, register_resolvers
from rectorch.runs.record import RUN_FILE, RunRecord

log = logging.getLogger(__name__)

_MLFLOW_RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Run:
    """A saved training run, loaded.

    Args:
        run_dir: the run's directory (a local copy for an MLflow run).
        record: its ``run.json``.
        config: its resolved config.
        metrics: its ``metrics.json`` (empty when absent).
        catalog: its item/user ids, item metadata, training popularity and categories.
        model: the model with the run's weights, in eval mode.
    """

    run_dir: Path
    record: RunRecord
    config: DictConfig
    metrics: dict[str, Any]
    catalog: DataCatalog
    model: RecModule

    @property
    def family(self) -> str:
        return self.record.family

    @property
    def spec(self) -> DataSpec:
        return self.record.spec

    @property
    def mlflow_run_id(self) -> str | None:
        return self.record.mlflow_run_id

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / self.record.checkpoint

    def evaluation(self) -> Any:
        """The run's evaluation settings (its protocol's cut-offs, masking and ranking mode)."""
        return instantiate(self.config.evaluation)

    def datamodule(self) -> Any:
        """The run's data, re-prepared (from the cache when present) to re-evaluate, with the model bound to it.

        Raises:
            ValueError: the data no longer has the run's fingerprint (files changed since training).
        """
        log.info("re-preparing the data of run %s to re-evaluate it", self.run_dir.name)
        datamodule = instantiate(self.config.data)
        datamodule.setup()
        if datamodule.dataset.fingerprint != self.record.data_fingerprint:
            raise ValueError(
                f"the data of run {self.run_dir} changed since training: fingerprint "
                f"{datamodule.dataset.fingerprint[:12]} is not the run's {self.record.data_fingerprint[:12]}"
            )
        datamodule.view = self.model.view
        self.model.bind(datamodule.context, self.evaluation())
        return datamodule


def build_model(config: DictConfig, spec: DataSpec) -> RecModule:
    """A fresh, untrained model of ``config.model`` for ``spec``."""
    return instantiate(config.model, spec=spec)


def _load_dir(run_dir: Path) -> Run:
    record = RunRecord.read(run_dir)
    register_resolvers()
    config = OmegaConf.create(record.config)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    catalog = DataCatalog.load(run_dir)
    model = build_model(config, record.spec)
    load_weights(model, run_dir / record.checkpoint)
    return Run(run_dir, record, config, metrics, catalog, model.eval())


def download_run(run_id: str, tracking_uri: str, dst: Path) -> Path:
    """Copy an MLflow run's saved-run artifacts into ``dst`` (complete or not at all)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException as error:
        raise FileNotFoundError(f"no MLflow run {run_id} in {tracking_uri}") from error
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{run_id}-", dir=dst.parent))
    try:
        for artifact in (RUN_FILE, ARRAYS_FILE, META_FILE, "metrics.json", "checkpoints"):
            try:
                client.download_artifacts(run_id, artifact, str(partial))
            except (MlflowException, OSError) as error:
                if artifact != "metrics.json":
                    reason = f"MLflow run {run_id} has no {artifact} artifact: not a saved run"
                    raise FileNotFoundError(reason) from error
        os.replace(partial, dst)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dst


def load_run(source: str | Path, tracking_uri: str | None = None) -> Run:
    """Load a saved run from its directory or its MLflow run id.

    Args:
        source: a run directory (holding ``run.json``) or a 32-hex MLflow run id.
        tracking_uri: the MLflow store of a run id (default: the local store under ``RECTORCH_HOME``).

    Raises:
        FileNotFoundError: neither a saved run directory nor a known MLflow run.
        ValueError: a malformed ``run.json``, catalog or checkpoint (named in the message).
    """
    path = Path(source)
    if path.is_dir():
        return _load_dir(path.resolve())
    if _MLFLOW_RUN_ID.fullmatch(str(source)):
        uri = tracking_uri or f"sqlite:///{rectorch_home()}/logs/mlflow/mlflow.db"
        local = rectorch_home() / "logs" / "downloads" / str(source)
        if not (local / RUN_FILE).is_file():
            download_run(str(source), uri, local)
        return _load_dir(local)
    raise FileNotFoundError(f"{source} is neither a run directory nor an MLflow run id")
