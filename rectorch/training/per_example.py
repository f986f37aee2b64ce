"""Per-example gradients for DP-SGD: Opacus' hooks, made to fit rectorch's models, and a check that they are right.

:class:`PerExampleHooks` are Opacus' ``GradSampleHooks`` with two changes. A layer Opacus has no gradient
sampler for (one that owns parameters itself, such as the two-tower's history poolers) gets its per-example
gradients from ``torch.func`` over all of its inputs, where Opacus' own fallback passes the first one only
(the poolers read ``(history, mask)``); an input without the batch dimension is shared by every example
(the HSTU blocks' position buckets). And ``nn.Embedding`` follows PyTorch's ``padding_idx`` rule: the
padding row gets no gradient (Opacus gives it one), so per-example gradients add up to the batch gradient.

Opacus computes per-example gradients per layer call, which a model can defeat silently (a tied output table
read as ``h @ E.T``, in-batch negatives, a loss averaged over the batch's positions): before the first step,
:func:`verify_per_example_gradients` compares them with each example's own gradient.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from opacus.grad_sample import GradSampleHooks
from opacus.grad_sample.embedding import compute_embedding_grad_sample
from opacus.grad_sample.functorch import make_functional
from opacus.utils.module_utils import has_trainable_params
from torch import Tensor, nn

#: per-example gradients of the check must match each example's own gradient to this relative error
GRADIENT_TOLERANCE = 1e-3


class PerExampleHooks(GradSampleHooks):
    """Opacus' per-example gradient hooks on ``module`` (attached in place), see the module docstring.

    Args:
        module: the model; its layers get hooks now, :meth:`cleanup` removes them.
    """

    def __init__(self, module: nn.Module) -> None:
        self.GRAD_SAMPLERS = {**GradSampleHooks.GRAD_SAMPLERS, nn.Embedding: _embedding_grad_sample}
        self._functional = {}
        for layer in module.modules():
            if _opacus_fallback(layer):  # functional copies are made before any hook exists
                self._functional[layer] = make_functional(layer)[0]
                self.GRAD_SAMPLERS[type(layer)] = self._all_inputs
        super().__init__(module, batch_first=True, loss_reduction="mean")

    def iterate_submodules(self, module: nn.Module) -> Iterator[nn.Module]:
        if _opacus_fallback(module):  # one call covers the layer and everything inside it
            yield module
            return
        yield from super().iterate_submodules(module)

    def rearrange_grad_samples(self, *, module: nn.Module, backprops: Tensor, **kwargs: Any) -> tuple[Any, Tensor]:
        if module in self._functional and not hasattr(module, "max_batch_len"):
            module.max_batch_len = len(backprops)  # Opacus reads the batch off the last input, which may be shared
        return super().rearrange_grad_samples(module=module, backprops=backprops, **kwargs)

    def _all_inputs(self, layer: nn.Module, activations: list[Tensor], backprops: Tensor) -> dict[nn.Parameter, Tensor]:
        functional, params = self._functional[layer], tuple(layer.parameters())
        batched = [x.dim() > 0 and x.shape[0] == len(backprops) for x in activations]  # else shared by all

        def output_dot_backprop(weights: tuple[Tensor, ...], inputs: list[Tensor], backprop: Tensor) -> Tensor:
            inputs = [x.unsqueeze(0) if b else x for x, b in zip(inputs, batched, strict=True)]
            return (functional(weights, *inputs) * backprop.unsqueeze(0)).sum()

        in_dims = (None, [0 if b else None for b in batched], 0)
        per_example = torch.func.vmap(torch.func.grad(output_dot_backprop), in_dims=in_dims)
        grads = per_example(tuple(p.detach() for p in params), list(activations), backprops)
        return {p: g for p, g in zip(params, grads, strict=True) if p.requires_grad}


def _opacus_fallback(layer: nn.Module) -> bool:
    """A layer owning parameters that no Opacus sampler handles (Opacus would use its one-input fallback)."""
    return has_trainable_params(layer) and type(layer) not in GradSampleHooks.GRAD_SAMPLERS


def _embedding_grad_sample(layer: nn.Embedding, activations: list[Tensor], backprops: Tensor) -> dict:
    grads = compute_embedding_grad_sample(layer, activations, backprops)
    if layer.padding_idx is not None and layer.weight in grads:
        grads[layer.weight][:, layer.padding_idx] = 0.0
    return grads


def verify_per_example_gradients(model: L.LightningModule, batch: dict[str, Any], rows: int = 3) -> None:
    """Refuse a model whose Opacus per-example gradients are not the examples' own gradients.

    The first ``rows`` examples of ``batch`` go through ``training_step`` together and then one by one, with
    dropout off and the same random draws; Opacus' per-example gradient of each example in the joint pass
    must equal the gradient of the pass that holds that example alone. That fails when a parameter's gradient
    bypasses the hooked layer calls (a tied output table, a bare ``arange`` position lookup), when an example's
    loss reads the other examples (in-batch negatives) and when the loss is not a mean of per-example terms.
    The model must carry Opacus' hooks; gradients are cleared afterwards.

    Raises:
        ValueError: naming the parameter whose per-example gradient is wrong, or the reason Opacus gave.
    """
    size = len(next(iter(_tensors(batch))))
    count = min(rows, size)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    try:
        with _deterministic(model):
            joint = _gradients(model, _take(batch, range(count)), params, per_example=True)
            alone = [_gradients(model, _take(batch, [row]), params, per_example=False) for row in range(count)]
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
        raise ValueError(f"privacy=dp: Opacus cannot compute per-example gradients: {_one_line(error)}") from error
    for row, own in enumerate(alone):
        for name in params:
            expected, got = own[name], joint[name][row]
            difference = float((got - expected).norm())
            error = difference / max(float(got.norm()), float(expected.norm()), 1e-12)
            if error > GRADIENT_TOLERANCE and difference > 1e-8:
                raise ValueError(
                    f"privacy=dp: the per-example gradient of {name} differs from the example's own gradient "
                    f"by {error:.0%} (a tied output table, in-batch negatives, a loss averaged over the batch "
                    "rather than per example, or a parameter used outside a layer call): this model cannot "
                    "train privately as configured"
                )


def _gradients(
    model: L.LightningModule, batch: dict[str, Any], params: dict[str, nn.Parameter], per_example: bool
) -> dict[str, Tensor]:
    """One ``training_step`` + backward: each parameter's Opacus per-example gradients, or its gradient."""
    for p in params.values():
        p.grad, p.grad_sample = None, None
    with torch.random.fork_rng(devices=[]), _unlogged(model):
        torch.manual_seed(0)
        model.training_step(batch, 0).backward()
    result = {}
    for name, p in params.items():
        value = p.grad_sample if per_example else p.grad
        if value is None:
            raise ValueError(f"{name} got no {'per-example ' if per_example else ''}gradient")
        result[name] = value.detach().clone()
        p.grad, p.grad_sample = None, None
    return result


@contextmanager
def _deterministic(model: nn.Module) -> Iterator[None]:
    """Dropout off, hooked layers still in training mode: Opacus records only layers in training mode, and
    dropout lives in modules that own no parameters (``nn.Dropout``, attention, the item tower's id dropout)."""
    modes = {module: module.training for module in model.modules()}
    for module in model.modules():
        module.training = any(p.requires_grad for p in module.parameters(recurse=False))
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


@contextmanager
def _unlogged(model: L.LightningModule) -> Iterator[None]:
    """``training_step`` outside the loop: its ``self.log`` calls do nothing without a trainer."""
    trainer, model._trainer = model._trainer, None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*")
            yield
    finally:
        model._trainer = trainer


def _tensors(batch: Any) -> Iterator[Tensor]:
    if isinstance(batch, Tensor):
        yield batch
    elif isinstance(batch, dict):
        for value in batch.values():
            yield from _tensors(value)


def _take(batch: Any, rows: Any) -> Any:
    """The given examples (dim 0) of every tensor in a nested dict batch."""
    if isinstance(batch, Tensor):
        return batch[list(rows)]
    return {key: _take(value, rows) for key, value in batch.items()}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
