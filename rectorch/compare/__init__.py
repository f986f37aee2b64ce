"""Compare finished training runs from the MLflow store: leaderboard, tables and plots.

Reads the store only through MLflow's client; the recommended-popularity plot rebuilds a run's model
from its logged config and checkpoint (see :mod:`rectorch.compare.popularity`).
"""

from rectorch.compare.comparison import Comparison, compare
from rectorch.compare.leaderboard import leaderboard, protocol_groups, protocol_label, protocol_warning
from rectorch.compare.store import RunSummary, StoreError, default_tracking_uri, load_runs

__all__ = [
    "Comparison",
    "RunSummary",
    "StoreError",
    "compare",
    "default_tracking_uri",
    "leaderboard",
    "load_runs",
    "protocol_groups",
    "protocol_label",
    "protocol_warning",
]
