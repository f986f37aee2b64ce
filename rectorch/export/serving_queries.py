"""Query vectors as serving computes them: serving's ``QueryEncoder`` on the requests behind evaluation batches."""

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import faiss
import numpy as np

from rectorch.serving.encoder import HISTORY_INPUT, QueryEncoder, build_feed
from rectorch.serving.manifest import InputSpec

Requests = tuple[list[np.ndarray], list[dict[str, np.ndarray]]]


def requests_of(batch: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> Requests:
    """The requests behind a batch in the exported shapes: each row's history without 0 padding, its other inputs."""
    names = [spec.name for spec in specs]
    rows = len(batch[names[0]])
    history = batch.get(HISTORY_INPUT)
    histories = [row[row > 0] for row in history] if history is not None else [np.zeros(0, np.int64)] * rows
    features = [{name: batch[name][i] for name in names if name != HISTORY_INPUT} for i in range(rows)]
    return histories, features


def serving_feeds(batches: Sequence[Mapping[str, np.ndarray]], specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """Each batch's requests as serving feeds them to onnxruntime (histories padded to the batch's longest)."""
    return [build_feed(specs, *requests_of(batch, specs)) for batch in batches]


def serving_encoder(model: bytes, specs: list[InputSpec]) -> QueryEncoder:
    """Serving's ``QueryEncoder`` (one thread, raw inner-product queries) over an in-memory ONNX model."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "query_encoder.onnx")
        path.write_bytes(model)
        return QueryEncoder(path, specs, normalize=False)  # the session holds the model; the file can go


def alone_vs_batch(
    encoder: QueryEncoder,
    requests: Sequence[Requests],
    batched: Sequence[np.ndarray],
    index: faiss.Index,
    users: int,
    k: int,
) -> dict[str, float]:
    """The first ``users`` users encoded alone (``Recommender.recommend``) vs inside their batch (``recommend_many``).

    Returns:
        ``{"users", "max_relative_diff", "same_top{k}"}``: the largest ``‖alone − batched‖ / ‖batched‖`` and the
        share of users whose top-``k`` items through ``index`` are the same list.
    """
    singles = [(h, f) for histories, features in requests for h, f in zip(histories, features, strict=True)][:users]
    if not singles:
        return {"users": 0, "max_relative_diff": 0.0, f"same_top{k}": 1.0}
    alone = np.vstack([encoder.encode([history], [features]) for history, features in singles])
    inside = np.vstack(batched)[: len(alone)]
    relative = np.linalg.norm(alone - inside, axis=1) / np.maximum(np.linalg.norm(inside, axis=1), 1e-12)
    _, top_alone = index.search(alone, k)
    _, top_inside = index.search(inside, k)
    return {
        "users": len(alone),
        "max_relative_diff": float(relative.max()),
        f"same_top{k}": float((top_alone == top_inside).all(axis=1).mean()),
    }


def latency_ms(encoder: QueryEncoder, requests: Sequence[Requests], count: int) -> float:
    """Median milliseconds of one single-request ``encode`` call, over the first ``count`` users."""
    singles = [(h, f) for histories, features in requests for h, f in zip(histories, features, strict=True)][:count]
    if not singles:
        return 0.0
    encoder.encode([singles[0][0]], [singles[0][1]])
    timings = []
    for history, features in singles:
        start = time.perf_counter()
        encoder.encode([history], [features])
        timings.append(time.perf_counter() - start)
    return round(float(np.median(timings)) * 1000, 4)
