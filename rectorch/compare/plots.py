"""Comparison plots: learning curves, accuracy vs cost, accuracy vs beyond-accuracy, recommended popularity.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so they render the same in a
script, a test or a notebook, whatever the active backend.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from rectorch.compare.store import RunSummary

Popularity = dict[str, dict[str, Any]]


def _figure(width: float = 7.0, height: float = 4.5, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, list(axes)


def _color(index: int) -> str:
    return f"C{index % 10}"


def _title(figure: Figure, text: str, runs: list[RunSummary]) -> None:
    p = runs[0].protocol
    figure.suptitle(
        f"{text}\n{p.get('dataset')}, {p.get('split')}, {p.get('ranking')} ranking, test users={p.get('users')}"
    )


def _annotated_scatter(ax: Axes, runs: list[RunSummary], x: list[float], y: list[float]) -> None:
    for i, run in enumerate(runs):
        ax.scatter(x[i], y[i], color=_color(i), s=50, zorder=3)
        ax.annotate(run.run_name, (x[i], y[i]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.margins(x=0.2, y=0.15)


def val_ndcg_curves(runs: list[RunSummary], k: int = 10) -> Figure:
    """Validation NDCG@k after every epoch, one line per run."""
    figure, (ax,) = _figure()
    for i, run in enumerate(runs):
        values = run.val_history.get(f"ndcg@{k}", [])
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, color=_color(i), label=run.run_name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation NDCG@{k}")
    ax.legend(fontsize=8, loc="best")
    _title(figure, f"Validation NDCG@{k} per epoch", runs)
    return figure


def ndcg_vs_time(runs: list[RunSummary], k: int = 10) -> Figure:
    """Test NDCG@k against wall-clock training time (log scale), one point per run."""
    figure, (ax,) = _figure()
    seconds = [max(float(run.results.get("train_seconds") or 0.0), 1e-3) for run in runs]
    _annotated_scatter(ax, runs, seconds, [run.test_metric(f"ndcg@{k}") for run in runs])
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training time (s, log scale)")
    ax.set_ylabel(f"test NDCG@{k}")
    _title(figure, f"Accuracy vs training cost (NDCG@{k})", runs)
    return figure


def accuracy_vs_beyond(runs: list[RunSummary], k: int = 10) -> Figure:
    """Test NDCG@k against catalog coverage@k and against popularity bias@k (filter-bubble check)."""
    figure, (left, right) = _figure(width=11.0, ncols=2)
    ndcg = [run.test_metric(f"ndcg@{k}") for run in runs]
    _annotated_scatter(left, runs, [run.test_metric(f"coverage@{k}") for run in runs], ndcg)
    left.set_xlabel(f"catalog coverage@{k} (share of items ever recommended)")
    _annotated_scatter(right, runs, [run.test_metric(f"pop_bias@{k}") for run in runs], ndcg)
    right.set_xlabel(f"popularity bias@{k} (mean popularity percentile of the top-{k})")
    for ax in (left, right):
        ax.set_ylabel(f"test NDCG@{k}")
    _title(
        figure,
        "Accuracy vs catalog coverage (right = broader) and popularity bias (left = less of a filter bubble)",
        runs,
    )
    return figure


def popularity_distribution(runs: list[RunSummary], popularity: Popularity) -> Figure:
    """Share of top-k slots per item-popularity decile, per run, against the catalog and the interactions."""
    scored = [run for run in runs if run.run_id in popularity]
    reference = popularity[scored[0].run_id]
    deciles = np.arange(1, reference["bins"] + 1)
    width = 0.8 / max(len(scored), 1)
    figure, (ax,) = _figure(width=9.0)
    for i, run in enumerate(scored):
        shares = np.array(popularity[run.run_id]["recommendations"]) * 100
        ax.bar(deciles - 0.4 + width * (i + 0.5), shares, width=width, color=_color(i), label=run.run_name)
    ax.step(deciles, np.array(reference["items"]) * 100, where="mid", color="black", ls="--", label="catalog (items)")
    ax.step(
        deciles,
        np.array(reference["interactions"]) * 100,
        where="mid",
        color="gray",
        ls=":",
        label="training interactions",
    )
    ax.set_xticks(deciles)
    ax.set_xlabel("item popularity decile (1 = least popular, 10 = most popular)")
    ax.set_ylabel(f"share of top-{reference['k']} recommendations (%)")
    ax.legend(fontsize=8, loc="upper left")
    _title(figure, "Popularity of recommended items vs the catalog", scored)
    return figure


PLOTS: dict[str, Callable[[list[RunSummary], int], Figure]] = {
    "val_ndcg_vs_epoch.png": val_ndcg_curves,
    "ndcg_vs_train_time.png": ndcg_vs_time,
    "accuracy_vs_coverage_popularity.png": accuracy_vs_beyond,
}
POPULARITY_PLOT = "recommended_popularity.png"


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_plots(runs: list[RunSummary], out_dir: Path, k: int = 10, popularity: Popularity | None = None) -> list[Path]:
    """Write every comparison plot of one protocol group into ``out_dir``; returns the files.

    Args:
        runs: runs measured under one protocol (see :func:`rectorch.compare.protocol_groups`).
        out_dir: destination folder (created).
        k: the metric cut-off.
        popularity: ``run_id -> recommended_popularity`` results; the popularity plot is written
            only when at least one run has one.
    """
    paths = [_save(plot(runs, k), out_dir / name) for name, plot in PLOTS.items()]
    if popularity and any(run.run_id in popularity for run in runs):
        paths.append(_save(popularity_distribution(runs, popularity), out_dir / POPULARITY_PLOT))
    return paths


def write_run_plots(run: RunSummary, out_dir: Path, k: int = 10, popularity: Popularity | None = None) -> list[Path]:
    """The plots that apply to a single run: its learning curve and its recommended popularity."""
    paths = [_save(val_ndcg_curves([run], k), out_dir / "val_ndcg_vs_epoch.png")]
    if popularity and run.run_id in popularity:
        paths.append(_save(popularity_distribution([run], popularity), out_dir / POPULARITY_PLOT))
    return paths
