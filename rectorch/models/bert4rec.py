"""BERT4Rec: bidirectional self-attention trained to recover masked items (a cloze task)."""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.base import OptimizerFactory, RecModule, SchedulerFactory
from rectorch.models.components.sequence_encoder import SequenceEncoder
from rectorch.models.components.sequence_losses import SeenItems
from rectorch.models.sasrec import trim_padding


def mask_items(
    items: Tensor, prob: float, mask_id: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Replace each real item by ``mask_id`` with probability ``prob``; a row with none masked gets its
    last item masked (the next-item case BERT4Rec adds to training), so every row has a target.

    Shapes:
        items: ``(B, L)`` right-aligned → (inputs ``(B, L)``, masked ``(B, L)`` bool).
    """
    real = items != 0
    draw = torch.rand(items.shape, generator=generator, device=items.device)
    masked = real & (draw < prob)
    masked[:, -1] |= ~masked.any(dim=1) & real[:, -1]
    return items.masked_fill(masked, mask_id), masked


class BERT4RecModule(RecModule):
    """BERT4Rec (https://arxiv.org/abs/1904.06690).

    Training masks items with probability ``mask_prob`` and predicts them from both sides; the loss
    object scores masked positions against the catalog (full or sampled softmax). The [MASK] token is
    item id ``num_items + 1``; at inference the history is shifted left by one and [MASK] appended,
    so the query is the hidden state of that last, masked position. Input and output item
    embeddings are tied.

    Args:
        spec: dataset sizes (``num_items``).
        view: ``SequenceView(max_len)``.
        encoder: partial ``SequenceEncoder``, completed with ``num_items``, ``max_len``,
            ``causal=False`` and one extra token.
        loss: a loss from ``rectorch.models.components.sequence_losses``.
        mask_prob: probability that a real item is masked in training.
        exclude_seen: no item of a user's training sequence is a negative at that user's masked
            positions (evaluation never ranks seen items either).
        optimizer: partial optimizer.
        scheduler: optional partial LR scheduler.

    Shapes:
        batch["items"]: ``(B, max_len + 1)`` (the last ``max_len`` are used); history: ``(B, L)`` →
        query ``(B, D)``; item vectors: ``(num_items + 1, D)``.
    """

    family = "bert4rec"

    def __init__(
        self,
        spec: DataSpec,
        view: SequenceView,
        encoder: Callable[..., SequenceEncoder],
        loss: nn.Module,
        mask_prob: float = 0.2,
        exclude_seen: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(spec, view, optimizer, scheduler)
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        self.mask_id, self.mask_prob, self.exclude_seen = spec.num_items + 1, mask_prob, exclude_seen
        self.encoder = encoder(num_items=spec.num_items, max_len=view.max_len, causal=False, extra_tokens=1)
        self.loss = loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        items = trim_padding(batch["items"][:, 1:])
        inputs, masked = mask_items(items, self.mask_prob, self.mask_id)
        hidden = self.encoder(inputs)  # (B, L, D)
        seen = SeenItems.from_sequences(items, masked, self.spec.num_items) if self.exclude_seen else None
        loss = self.loss(hidden[masked], items[masked], self.item_vectors(), seen)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(items))
        return loss

    def encode_query(self, history: Tensor) -> Tensor:
        """The mask token appended after the history; the oldest item gives way only when the history is full,
        so a history encodes the same unpadded or padded to ``max_len``."""
        mask = torch.full_like(history[:, :1], self.mask_id)
        return self.encoder(torch.cat([history, mask], dim=1)[:, -self.encoder.max_len :])[:, -1]

    def item_vectors(self) -> Tensor:
        return self.encoder.item_embedding.weight[: self.spec.num_items + 1]
