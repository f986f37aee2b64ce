"""``rectorch-eval``: a run's checkpoint re-evaluated under its own config gives the run's own numbers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rectorch.training.evaluate import evaluate_run, main
from tests.conftest import SMALL_DATA


def test_evaluating_the_best_checkpoint_reproduces_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "rectorch.training.cli", "model=sasrec", "debug=limit", "logger=none"]
    command += ["callbacks.progress_bar=null", *SMALL_DATA]
    command += [f"paths.log_dir={tmp_path}/logs", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads((run_dir / "metrics.json").read_text())

    evaluated = evaluate_run(run_dir)
    assert evaluated["protocol"] == trained["protocol"]
    assert evaluated["checkpoint_epoch"] == trained["best_epoch"]
    for name in ("ndcg@10", "hr@10", "coverage@10"):
        assert evaluated["test"][name] == pytest.approx(trained["test"][name], abs=1e-6)
    assert json.loads((run_dir / "eval.json").read_text())["test"] == evaluated["test"]


def test_not_a_run_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "is not a saved rectorch run: run.json not found" in capsys.readouterr().err
