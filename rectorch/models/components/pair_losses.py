"""Item–item pair objectives for PinSage: losses over (query, positive, negatives) scores, hard-negative curriculum.

Every loss has one signature: ``loss(positive, negative, valid)`` with the score of each query with its
positive, its scores with the negatives, and which negatives count (accidental hits — a negative equal
to the positive or the query — are excluded by the caller through ``valid``).

Shapes:
    positive: ``(B,)``; negative: ``(B, K)``; valid: ``(B, K)`` bool → scalar.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaxMarginLoss(nn.Module):
    """PinSage's hinge loss: ``mean max(0, s(q, n) - s(q, p) + margin)`` over the valid negatives.

    Args:
        margin: the required gap between a positive and a negative score (scores are cosines when the
            item vectors are L2-normalised).
    """

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.margin = margin

    def forward(self, positive: Tensor, negative: Tensor, valid: Tensor) -> Tensor:
        hinge = (negative - positive.unsqueeze(1) + self.margin).relu() * valid
        return hinge.sum() / valid.sum().clamp_min(1)


class SampledSoftmaxLoss(nn.Module):
    """Cross-entropy of the positive against the sampled negatives, scores divided by a temperature.

    Args:
        temperature: logits are ``score / temperature``; cosine scores need a small value (0.05–0.1).
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, positive: Tensor, negative: Tensor, valid: Tensor) -> Tensor:
        logits = torch.cat([positive.unsqueeze(1), negative.masked_fill(~valid, float("-inf"))], dim=1)
        targets = torch.zeros(len(positive), dtype=torch.long, device=positive.device)
        return F.cross_entropy(logits / self.temperature, targets)


class HardNegativeCurriculum(nn.Module):
    """How many hard negatives per query an epoch uses (PinSage §3.3: none at first, then more each epoch).

    Args:
        start_epoch: first epoch (0-based) that uses hard negatives.
        per_epoch: hard negatives added per epoch from ``start_epoch`` on.
        max_count: the most hard negatives per query (``None`` = as many as the batch carries).
    """

    def __init__(self, start_epoch: int = 1, per_epoch: int = 1, max_count: int | None = None) -> None:
        super().__init__()
        if start_epoch < 0 or per_epoch < 0 or (max_count is not None and max_count < 0):
            raise ValueError("start_epoch, per_epoch and max_count must be non-negative")
        self.start_epoch, self.per_epoch, self.max_count = start_epoch, per_epoch, max_count

    def count(self, epoch: int, available: int) -> int:
        """Hard negatives per query at ``epoch``, at most ``available``."""
        if epoch < self.start_epoch:
            return 0
        count = self.per_epoch * (epoch - self.start_epoch + 1)
        return min(count, available, available if self.max_count is None else self.max_count)
