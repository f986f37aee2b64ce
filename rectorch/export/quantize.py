"""int8 dynamic quantization of the query encoder and the fp32-vs-int8 quality report."""

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

from rectorch.serving.encoder import session


@dataclass
class QuantizeSettings:
    """int8 quantization and the bar it must pass to be served.

    Args:
        enabled: quantize at all (``False`` ships fp32 only).
        max_relative_ndcg_loss: largest relative NDCG@k loss vs fp32 for int8 to be served (0.01 = 1 %).
        min_compression: int8 must be at least this many times smaller than fp32 to be worth serving.
        k: cut-off of the NDCG/HR comparison and of the top-k overlap.
        latency_queries: single-query calls timed per precision.
    """

    enabled: bool = True
    max_relative_ndcg_loss: float = 0.01
    min_compression: float = 1.5
    k: int = 10
    latency_queries: int = 200


def quantize_int8(fp32: bytes) -> bytes:
    """onnxruntime dynamic quantization (int8 weights, QInt8), after its shape-inference pre-processing."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # onnxruntime's quantizer logs every skipped node at INFO
    try:
        return _quantize_files(fp32)
    finally:
        root.setLevel(level)


def _quantize_files(fp32: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
        return dst.read_bytes()


def _latency_ms(model: bytes, batches: list[dict[str, np.ndarray]], count: int) -> float:
    runtime = session(model)
    singles = [
        {k: v[i : i + 1] for k, v in batch.items()} for batch in batches for i in range(len(next(iter(batch.values()))))
    ]
    singles = singles[:count]
    runtime.run(None, singles[0])
    timings = []
    for feed in singles:
        start = time.perf_counter()
        runtime.run(None, feed)
        timings.append(time.perf_counter() - start)
    return round(float(np.median(timings)) * 1000, 4)


def quality_report(
    encoders: dict[str, bytes],
    batches: list[dict[str, np.ndarray]],
    score: Callable[[str, list[np.ndarray]], dict[str, float]],
    index: faiss.Index,
    settings: QuantizeSettings,
) -> dict:
    """NDCG/HR@k of each precision's queries, top-k overlap through ``index``, size and latency; and the choice.

    Args:
        encoders: ``{"fp32": bytes, "int8": bytes}``.
        batches: evaluation inputs (test split) in the exported shapes.
        score: ``(precision, query vectors per batch) -> metrics`` on the test split.
        index: the item index both precisions search.
        settings: the quality bar.
    """
    report: dict = {"k": settings.k, "precisions": {}}
    found = {}
    for precision, model in encoders.items():
        runtime = session(model)
        vectors = [runtime.run(None, batch)[0] for batch in batches]
        metrics = score(precision, vectors)
        _, found[precision] = index.search(np.ascontiguousarray(np.vstack(vectors), np.float32), settings.k)
        report["precisions"][precision] = {
            **metrics,
            "size_bytes": len(model),
            "latency_ms_batch1": _latency_ms(model, batches, settings.latency_queries),
        }
    if "int8" in encoders:
        fp32, int8 = report["precisions"]["fp32"], report["precisions"]["int8"]
        ndcg = f"ndcg@{settings.k}"
        overlap = [len(set(a) & set(b)) / settings.k for a, b in zip(found["fp32"], found["int8"], strict=True)]
        report[f"top{settings.k}_overlap"] = float(np.mean(overlap))
        report["relative_ndcg_loss"] = (fp32[ndcg] - int8[ndcg]) / fp32[ndcg] if fp32[ndcg] > 0 else 0.0
        report["compression"] = fp32["size_bytes"] / int8["size_bytes"]
    report["served"], report["reason"] = choose_precision(report, settings)
    return report


def choose_precision(report: dict, settings: QuantizeSettings) -> tuple[str, str]:
    """int8 when it loses at most ``max_relative_ndcg_loss`` and compresses at least ``min_compression``."""
    if "relative_ndcg_loss" not in report:
        return "fp32", "quantization disabled"
    loss, compression = report["relative_ndcg_loss"], report["compression"]
    if loss > settings.max_relative_ndcg_loss:
        return "fp32", f"int8 loses {loss:.2%} relative NDCG@{settings.k} > {settings.max_relative_ndcg_loss:.2%}"
    if compression < settings.min_compression:
        return "fp32", f"int8 is only {compression:.2f}x smaller (< {settings.min_compression}x): nothing to quantize"
    bar = settings.max_relative_ndcg_loss
    return "int8", f"int8 loses {loss:.2%} relative NDCG@{settings.k} (≤ {bar:.2%}), {compression:.1f}x smaller"


def evaluator_score(datamodule, item_table: torch.Tensor, targets: list, seen: list) -> Callable:
    """A ``score`` callable for :func:`quality_report`: the run's own full-ranking evaluator on query vectors."""

    def score(precision: str, vectors: list[np.ndarray]) -> dict[str, float]:
        evaluator = datamodule.evaluator()
        for queries, batch_targets, batch_seen in zip(vectors, targets, seen, strict=True):
            evaluator.update(torch.from_numpy(queries) @ item_table.T, batch_targets, batch_seen)
        metrics = evaluator.compute()
        return {name: float(value) for name, value in metrics.items() if name.split("@")[0] in ("ndcg", "hr")}

    return score
