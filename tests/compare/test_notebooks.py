"""The notebooks execute headless, so they cannot rot; outputs stay out of git."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rectorch.compare import compare
from rectorch.compare.store import StoreError, default_tracking_uri
from rectorch.resolvers import rectorch_home
from tests.conftest import PROJECT_ROOT, require_data

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def _execute(name: str, timeout: int) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


@pytest.mark.parametrize("name", ["quickstart.ipynb", "movielens.ipynb"])
def test_notebook_outputs_are_stripped(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_quickstart_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECTORCH_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("RECTORCH_HOME", str(tmp_path))  # the kernel runs in notebooks/: keep its outputs out of it
    notebook = _execute("quickstart.ipynb", timeout=120)
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 4
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "recommended: [" in printed and "'ann'" in printed
    assert len(compare(f"sqlite:///{tmp_path}/logs/mlflow/mlflow.db").runs) == 2


def test_movielens_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_data("ml-1m/ml-1m.txt.gz")
    try:
        runs = compare(default_tracking_uri(), experiments=["rectorch-ml1m"]).runs
    except StoreError as error:
        pytest.skip(f"no ML-1M runs to show: {error}")
    if not runs:
        pytest.skip("no finished ML-1M runs in the project's MLflow store (rectorch-train experiment=..._ml1m)")
    monkeypatch.setenv("RECTORCH_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("RECTORCH_HOME", str(rectorch_home()))  # the kernel runs in notebooks/: read the same store
    _execute("movielens.ipynb", timeout=300)
    # one folder of plots per protocol group when the store holds runs under several protocols
    assert list((tmp_path / "compare-ml1m").rglob("val_ndcg_vs_epoch.png"))
