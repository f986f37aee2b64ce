"""The ranking stage's model at request time: candidate feature rows → one score each, via onnxruntime.

Any ranker rectorch exports (LightGBM, neural) has one float input ``[N, F]`` with the bundle's F feature
columns, NaN meaning missing, and one output of N scores (``[N]`` or ``[N, 1]``).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rectorch.serving.encoder import session
from rectorch.serving.manifest import BundleError, show


@dataclass(frozen=True)
class RankBase:
    """A prior the ranker's trees correct: ``weight · −log1p(rank)`` of one channel's rank column, ``missing``
    standing in for the rank of a candidate that channel did not retrieve. Training adds it as LightGBM's
    initial score and serving adds it to the ONNX trees' output: both through :meth:`scores`."""

    feature: str
    weight: float
    missing: float

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], names: Sequence[str], where: str = "ranker_base") -> "RankBase":
        try:
            base = cls(str(raw["feature"]), float(raw["weight"]), float(raw["missing"]))
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{where} must hold feature, weight and missing: {show(dict(raw))}") from error
        if base.feature not in names or not (math.isfinite(base.weight) and math.isfinite(base.missing)):
            raise BundleError(
                f"{where}: feature {show(base.feature)} must be a ranker feature, weight and missing finite"
            )
        return base

    def scores(self, features: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Shapes: ``(N, F)`` → ``(N,)`` float64."""
        rank = features[:, list(names).index(self.feature)].astype(np.float64)
        return -self.weight * np.log1p(np.where(np.isnan(rank), self.missing, np.maximum(rank, 0.0)))


class RankerModel:
    """Scores candidates with an ONNX ranker.

    Args:
        onnx_bytes: the model, as read and verified from a bundle.
        feature_names: the columns the model reads, in order (from the manifest).
        threads: onnxruntime intra-op threads (inter-op 1, sequential execution).
        name: the model's file name, for messages.
        base: the prior added to the model's output (a ranker fitted on top of one channel's order), or None.

    Raises:
        BundleError: the bytes are not a loadable model, or its input or output is not the one-float-matrix
            ``[N, len(feature_names)]`` → N scores a ranker has.
    """

    def __init__(
        self,
        onnx_bytes: bytes,
        feature_names: list[str],
        threads: int = 1,
        name: str = "ranker.onnx",
        base: RankBase | None = None,
    ) -> None:
        self.name, self.feature_names, self.base = name, list(feature_names), base
        try:
            self.session = session(onnx_bytes, threads)
        except Exception as error:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise BundleError(f"{name} is not a loadable ONNX model: {_first_line(error)}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{name} has {len(inputs)} inputs and {len(outputs)} outputs, a ranker needs one of each")
        (spec,) = inputs
        if spec.type != "tensor(float)" or len(spec.shape) != 2:
            raise BundleError(f"{name} input {spec.name!r} is {spec.type} {spec.shape}, a ranker needs float [N, F]")
        if spec.shape[1] != len(self.feature_names):
            raise BundleError(
                f"{name} input {spec.name!r} has {show(spec.shape[1])} columns, "
                f"the bundle names {len(self.feature_names)} features"
            )
        self.input, self.output = spec.name, outputs[0].name
        self._check()

    def score(self, features: np.ndarray) -> np.ndarray:
        """Shapes: ``(C, F)`` float32 candidate rows → ``(C,)`` float32 scores."""
        features = np.ascontiguousarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(f"{self.name} scores (C, {len(self.feature_names)}) features, got {features.shape}")
        if not len(features):
            return np.zeros(0, np.float32)
        (scores,) = self.session.run([self.output], {self.input: features})
        scores = np.asarray(scores, np.float32).reshape(len(features))
        if self.base is not None:
            scores = (scores + self.base.scores(features, self.feature_names)).astype(np.float32)
        return scores

    def _check(self) -> None:
        """Two probe rows (all zero, all missing) must give two finite scores."""
        probe = np.zeros((2, len(self.feature_names)), np.float32)
        probe[1] = np.nan
        try:
            (scores,) = self.session.run([self.output], {self.input: probe})
        except Exception as error:  # onnxruntime's own exception types
            raise BundleError(f"{self.name} fails on a probe batch of 2 rows: {_first_line(error)}") from None
        if np.size(scores) != 2 or not np.isfinite(scores).all():
            raise BundleError(
                f"{self.name} returns {np.shape(scores)} scores for 2 probe rows, a ranker gives 2 finite ones"
            )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return show(text.splitlines()[0] if text else type(error).__name__, 200)
