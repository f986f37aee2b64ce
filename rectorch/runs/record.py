"""``run.json``: the small versioned record that makes a training directory a saved run.

Written by ``train`` once a run has finished (a directory without it is not a finished run), read
by :func:`rectorch.runs.load_run`. It holds what rebuilding the model needs without any data —
the resolved config and the dataset spec — and what any number needs beside it: the data
fingerprint and the protocol.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rectorch.data.spec import DataSpec
from rectorch.interprocess import write_atomic

RUN_FILE = "run.json"
SCHEMA_VERSION = 1


@dataclass
class RunRecord:
    """One saved run.

    Args:
        family: the model family (``RecModule.family``), e.g. ``sasrec``.
        config: the run's resolved config (``data``, ``model``, ``trainer``, ``evaluation``, ...), no ``hydra``.
        spec: the dataset spec the model was built from.
        data_fingerprint: content fingerprint of the prepared dataset.
        protocol: the test protocol record (``Protocol.as_dict()``).
        checkpoint: the weights file, relative to the run directory.
        mlflow_run_id: the MLflow run, when the run was tracked.
        extra: anything else worth keeping (seed, git commit, rectorch version).
    """

    family: str
    config: dict[str, Any]
    spec: DataSpec
    data_fingerprint: str
    protocol: dict[str, Any]
    checkpoint: str
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def write(self, run_dir: Path) -> Path:
        """Write ``run.json`` into ``run_dir`` atomically (a reader never sees half a file)."""
        record = {**asdict(self), "spec": self.spec.as_dict()}
        path = run_dir / RUN_FILE
        write_atomic(path, json.dumps(record, indent=2, default=str).encode())
        return path

    @classmethod
    def read(cls, run_dir: Path) -> "RunRecord":
        """Read ``run_dir/run.json``; a missing, malformed or newer file is an error naming it."""
        path = run_dir / RUN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a saved rectorch run: {RUN_FILE} not found")
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path} must hold a JSON object")
        version = record.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: schema_version {version!r} is not {SCHEMA_VERSION}, the one this rectorch reads")
        try:
            spec = DataSpec.from_dict(record.pop("spec"))
            return cls(**record, spec=spec)
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a run record: {error}") from error
