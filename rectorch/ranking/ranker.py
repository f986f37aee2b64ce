"""What every ranker over candidate features offers, and the helpers they share: group NDCG and export checks.

A ranker scores candidate rows ``(N, F)`` float32 (NaN = missing) one score each, higher first. It fits on
one :class:`RankingData` and early-stops on another, exports an ONNX graph that serving runs with
:class:`rectorch.serving.ranker.RankerModel`, and saves its own native files (never a pickle).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rectorch.ranking.data import RankingData

#: the largest |ONNX score - predict score| an export may show on its validation sample
ONNX_TOLERANCE = 1e-5


class Ranker(Protocol):
    """A learned ranking stage (``ranker=lightgbm``, ``ranker=neural``).

    ``feature_names`` and ``onnx_report`` are filled by ``fit`` (or a loader) and ``to_onnx``.
    """

    name: str
    feature_names: list[str]
    onnx_report: dict[str, Any]

    def fit(self, train: RankingData, valid: RankingData) -> dict[str, Any]:
        """Fit on ``train``, select (early-stop) on ``valid`` only; returns the fit report."""
        ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``(N, F)`` float32 rows → ``(N,)`` float64 scores."""
        ...

    def to_onnx(self) -> bytes:
        """ONNX with input ``features`` float32 ``[N, F]`` (dynamic N) and output ``scores`` float32 ``[N]`` or
        ``[N, 1]``, validated against :meth:`predict` (see :func:`validate_export`)."""
        ...

    def save(self, directory: Path) -> list[Path]:
        """Write the native model files into ``directory``; returns their paths."""
        ...


def group_ndcg(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over the groups that hold a positive label (the others carry no signal and are skipped).

    Within a group rows are ranked by descending score, ties in row order; the gain of a row is
    ``2**label - 1`` (LightGBM's default, the plain hit count for 0/1 labels) discounted by ``log2(rank + 1)``.

    Shapes:
        scores, labels ``(N,)``; groups ``(Q,)`` rows per group, summing to N.

    Raises:
        ValueError: mismatched shapes, ``k < 1``, or no group with a positive label.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    groups = np.asarray(groups, np.int64)
    if scores.shape != labels.shape or scores.ndim != 1 or int(groups.sum()) != len(scores) or (groups <= 0).any():
        raise ValueError(f"scores {scores.shape}, labels {labels.shape} and groups (sum {int(groups.sum())}) disagree")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    query = np.repeat(np.arange(len(groups)), groups)
    order = np.lexsort((np.arange(len(scores)), -scores, query))  # by group, then score descending, then row
    ideal = np.lexsort((-labels, query))
    starts = np.repeat(np.cumsum(groups) - groups, groups)
    rank = np.arange(len(scores)) - starts  # 0-based rank of position i within its group
    discount = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    dcg = np.bincount(query, (2.0 ** labels[order] - 1.0) * discount, minlength=len(groups))
    idcg = np.bincount(query, (2.0 ** labels[ideal] - 1.0) * discount, minlength=len(groups))
    positive = idcg > 0
    if not positive.any():
        raise ValueError("group_ndcg: no group holds a positive label")
    return float(np.mean(dcg[positive] / idcg[positive]))


def export_sample(reference: np.ndarray, rows: int = 256, seed: int = 0) -> np.ndarray:
    """Rows to validate an export on: up to ``rows`` reference rows, the same rows with about a third of their
    cells set to NaN, and one all-NaN row. ``(R, F)`` float32."""
    reference = np.asarray(reference, np.float32)[:rows]
    masked = reference.copy()
    masked[np.random.default_rng(seed).random(masked.shape) < 1 / 3] = np.nan
    return np.concatenate([reference, masked, np.full((1, reference.shape[1]), np.nan, np.float32)])


def validate_export(
    ranker: Any, onnx_bytes: bytes, sample: np.ndarray, predict: Callable[[np.ndarray], np.ndarray] | None = None
) -> bytes:
    """Score ``sample`` with the serving runtime and with ``predict`` (default ``ranker.predict``), record
    ``ranker.onnx_report`` (max abs difference, rows, NaN cells, tolerance) and return ``onnx_bytes``.

    Raises:
        ValueError: the scores differ by more than :data:`ONNX_TOLERANCE` (or are not finite).
    """
    from rectorch.serving.ranker import RankerModel

    sample = np.ascontiguousarray(sample, np.float32)
    runtime = RankerModel(onnx_bytes, list(ranker.feature_names), name=f"{ranker.name} ONNX export")
    got = runtime.score(sample).astype(np.float64)
    want = np.asarray((predict or ranker.predict)(sample), np.float64)
    difference = float(np.max(np.abs(got - want), initial=0.0))
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        difference = float("inf")
    ranker.onnx_report = {
        "max_abs_diff": difference,
        "rows": len(sample),
        "nan_cells": int(np.isnan(sample).sum()),
        "tolerance": ONNX_TOLERANCE,
    }
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(
            f"{ranker.name} ONNX scores differ from predict by {difference:.3g} > {ONNX_TOLERANCE:g} "
            f"on {len(sample)} validation rows"
        )
    return onnx_bytes
