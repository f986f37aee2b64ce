"""ONNX query encoder: request histories and user features → query vectors, via onnxruntime."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rectorch.serving.manifest import BundleError, InputSpec

HISTORY_INPUT = "history"


def session(path: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU inference session with ``threads`` intra-op threads and no inter-op parallelism."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class QueryEncoder:
    """Builds the encoder's named inputs from requests and runs the ONNX session.

    ``history`` inputs are right-aligned, 0-padded model item ids truncated to the newest ``shape[1]``
    items (dynamic length: padded to the batch's longest history, at most ``max_len``). Any other
    input is read from a request's ``user_features[name]`` (0 when absent, which every rectorch
    feature encoding treats as unknown).

    Args:
        path: ONNX file.
        inputs: the manifest's input specs.
        normalize: L2-normalise outputs (cosine bundles).
        threads: onnxruntime intra-op threads.
    """

    def __init__(self, path: Path, inputs: list[InputSpec], normalize: bool, threads: int = 1) -> None:
        self.session = session(path, threads)
        self.inputs, self.normalize = inputs, normalize
        names = [i.name for i in self.session.get_inputs()]
        if names != [i.name for i in inputs]:
            raise BundleError(f"{path.name} inputs {names} differ from the manifest's {[i.name for i in inputs]}")
        self.feature_names = {i.name for i in inputs if i.name != HISTORY_INPUT}

    def encode(self, histories: Sequence[np.ndarray], features: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
        """Shapes: B histories → ``(B, D)`` float32 query vectors."""
        (queries,) = self.session.run(None, build_feed(self.inputs, histories, features))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.normalize:
            queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        return queries


def build_feed(
    inputs: list[InputSpec], histories: Sequence[np.ndarray], features: Sequence[Mapping[str, Any] | None]
) -> dict[str, np.ndarray]:
    """Named input arrays for a batch; ``histories`` hold model item ids, oldest first."""
    feed = {}
    for spec in inputs:
        if spec.name == HISTORY_INPUT:
            feed[spec.name] = _right_aligned(histories, _length(spec, histories), np.dtype(spec.dtype))
        else:
            feed[spec.name] = _feature(spec, features)
    return feed


def _length(spec: InputSpec, histories: Sequence[np.ndarray]) -> int:
    """The fixed length, or the longest history in the batch capped at ``max_len`` (at least 1)."""
    if spec.max_len is None:
        return int(spec.shape[1])
    return max(1, min(spec.max_len, max((len(h) for h in histories), default=1)))


def _right_aligned(histories: Sequence[np.ndarray], length: int, dtype: np.dtype) -> np.ndarray:
    batch = np.zeros((len(histories), length), dtype)
    for row, history in enumerate(histories):
        tail = history[-length:]
        if len(tail):
            batch[row, length - len(tail) :] = tail
    return batch


def _feature(spec: InputSpec, features: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
    row_shape = tuple(int(d) for d in spec.shape[1:])
    batch = np.zeros((len(features), *row_shape), np.dtype(spec.dtype))
    for row, values in enumerate(features):
        if values and spec.name in values:
            try:
                batch[row] = np.asarray(values[spec.name], spec.dtype).reshape(row_shape)
            except (ValueError, TypeError) as error:
                raise ValueError(f"user_features[{spec.name!r}] must be {spec.dtype} of shape {row_shape}") from error
    return batch
