"""The ``rectorch-train`` command: bad input ends in one clear message, exit code 2, nothing left behind."""

import subprocess
import sys
from pathlib import Path

import pytest

QUIET = ["model=ease", "logger=none", "callbacks=none"]
SMALL = [*QUIET, "data.source.num_users=200", "data.source.num_items=80"]


def run_cli(tmp_path: Path, *overrides: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rectorch.training.cli", *flags, f"paths.log_dir={tmp_path}", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([*QUIET, "data=csv", "data.path=/nonexistent/events.csv"], "/nonexistent/events.csv"),
        ([*SMALL, "model.view.max_len=-5"], "max_len"),
        ([*SMALL, "evaluation.ks=[10,5000]"], "5000"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, overrides: list[str], message: str) -> None:
    result = run_cli(tmp_path, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "rectorch-train: error:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a failed run left its directory behind"


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    result = run_cli(tmp_path, *SMALL, "model=no_such_model")
    assert result.returncode != 0
    assert "no_such_model" in result.stderr


def test_multirun_sweep(tmp_path: Path) -> None:
    result = run_cli(tmp_path, *SMALL, "model=popularity,ease", flags=("--multirun",))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = sorted((tmp_path / "multiruns").rglob("metrics.json"))
    assert len(metrics) == 2


def test_a_failed_run_in_a_users_folder_removes_only_what_it_created(tmp_path: Path) -> None:
    folder = tmp_path / "my-experiments"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "ideas.md").write_text("keep me")
    (folder / "results.csv").write_text("a,b\n1,2\n")
    result = run_cli(tmp_path, *SMALL, "data.batch_size=0", f"hydra.run.dir={folder}")
    assert result.returncode == 2 and "data.batch_size" in result.stderr
    assert (folder / "notes" / "ideas.md").read_text() == "keep me"
    assert (folder / "results.csv").read_text() == "a,b\n1,2\n"


def test_a_failed_run_in_its_own_new_folder_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "fresh"
    result = run_cli(tmp_path, *SMALL, "data.batch_size=0", f"hydra.run.dir={folder}")
    assert result.returncode == 2
    assert not folder.exists()
