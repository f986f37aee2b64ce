"""The final metrics table printed at the end of a run."""

from typing import Any

from rich.console import Console
from rich.table import Table


def print_metrics(results: dict[str, Any]) -> None:
    """One table of validation and test metrics, titled with the protocol they were measured under."""
    protocol = results["protocol"]
    title = " | ".join(f"{k}={v}" for k, v in protocol.items())
    table = Table(title=f"{results['model']} — {title}")
    table.add_column("metric")
    table.add_column("val", justify="right")
    table.add_column("test", justify="right")
    for name in results["test"]:
        table.add_row(name, f"{results['val'].get(name, float('nan')):.4f}", f"{results['test'][name]:.4f}")
    Console().print(table)
    summary = ("epochs", "best_epoch", "train_seconds", "seconds_per_epoch", "peak_rss_mb")
    print(" ".join(f"{key}={results[key]}" for key in summary if results.get(key) is not None))
