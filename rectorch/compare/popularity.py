"""How popular the recommended items are, against the catalog: reproduced from a run's checkpoint.

A training run logs its resolved ``config.yaml`` and ``checkpoints/best.ckpt``. From those two
artifacts this module rebuilds the dataset (from the prepared-data cache when present) and the
model, ranks the whole catalog for every test user exactly as the evaluator does (padding and,
under ``mask_seen``, seen items excluded), and counts the top-k items per item-popularity decile.
The small result is cached on the run as the artifact ``recommended_popularity.json``, so each
run is scored once, whichever machine compares it later.
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


def recommended_popularity(config: Any, checkpoint: Path, k: int = 10) -> dict[str, Any]:
    """Share of catalog items, training interactions and top-k slots in each popularity decile.

    Args:
        config: the run's resolved config (``data`` and ``model`` nodes with ``_target_``).
        checkpoint: the run's best Lightning checkpoint.
        k: the list length.

    Returns:
        ``{"k", "bins", "items", "interactions", "recommendations"}``; the last three are lists of
        ``bins`` shares (each summing to 1), decile 0 holding the least popular items.
    """
    import torch
    from hydra.utils import instantiate

    from rectorch.evaluation.metrics import popularity_percentile
    from rectorch.models.checkpoint import load_weights

    datamodule = instantiate(config.data)
    datamodule.setup("test")
    model = instantiate(config.model, spec=datamodule.spec)
    load_weights(model, checkpoint)
    model.eval()
    datamodule.view = model.view
    popularity = torch.from_numpy(datamodule.item_popularity())
    bins = (popularity_percentile(popularity) * NUM_BINS).long().clamp(max=NUM_BINS - 1)[1:]
    counts = torch.zeros(popularity.numel(), dtype=torch.int64)
    with torch.no_grad():
        items = model.item_vectors()
        for batch in datamodule.test_dataloader():
            scores = model.encode_query(**batch["query"]) @ items.T
            scores[:, 0] = float("-inf")
            if datamodule.evaluation.mask_seen:
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
    from omegaconf import OmegaConf

    with tempfile.TemporaryDirectory() as tmp:
        try:
            cached = json.loads(Path(client.download_artifacts(run_id, ARTIFACT, tmp)).read_text())
            if cached.get("k") == k:
                return cached
        except (MlflowException, OSError):
            pass
        checkpoints = [a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path.endswith(".ckpt")]
        if not checkpoints:
            raise PopularityUnavailable("no checkpoint artifact")
        try:
            config = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
            checkpoint = Path(client.download_artifacts(run_id, checkpoints[0], tmp))
            result = recommended_popularity(config, checkpoint, k)
        except Exception as error:  # any failure to rebuild a foreign run only drops it from one plot
            raise PopularityUnavailable(f"{type(error).__name__}: {error}") from error
        if cache:
            path = Path(tmp) / ARTIFACT
            path.write_text(json.dumps(result, indent=2))
            client.log_artifact(run_id, str(path))
    return result
