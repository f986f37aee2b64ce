"""rectorch: train, compare and ship deep recommender models.

``rectorch.load_run(path_or_mlflow_run_id)`` returns a saved run's model, catalog and config; it is
imported on first use, so ``import rectorch.serving`` stays free of torch.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load_run":
        from rectorch.runs import load_run

        return load_run
    raise AttributeError(f"module 'rectorch' has no attribute {name!r}")
