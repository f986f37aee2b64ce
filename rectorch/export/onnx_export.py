"""ONNX export of a model's ``encode_query`` (dynamo, one file) and its validation against torch."""

import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rectorch.serving.encoder import HISTORY_INPUT, session
from rectorch.serving.manifest import InputSpec

log = logging.getLogger(__name__)


class ExportValidationError(RuntimeError):
    """The exported encoder does not reproduce torch within the tolerance."""


@dataclass
class OnnxSettings:
    """ONNX export knobs.

    Args:
        opset: ONNX opset version.
        max_batch: largest batch the dynamic axis accepts.
        atol: largest allowed |onnxruntime − torch| on validation queries (fp32).
        validation_users: validation users the check runs on.
        dynamic_history: export the ``history`` length as a dynamic axis (up to the example's length), so
            serving encodes only the real history; falls back to the fixed length when the model cannot.
    """

    opset: int = 18
    max_batch: int = 4096
    atol: float = 1e-4
    validation_users: int = 512
    dynamic_history: bool = True


class QueryEncoderModule(nn.Module):
    """``forward(*tensors) = model.encode_query(**dict(zip(names, tensors)))``: the graph ONNX captures."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.model.encode_query(**dict(zip(self.names, tensors, strict=True)))


def input_specs(inputs: dict[str, Tensor], dynamic_history: bool = False) -> list[InputSpec]:
    """Manifest specs of the example inputs: dim 0 is ``batch``, ``history`` dim 1 ``length`` when dynamic."""
    specs = []
    for name, tensor in inputs.items():
        dims: list[int | str] = ["batch", *tensor.shape[1:]]
        dynamic = dynamic_history and name == HISTORY_INPUT and tensor.ndim == 2
        if dynamic:
            dims[1] = "length"
        specs.append(
            InputSpec(name, str(tensor.dtype).removeprefix("torch."), dims, tensor.shape[1] if dynamic else None)
        )
    return specs


def export_onnx(model: nn.Module, inputs: dict[str, Tensor], settings: OnnxSettings) -> tuple[bytes, list[InputSpec]]:
    """Serialized ONNX of ``model.encode_query`` with named inputs and a dynamic batch axis, and its input specs.

    With ``settings.dynamic_history`` the history length is dynamic too; when torch.export cannot
    trace that (a model that specialises on the length), the fixed-length export is returned instead.

    Args:
        model: a ``RecModule`` (put in eval mode).
        inputs: named example inputs (``export_inputs()``); dim 0 is the batch.
        settings: opset, batch bound, dynamic history.
    """
    if settings.dynamic_history and HISTORY_INPUT in inputs and inputs[HISTORY_INPUT].ndim == 2:
        try:
            return _export(model, inputs, settings, dynamic_history=True), input_specs(inputs, True)
        except Exception as error:  # torch.export raises many types for a data-dependent length
            log.warning("dynamic history export failed (%s): exporting the fixed length", type(error).__name__)
    return _export(model, inputs, settings, dynamic_history=False), input_specs(inputs)


def _export(model: nn.Module, inputs: dict[str, Tensor], settings: OnnxSettings, dynamic_history: bool) -> bytes:
    wrapper = QueryEncoderModule(model.eval(), list(inputs)).eval()
    batch = torch.export.Dim("batch", min=1, max=settings.max_batch)
    length = (
        torch.export.Dim("length", min=1, max=max(int(inputs[HISTORY_INPUT].shape[1]), 2)) if dynamic_history else None
    )
    axes = [{0: batch, 1: length} if dynamic_history and name == HISTORY_INPUT else {0: batch} for name in inputs]
    shapes = (tuple(axes),)  # one entry: the *tensors tuple
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            tuple(inputs.values()),
            dynamo=True,
            external_data=False,
            opset_version=settings.opset,
            input_names=list(inputs),
            output_names=["query"],
            dynamic_shapes=shapes,
            verbose=False,
        )
    program.save(buffer)
    return buffer.getvalue()


def flat_inputs(batch: dict[str, Any]) -> dict[str, Tensor]:
    """One level of named inputs: ``{"user_features": {"age": t}}`` becomes ``{"user_age": t}``."""
    flat = {}
    for key, value in batch.items():
        if isinstance(value, dict):
            prefix = key.removesuffix("_features")
            flat.update({f"{prefix}_{name}": tensor for name, tensor in value.items()})
        else:
            flat[key] = value
    return flat


def fit_to_specs(batch: dict[str, Any], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """Numpy inputs in the exported shapes: 2-D sequences right-aligned, left-padded or cut to the fixed length."""
    batch, arrays = flat_inputs(batch), {}
    for spec in specs:
        if spec.name not in batch:
            raise ExportValidationError(f"evaluation batches have no input {spec.name!r} (have {sorted(batch)})")
        array = batch[spec.name].numpy().astype(spec.dtype)
        length = spec.max_len if spec.max_len is not None else spec.shape[1] if array.ndim == 2 else None
        if length is not None and array.shape[1] != length and (spec.max_len is None or array.shape[1] > length):
            fitted = np.zeros((len(array), length), array.dtype)
            tail = array[:, -length:]
            fitted[:, length - tail.shape[1] :] = tail
            array = fitted
        arrays[spec.name] = array
    return arrays


def validate(model: nn.Module, onnx_model: bytes, batches: list[dict[str, np.ndarray]], atol: float) -> dict:
    """Run torch and onnxruntime on the same real inputs; raise when they differ by more than ``atol``.

    Returns:
        ``{"max_abs_diff", "min_cosine", "queries", "atol"}``.
    """
    runtime = session(onnx_model)
    worst, cosine, count = 0.0, 1.0, 0
    for arrays in batches:
        with torch.no_grad():
            expected = model.eval().encode_query(**{k: torch.from_numpy(v) for k, v in arrays.items()}).numpy()
        (actual,) = runtime.run(None, arrays)
        if actual.shape != expected.shape:
            raise ExportValidationError(f"ONNX output shape {actual.shape} != torch {expected.shape}")
        worst = max(worst, float(np.abs(actual - expected).max(initial=0.0)))
        cosine = min(cosine, _min_cosine(actual, expected))
        count += len(actual)
    report = {"max_abs_diff": worst, "min_cosine": cosine, "queries": count, "atol": atol}
    if not worst <= atol:
        raise ExportValidationError(f"ONNX encoder differs from torch by {worst:.3g} > atol {atol:g} ({report})")
    return report


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    ok = norms > 0
    return float(((a * b).sum(axis=1)[ok] / norms[ok]).min(initial=1.0))
