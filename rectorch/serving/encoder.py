"""ONNX query encoder: request histories and user features → query vectors, via onnxruntime."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rectorch.serving.manifest import BundleError, InputSpec, show

HISTORY_INPUT = "history"
_ORT_TYPES = {
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "float32": "tensor(float)",
    "float64": "tensor(double)",
    "bool": "tensor(bool)",
}


def _first_line(error: Exception) -> str:
    return show(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__, 200)


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
        model: ONNX file, or its bytes (as read and verified from a bundle).
        inputs: the manifest's input specs.
        normalize: L2-normalise outputs (cosine bundles).
        threads: onnxruntime intra-op threads.
        name: the model's file name, for messages (default: the path's name).

    Raises:
        BundleError: the model does not load, or its inputs or outputs differ from the manifest's.
    """

    def __init__(
        self, model: Path | bytes, inputs: list[InputSpec], normalize: bool, threads: int = 1, name: str | None = None
    ) -> None:
        self.name = name or (model.name if isinstance(model, Path) else "query encoder")
        try:
            self.session = session(model, threads)
        except Exception as error:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise BundleError(f"{self.name} is not a loadable ONNX model: {_first_line(error)}") from None
        self.inputs, self.normalize = inputs, normalize
        names = [i.name for i in self.session.get_inputs()]
        if names != [i.name for i in inputs]:
            raise BundleError(f"{self.name} inputs {names} differ from the manifest's {[i.name for i in inputs]}")
        for spec, actual in zip(inputs, self.session.get_inputs(), strict=True):
            if actual.type != _ORT_TYPES[spec.dtype]:
                raise BundleError(
                    f"{self.name} input {spec.name!r} is {actual.type}, the manifest's inputs say {spec.dtype}"
                )
        if len(self.session.get_outputs()) != 1:
            raise BundleError(f"{self.name} has {len(self.session.get_outputs())} outputs, serving needs one")
        self.feature_names = {i.name for i in inputs if i.name != HISTORY_INPUT}

    def check(self, model_ids: Sequence[int], dim: int) -> None:
        """Encode a one-item history per id in ``model_ids``: it must run and give finite ``(n, dim)`` vectors.

        Serving calls this at load with the first and last model item ids, so an ``id_offset`` or ``dim``
        that does not fit the encoder is refused before any request sees it.
        """
        try:
            queries = self.encode([np.asarray([i], np.int64) for i in model_ids], [None] * len(model_ids))
        except Exception as error:  # onnxruntime's own exception types
            raise BundleError(
                f"{self.name} fails on model item ids {list(model_ids)} (manifest.json id_offset, num_items): "
                f"{_first_line(error)}"
            ) from None
        if queries.shape != (len(model_ids), dim):
            raise BundleError(
                f"{self.name} returns query vectors of shape {queries.shape[1:]}, manifest.json says dim={dim}"
            )
        if not np.isfinite(queries).all():
            raise BundleError(f"{self.name} returns non-finite query vectors for model item ids {list(model_ids)}")

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
