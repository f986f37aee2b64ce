"""The privacy–utility curve: test NDCG@k against the epsilon DP-SGD runs spent, one line per model family.

A run trained with ``privacy=dp`` carries its accountant's numbers in ``metrics.json`` under ``privacy``; a run
without is the family's non-private reference, epsilon = ∞ (the one with the best validation NDCG@k when there
are several). Each private run is reported with the share of its reference's test NDCG@k that it keeps.
"""

import math
from typing import Any

from matplotlib.figure import Figure

from rectorch.compare.plots import _color, _figure, _title
from rectorch.compare.store import RunSummary


def spent_epsilon(run: RunSummary) -> float:
    """The epsilon a run spent (its accountant's), ``inf`` for a run trained without DP-SGD."""
    privacy = run.results.get("privacy")
    return float(privacy["epsilon"]) if privacy else math.inf


def privacy_rows(runs: list[RunSummary], k: int = 10) -> list[dict[str, Any]]:
    """One row per run of every family that has a private run, ordered by family then epsilon.

    Rows: ``model``, ``run``, ``epsilon``, ``delta``, ``noise_multiplier``, ``ndcg`` (test NDCG@k) and
    ``kept`` (``ndcg`` over the family's non-private reference; ``None`` without a reference).
    """
    rows = []
    for family in sorted({run.model for run in runs if math.isfinite(spent_epsilon(run))}):
        members = sorted((run for run in runs if run.model == family), key=spent_epsilon)
        public = [run for run in members if not math.isfinite(spent_epsilon(run))]
        reference = max(public, key=lambda run: run.results["val"].get(f"ndcg@{k}", -1.0), default=None)
        for run in [run for run in members if math.isfinite(spent_epsilon(run))] + ([reference] if reference else []):
            privacy = run.results.get("privacy") or {}
            ndcg = run.test_metric(f"ndcg@{k}")
            rows.append(
                {
                    "model": family,
                    "run": run.run_name,
                    "epsilon": spent_epsilon(run),
                    "delta": privacy.get("delta"),
                    "noise_multiplier": privacy.get("noise_multiplier"),
                    "ndcg": ndcg,
                    "kept": ndcg / reference.test_metric(f"ndcg@{k}") if reference else None,
                }
            )
    return rows


def privacy_table(runs: list[RunSummary], k: int = 10) -> str:
    """The rows of :func:`privacy_rows` as a Markdown table."""
    lines = [
        f"| model | epsilon | delta | noise multiplier | test NDCG@{k} | kept | run |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in privacy_rows(runs, k):
        epsilon = "∞" if math.isinf(row["epsilon"]) else f"{row['epsilon']:.2f}"
        delta = "" if row["delta"] is None else f"{row['delta']:.2e}"
        sigma = "" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.3f}"
        kept = "" if row["kept"] is None else f"{row['kept']:.0%}"
        lines.append(f"| {row['model']} | {epsilon} | {delta} | {sigma} | {row['ndcg']:.4f} | {kept} | {row['run']} |")
    return "\n".join(lines)


def privacy_utility(runs: list[RunSummary], k: int = 10) -> Figure:
    """Test NDCG@k against spent epsilon (log scale), one line per family; the non-private reference is the
    dashed line of the same colour, and each private point is labelled with the share of it that it keeps."""
    figure, (ax,) = _figure()
    rows = privacy_rows(runs, k)
    for i, family in enumerate(sorted({row["model"] for row in rows})):
        points = [row for row in rows if row["model"] == family and math.isfinite(row["epsilon"])]
        ax.plot([p["epsilon"] for p in points], [p["ndcg"] for p in points], marker="o", color=_color(i), label=family)
        reference = [row for row in rows if row["model"] == family and math.isinf(row["epsilon"])]
        if reference:
            ax.axhline(reference[0]["ndcg"], color=_color(i), linestyle="--", label=f"{family}, non-private")
            for p in points:
                ax.annotate(f"{p['kept']:.0%}", (p["epsilon"], p["ndcg"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.set_xlabel("epsilon spent (log scale)")
    ax.set_ylabel(f"test NDCG@{k}")
    ax.legend(fontsize=8, loc="best")
    if runs:
        _title(figure, f"Privacy–utility: test NDCG@{k} against DP-SGD's epsilon", runs)
    return figure
