"""int8 static quantization of the query encoder (calibrated activation scales) and the fp32-vs-int8 report."""

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from rectorch.export.serving_queries import alone_vs_batch, latency_ms, requests_of, serving_encoder
from rectorch.serving.manifest import InputSpec

FORMATS = {"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}


@dataclass
class QuantizeSettings:
    """int8 quantization and the bar it must pass to be served.

    Args:
        enabled: quantize at all (``False`` ships fp32 only).
        max_relative_ndcg_loss: largest relative NDCG@k loss vs fp32 for int8 to be served (0.01 = 1 %).
        min_compression: int8 must be at least this many times smaller than fp32 to be worth serving.
        k: cut-off of the NDCG/HR comparison and of the top-k overlap.
        latency_queries: single-query calls timed per precision.
        calibration_users: validation users (training histories) whose activations set the int8 scales.
        format: ``qoperator`` (QLinearMatMul, int8 end to end) or ``qdq`` (Quantize/DequantizeLinear pairs).
        per_channel: one weight scale per output column instead of one per matrix.
        invariance_users: test users also encoded alone, to report how much batching changes their query.
    """

    enabled: bool = True
    max_relative_ndcg_loss: float = 0.01
    min_compression: float = 1.5
    k: int = 10
    latency_queries: int = 200
    calibration_users: int = 1024
    format: str = "qoperator"
    per_channel: bool = False
    invariance_users: int = 64

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"export.quantize.format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if self.calibration_users < 1:
            raise ValueError(f"export.quantize.calibration_users must be positive, got {self.calibration_users}")
        if self.invariance_users < 0:
            raise ValueError(f"export.quantize.invariance_users must be ≥ 0, got {self.invariance_users}")


class _Feeds(CalibrationDataReader):
    """onnxruntime's calibration reader over a list of input feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._feeds: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_int8(
    fp32: bytes, calibration: Sequence[Mapping[str, np.ndarray]], settings: QuantizeSettings | None = None
) -> bytes:
    """onnxruntime static quantization: int8 weights, uint8 activations with MinMax scales from ``calibration``.

    Every activation scale and zero point is a constant of the graph, so a user's query vector depends on
    their own inputs only, never on the other users of a batch or on history padding (dynamic
    quantization takes them over the whole input tensor). Only MatMuls with constant weights and the
    embedding Gathers are quantized; attention products, softmax and LayerNorm stay fp32.

    Args:
        fp32: the exported encoder.
        calibration: input feeds as serving builds them (real training histories).
        settings: format and weight granularity.
    """
    if not calibration:
        raise ValueError("int8 calibration needs at least one input batch (no validation users?)")
    settings = settings or QuantizeSettings()
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # onnxruntime's quantizer logs every skipped node
    try:
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore", RuntimeWarning)  # quant_utils divides by a zero range for constant tensors
            src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
            src.write_bytes(fp32)
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(dst),
                _Feeds(calibration),
                quant_format=FORMATS[settings.format],
                op_types_to_quantize=["MatMul", "Gather"],
                per_channel=settings.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"MatMulConstBOnly": True},
            )
            return dst.read_bytes()
    finally:
        root.setLevel(level)


def quality_report(
    encoders: dict[str, bytes],
    batches: list[dict[str, np.ndarray]],
    specs: list[InputSpec],
    score: Callable[[str, list[np.ndarray]], dict[str, float]],
    index: faiss.Index,
    settings: QuantizeSettings,
) -> dict:
    """NDCG/HR@k of each precision as serving answers, top-k overlap through ``index``, size and latency; the choice.

    Queries come from serving's own encoder: each batch becomes the requests ``Recommender.recommend_many``
    would encode (histories without padding, padded to the batch's longest); latency and the alone-vs-batch
    check encode single requests, as ``Recommender.recommend`` does.

    Args:
        encoders: ``{"fp32": bytes, "int8": bytes}``.
        batches: evaluation inputs (test split) in the exported shapes.
        specs: the encoder's input specs (the manifest's).
        score: ``(precision, query vectors per batch) -> metrics`` on the test split.
        index: the item index both precisions search.
        settings: the quality bar.
    """
    report: dict = {"k": settings.k, "precisions": {}}
    requests = [requests_of(batch, specs) for batch in batches]
    found = {}
    for precision, model in encoders.items():
        encoder = serving_encoder(model, specs)
        vectors = [encoder.encode(*batch) for batch in requests]
        metrics = score(precision, vectors)
        _, found[precision] = index.search(np.vstack(vectors), settings.k)
        report["precisions"][precision] = {
            **metrics,
            "size_bytes": len(model),
            "latency_ms_batch1": latency_ms(encoder, requests, settings.latency_queries),
            "alone_vs_batch": alone_vs_batch(encoder, requests, vectors, index, settings.invariance_users, settings.k),
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


def evaluator_score(new_evaluator: Callable, item_table: torch.Tensor, targets: list, seen: list) -> Callable:
    """A ``score`` callable for :func:`quality_report`: the run's own full-ranking evaluator on query vectors.

    ``new_evaluator()`` returns a fresh evaluator of the run's protocol (one per precision scored).
    """

    def score(precision: str, vectors: list[np.ndarray]) -> dict[str, float]:
        evaluator = new_evaluator()
        for queries, batch_targets, batch_seen in zip(vectors, targets, seen, strict=True):
            evaluator.update(torch.from_numpy(queries) @ item_table.T, batch_targets, batch_seen)
        metrics = evaluator.compute()
        return {name: float(value) for name, value in metrics.items() if name.split("@")[0] in ("ndcg", "hr")}

    return score
