"""SASRec: causal self-attention over the item history, next-item objective at every position."""

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.base import OptimizerFactory, RecModule, SchedulerFactory
from rectorch.models.components.sequence_encoder import SequenceEncoder
from rectorch.models.components.sequence_losses import SeenItems


def trim_padding(items: Tensor) -> Tensor:
    """Drop the leading columns that are padding in every row (right-aligned batches)."""
    start = int((items != 0).any(dim=0).int().argmax())
    return items[:, start:]


class SASRecModule(RecModule):
    """Self-Attentive Sequential Recommendation (https://arxiv.org/abs/1808.09781).

    The item embedding table is shared by the input and the output (tied). Training predicts
    ``items[:, t + 1]`` from ``items[:, :t + 1]`` at every position with a target; the loss object
    decides how (full softmax = SASRec+, ``BCELoss`` = the paper, sampled softmax, gBCE).

    Args:
        spec: dataset sizes (``num_items``).
        view: ``SequenceView(max_len)``.
        encoder: partial ``SequenceEncoder``, completed with ``num_items``, ``max_len`` and ``causal=True``.
        loss: a loss from ``rectorch.models.components.sequence_losses``.
        exclude_seen: no item of a user's training sequence is a negative for that user's positions
            (evaluation never ranks seen items either); the published sampled-negative SASRec does this.
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
    ) -> None:
        super().__init__(spec, view, optimizer, scheduler)
        self.encoder = encoder(num_items=spec.num_items, max_len=view.max_len, causal=True)
        self.loss, self.exclude_seen = loss, exclude_seen

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        items = trim_padding(batch["items"])
        inputs, targets = items[:, :-1], items[:, 1:]
        hidden = self.encoder(inputs)  # (B, L, D)
        has_target = targets != 0
        seen = SeenItems.from_sequences(items, has_target, self.spec.num_items) if self.exclude_seen else None
        loss = self.loss(hidden[has_target], targets[has_target], self.item_vectors(), seen)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(items))
        return loss

    def encode_query(self, history: Tensor) -> Tensor:
        return self.encoder(history)[:, -1]

    def item_vectors(self) -> Tensor:
        return self.encoder.item_embedding.weight[: self.spec.num_items + 1]
