"""Saved runs: ``run.json`` + catalog + checkpoint, and :func:`load_run` to get a model back."""

from rectorch.runs.load import Run, load_run
from rectorch.runs.record import RunRecord

__all__ = ["Run", "RunRecord", "load_run"]
