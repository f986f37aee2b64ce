"""SASRec: causal self-attention over the item history, next-item objective at every position."""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.base import OptimizerFactory, RecModule, SchedulerFactory
from rectorch.models.components.sequence_encoder import SequenceEncoder
from rectorch.models.components.sequence_losses import FullSoftmaxLoss, SeenItems


def trim_padding(items: Tensor) -> Tensor:
    """Drop the leading columns that are padding in every row (right-aligned batches)."""
    start = int((items != 0).any(dim=0).int().argmax())
    return items[:, start:]


def sequence_mean_cross_entropy(logits: Tensor, targets: Tensor, seen: SeenItems | None = None) -> Tensor:
    """Softmax cross-entropy over the whole catalog, as ``FullSoftmaxLoss`` computes it chunk by chunk (column 0
    and, with ``seen``, the position's own sequence are never negatives), averaged over each sequence's target
    positions and then over the sequences: a mean of per-example terms, which DP-SGD's clipping needs.

    Shapes:
        logits ``(B, L, N + 1)``; targets ``(B, L)`` in ``0..N`` (0 = no target) → scalar.
    """
    has_target = targets != 0
    logits, rows, flat = logits[has_target], has_target.nonzero()[:, 0], targets[has_target]
    excluded = torch.zeros_like(logits, dtype=torch.bool) if seen is None else seen.of_rows(0, len(flat))
    excluded[:, 0] = True
    excluded[torch.arange(len(flat), device=flat.device), flat] = False
    losses = F.cross_entropy(logits.masked_fill(excluded, float("-inf")), flat, reduction="none")
    return (losses / has_target.sum(dim=1)[rows]).sum() / has_target.any(dim=1).sum()


class SASRecModule(RecModule):
    """Self-Attentive Sequential Recommendation (https://arxiv.org/abs/1808.09781).

    The item embedding table is shared by the input and the output (tied) unless ``untied_output``. Training predicts
    ``items[:, t + 1]`` from ``items[:, :t + 1]`` at every position with a target; the loss object
    decides how (full softmax = SASRec+, ``BCELoss`` = the paper, sampled softmax, gBCE).

    Args:
        spec: dataset sizes (``num_items``).
        view: ``SequenceView(max_len)``.
        encoder: partial ``SequenceEncoder``, completed with ``num_items``, ``max_len`` and ``causal=True``.
        loss: a loss from ``rectorch.models.components.sequence_losses``.
        exclude_seen: no item of a user's training sequence is a negative for that user's positions
            (evaluation never ranks seen items either); the published sampled-negative SASRec does this.
        untied_output: score items with their own output layer (initialised as a copy of the item
            embedding) applied to each sequence's hidden states, trained with the full-catalog softmax
            averaged per sequence (:func:`sequence_mean_cross_entropy`, ``B × L × N`` logits at once), and
            no position whose input is padding has a target (so a sequence's loss never depends on its batch).
            DP-SGD needs it: per-example gradients are computed per layer call, and a tied table read as
            ``h @ E.T`` is no layer call, so its output-side gradient would be missing from them.
        optimizer: partial optimizer.
        scheduler: optional partial LR scheduler.

    Shapes:
        batch["items"]: ``(B, max_len + 1)``; history: ``(B, L)`` → query ``(B, D)``;
        item vectors: ``(num_items + 1, D)``.
    """

    family = "sasrec"

    def __init__(
        self,
        spec: DataSpec,
        view: SequenceView,
        encoder: Callable[..., SequenceEncoder],
        loss: nn.Module,
        exclude_seen: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        untied_output: bool = False,
    ) -> None:
        super().__init__(spec, view, optimizer, scheduler)
        self.encoder = encoder(num_items=spec.num_items, max_len=view.max_len, causal=True)
        self.loss, self.exclude_seen = loss, exclude_seen
        self.output: nn.Linear | None = None
        if untied_output:
            if not isinstance(loss, FullSoftmaxLoss):
                raise ValueError(
                    f"model.untied_output scores the whole catalog: it trains with model/loss=full_softmax, "
                    f"got {type(loss).__name__}"
                )
            self.output = nn.Linear(self.encoder.dim, spec.num_items + 1, bias=False)
            with torch.no_grad():
                self.output.weight.copy_(self.encoder.item_embedding.weight[: spec.num_items + 1])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        items = trim_padding(batch["items"])
        inputs, targets = items[:, :-1], items[:, 1:]
        hidden = self.encoder(inputs)  # (B, L, D)
        if self.output is not None:  # no target read from padding: there is one only when a longer row shares the batch
            targets = targets * (inputs != 0)
        has_target = targets != 0
        seen = SeenItems.from_sequences(items, has_target, self.spec.num_items) if self.exclude_seen else None
        if self.output is None:
            loss = self.loss(hidden[has_target], targets[has_target], self.item_vectors(), seen)
        else:  # the output layer sees the batch dimension, so per-example gradients reach it
            loss = sequence_mean_cross_entropy(self.output(hidden), targets, seen)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(items))
        return loss

    def encode_query(self, history: Tensor) -> Tensor:
        return self.encoder(history)[:, -1]

    def item_vectors(self) -> Tensor:
        if self.output is not None:
            return self.output.weight
        return self.encoder.item_embedding.weight  # (N + 1, D) already: no slice, whose backward copies the table
