"""How popular the recommended items are, against the catalog: reproduced from a saved run.

``load_run`` brings the run back from its MLflow artifacts (``run.json``, catalog, checkpoint); its
data is re-prepared (from the cache when present) to rank the whole catalog for every test user
exactly as the evaluator does (padding and, under ``mask_seen``, seen items excluded), and the top-k
items are counted per item-popularity decile of the run's catalog. The small result is cached on the
run as the artifact ``recommended_popularity.json``, so each run is scored once, whichever machine
compares it later.
"""

import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

ARTIFACT = "recommended_popularity.json"
NUM_BINS = 10


def _decile_sums(values: Any, bins: Any) -> list[float]:
    import torch

    return torch.zeros(NUM_BINS, dtype=torch.float64).index_add_(0, bins, values.double()).tolist()


def recommended_popularity(run: Any, k: int = 10) -> dict[str, Any]:
    """Share of catalog items, training interactions and top-k slots in each popularity decile.

    Args:
        run: a loaded saved run (:class:`rectorch.runs.Run`).
        k: the list length.

    Returns:
        ``{"k", "bins", "items", "interactions", "recommendations"}``; the last three are lists of
        ``bins`` shares (each summing to 1), decile 0 holding the least popular items.
    """
    import torch

    from rectorch.evaluation.metrics import popularity_percentile

    datamodule, model = run.datamodule(), run.model
    mask_seen = model.evaluation.mask_seen
    popularity = torch.from_numpy(run.catalog.item_popularity)
    bins = (popularity_percentile(popularity) * NUM_BINS).long().clamp(max=NUM_BINS - 1)[1:]
    counts = torch.zeros(popularity.numel(), dtype=torch.int64)
    with torch.no_grad():
        items = model.item_vectors()
        for batch in datamodule.test_dataloader():
            scores = model.encode_query(**batch["query"]) @ items.T
            scores[:, 0] = float("-inf")
            if mask_seen:
                kept = scores.gather(1, batch["targets"])
                scores.scatter_(1, batch["seen"], float("-inf")).scatter_(1, batch["targets"], kept)
            counts += torch.bincount(scores.topk(k, dim=1).indices.reshape(-1), minlength=counts.numel())
    per_item = {"items": torch.ones_like(popularity), "interactions": popularity, "recommendations": counts}
    sums = {name: _decile_sums(values[1:], bins) for name, values in per_item.items()}
    return {"k": k, "bins": NUM_BINS, **{name: [v / sum(s) for v in s] for name, s in sums.items()}}


class PopularityUnavailable(Exception):
    """A run's recommendations cannot be reproduced here (no checkpoint, data or model code)."""


class PopularityWarning(UserWarning):
    """A run was left out of the popularity plot; the message says why."""


def run_popularity(client: MlflowClient, run_id: str, k: int = 10, cache: bool = True) -> dict[str, Any]:
    """The run's cached ``recommended_popularity.json``, computed (and, with ``cache``, logged) on first use.

    Raises:
        PopularityUnavailable: with the reason, when the run cannot be rebuilt here.
    """
    from rectorch.runs import load_run

    with tempfile.TemporaryDirectory() as tmp:
        try:
            cached = json.loads(Path(client.download_artifacts(run_id, ARTIFACT, tmp)).read_text())
            if cached.get("k") == k:
                return cached
        except (MlflowException, OSError):
            pass
        try:
            result = recommended_popularity(load_run(run_id, tracking_uri=client.tracking_uri), k)
        except Exception as error:  # any failure to rebuild a foreign run only drops it from one plot
            raise PopularityUnavailable(f"{type(error).__name__}: {error}") from error
        if cache:
            path = Path(tmp) / ARTIFACT
            path.write_text(json.dumps(result, indent=2))
            client.log_artifact(run_id, str(path))
    return result
