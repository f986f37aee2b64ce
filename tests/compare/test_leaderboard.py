"""The leaderboard and plots over real training runs of three models."""

from pathlib import Path

import pytest
from matplotlib.image import imread
from mlflow import MlflowClient

from rectorch.compare import compare
from rectorch.compare.cli import main
from rectorch.compare.plots import accuracy_vs_beyond, ndcg_vs_time, val_ndcg_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLUMNS = {"rank", "run", "model", "params", "ndcg@10", "hr@10", "mrr@10", "coverage@10", "pop_bias@10"}
COLUMNS |= {"epochs", "train_s", "s_per_epoch", "peak_mb", "protocol"}


def test_leaderboard_ranks_three_models(trained_store: str) -> None:
    comparison = compare(trained_store)
    table = comparison.table
    assert set(table["model"]) == {"popularity", "ease", "sasrec"}
    assert set(table.columns) >= COLUMNS
    assert list(table["rank"]) == [1, 2, 3] and table["ndcg@10"].is_monotonic_decreasing
    assert comparison.warning is None and table["protocol"].nunique() == 1
    assert "l2=200.0" in table.loc[table["model"] == "ease", "params"].item()
    assert "loss=FullSoftmaxLoss" in table.loc[table["model"] == "sasrec", "params"].item()
    sasrec = next(run for run in comparison.runs if run.model == "sasrec")
    assert len(sasrec.val_history["ndcg@10"]) == sasrec.results["epochs"] == 2
    assert "protocol: synthetic | split=loo | ranking=full" in comparison.text()


def test_cli_writes_tables_and_plots(trained_store: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--tracking-uri", trained_store, "--out", str(tmp_path / "out"), "--plots", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert code == 0 and "ndcg@10" in out and "sasrec-" in out
    assert "| rank | run | model |" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert (tmp_path / "out" / "leaderboard.csv").read_text().count("\n") == 4
    names = {"val_ndcg_vs_epoch", "ndcg_vs_train_time", "accuracy_vs_coverage_popularity", "recommended_popularity"}
    for name in names:
        path = tmp_path / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert imread(path).shape[0] > 200
    client = MlflowClient(trained_store)
    for run in compare(trained_store).runs:
        logged = {a.path for a in client.list_artifacts(run.run_id, "plots")}
        assert logged == {"plots/val_ndcg_vs_epoch.png", "plots/recommended_popularity.png"}
        assert "recommended_popularity.json" in {a.path for a in client.list_artifacts(run.run_id)}


def test_recommended_popularity_separates_models(trained_store: str) -> None:
    """Popularity puts its lists in the top deciles; each share vector is a distribution."""
    shares = compare(trained_store).popularity()
    by_model = {run.model: shares[run.run_id] for run in compare(trained_store).runs}
    for result in by_model.values():
        for name in ("items", "interactions", "recommendations"):
            assert sum(result[name]) == pytest.approx(1.0)
    assert sum(by_model["popularity"]["recommendations"][-2:]) > sum(by_model["ease"]["recommendations"][-2:])


@pytest.mark.parametrize("plot", [val_ndcg_curves, ndcg_vs_time, accuracy_vs_beyond])
def test_plot_axes_are_labelled(trained_store: str, plot) -> None:
    figure = plot(compare(trained_store).runs)
    for ax in figure.axes:
        assert ax.get_xlabel() and ax.get_ylabel()


def test_a_two_stage_run_shows_its_channels_under_its_protocol() -> None:
    from rectorch.compare import leaderboard
    from rectorch.compare.store import RunSummary

    protocol = {"dataset": "d", "split": "loo", "ranking": "full", "mask_seen": True, "users": 10}
    metrics = {"ndcg@10": 0.3, "hr@10": 0.5}
    two_stage = {
        "protocol": protocol,
        "test": metrics,
        "dataset_fingerprint": "f" * 64,
        "ranker": {"ranker": "lightgbm"},
        "channels": {"sasrec": {"test": {"ndcg@10": 0.25}}, "covisit": {"test": {"ndcg@10": 0.2}}},
    }
    runs = [RunSummary("a", "two_stage-1", "rectorch-d", "two_stage", {}, {}, two_stage)]
    runs.append(RunSummary("b", "sasrec-2", "rectorch-d", "sasrec", {}, {}, {**two_stage, "test": {"ndcg@10": 0.26}}))
    runs[1].results.pop("channels")
    table = leaderboard(runs)
    assert table["protocol"].nunique() == 1
    assert list(table["run"]) == ["two_stage-1", "sasrec-2", "two_stage-1/sasrec", "two_stage-1/covisit"]
    assert table.loc[0, "params"] == "ranker=lightgbm channels=sasrec,covisit"
    assert list(table["ndcg@10"]) == [0.3, 0.26, 0.25, 0.2]
