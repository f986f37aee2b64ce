"""``compare(...)``: runs from the store → leaderboard, tables, plots, and plots logged back to each run."""

import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rectorch.compare.leaderboard import format_text, leaderboard, protocol_groups, protocol_warning, write_tables
from rectorch.compare.plots import Popularity, write_plots, write_run_plots
from rectorch.compare.popularity import PopularityUnavailable, PopularityWarning, run_popularity
from rectorch.compare.store import RunSummary, default_tracking_uri, load_runs, open_store


@dataclass
class Comparison:
    """The runs being compared and their leaderboard.

    Args:
        tracking_uri: the store the runs were read from (plots and caches are logged back to it).
        runs: finished runs, newest first.
        k: the metric cut-off of the leaderboard and plots.
    """

    tracking_uri: str
    runs: list[RunSummary]
    k: int = 10

    @property
    def table(self) -> pd.DataFrame:
        """The leaderboard (see :func:`rectorch.compare.leaderboard.leaderboard`)."""
        return leaderboard(self.runs, self.k)

    @property
    def warning(self) -> str | None:
        """Set when the runs span several protocols or datasets."""
        return protocol_warning(self.runs)

    def text(self) -> str:
        """The leaderboard as plain text, one table per protocol group."""
        return format_text(self.table)

    def write_tables(self, out_dir: str | Path) -> list[Path]:
        """``leaderboard.md`` and ``leaderboard.csv`` in ``out_dir``."""
        return write_tables(self.table, Path(out_dir))

    def popularity(self, cache: bool = True) -> Popularity:
        """Recommended-item popularity of every run that can be rebuilt here (with ``cache``, logged to the run).

        A run that cannot be rebuilt (no checkpoint, data not readable here) is left out with a warning.
        """
        client = open_store(self.tracking_uri)
        found: Popularity = {}
        for run in self.runs:
            try:
                found[run.run_id] = run_popularity(client, run.run_id, self.k, cache)
            except PopularityUnavailable as reason:
                warnings.warn(
                    f"{run.run_name} left out of the popularity plot: {reason}", PopularityWarning, stacklevel=2
                )
        return found

    def write_plots(self, out_dir: str | Path, popularity: bool = True, log_to_runs: bool = True) -> list[Path]:
        """Comparison PNGs per protocol group; a run's own plots are also logged to it under ``plots/``.

        Args:
            out_dir: destination; with several protocol groups, one subfolder per group.
            popularity: rebuild each run's recommendations for the popularity plot (needs its data).
            log_to_runs: log each run's plots and popularity result as MLflow artifacts; ``False``
                leaves the store untouched.
        """
        out_dir = Path(out_dir)
        shares = self.popularity(cache=log_to_runs) if popularity else {}
        groups = list(protocol_groups(self.runs).values())
        paths = []
        for index, members in enumerate(groups, start=1):
            folder = out_dir if len(groups) == 1 else out_dir / _slug(index, members[0])
            paths += write_plots(members, folder, self.k, shares)
        if log_to_runs:
            self._log_run_plots(shares)
        return paths

    def _log_run_plots(self, shares: Popularity) -> None:
        client = open_store(self.tracking_uri)
        for run in self.runs:
            with tempfile.TemporaryDirectory() as tmp:
                write_run_plots(run, Path(tmp), self.k, shares)
                client.log_artifacts(run.run_id, tmp, artifact_path="plots")


def _slug(index: int, run: RunSummary) -> str:
    p = run.protocol
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{index}-{p.get('dataset')}-{p.get('split')}-{p.get('ranking')}")


def compare(
    tracking_uri: str | None = None,
    experiments: list[str] | None = None,
    tags: dict[str, str] | None = None,
    k: int = 10,
) -> Comparison:
    """Read finished runs from an MLflow store for comparison.

    Args:
        tracking_uri: the store; default rectorch's ``logs/mlflow/mlflow.db``.
        experiments: experiment names (``rectorch-<dataset>``); default all rectorch experiments.
        tags: exact tag filters, e.g. ``{"model_family": "sasrec"}``.
        k: metric cut-off.

    Raises:
        StoreError: when the store or a named experiment does not exist.

    Example:
        >>> comparison = compare(experiments=["rectorch-ml1m"])  # doctest: +SKIP
        >>> print(comparison.text()); comparison.write_plots("plots")  # doctest: +SKIP
    """
    uri = tracking_uri or default_tracking_uri()
    return Comparison(uri, load_runs(uri, experiments, tags), k)
