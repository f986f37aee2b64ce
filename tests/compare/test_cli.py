"""``rectorch-compare`` exit codes and messages when there is nothing to compare."""

from pathlib import Path

import pytest

from rectorch.compare.cli import EXIT_NO_RUNS, EXIT_USAGE, main
from tests.compare.conftest import log_fake_run


def test_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["--tracking-uri", uri]) == EXIT_USAGE
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_empty_store(empty_store: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["--tracking-uri", empty_store]) == EXIT_NO_RUNS
    assert "no finished runs match" in capsys.readouterr().err


def test_unknown_experiment(empty_store: str, capsys: pytest.CaptureFixture) -> None:
    log_fake_run(empty_store, "sasrec", 0.3)
    assert main(["--tracking-uri", empty_store, "--experiment", "rectorch-nope"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown experiment rectorch-nope" in err and "rectorch-synthetic" in err


def test_bad_tag_argument(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--tag", "no-equals-sign"])
    assert exit_info.value.code == EXIT_USAGE and "KEY=VALUE" in capsys.readouterr().err
