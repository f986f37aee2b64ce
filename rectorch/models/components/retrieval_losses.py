"""Retrieval losses for two-tower models, injected as objects (``model.loss._target_``).

A retrieval loss gets the query vectors, the positive item ids, a function that embeds item ids
with the item tower, and the per-draw probability that an item is a batch positive. It picks its own
candidates, so negative sampling is part of the loss object, not of the model.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InBatchSoftmaxLoss(nn.Module):
    """Sampled softmax over the batch's positives plus optional uniform negatives, logQ-corrected.

    Candidates are the ``B`` positives of the batch (each one a negative for the other rows) and
    ``uniform_negatives`` items drawn uniformly from the catalog (Mixed Negative Sampling, Yang et al.,
    WWW 2020, https://doi.org/10.1145/3366424.3386195). Every logit is ``cos / temperature`` minus
    ``log E[count of the item in the candidate set]`` (the logQ correction of Yi et al., RecSys 2019,
    https://doi.org/10.1145/3298689.3346996), with the expected count of item ``j`` equal to
    ``B * p_j + M / N`` for ``p_j`` the in-batch sampling probability, ``M`` uniform draws and ``N``
    items. With ``M = 0`` this is Yi et al.'s ``s - log p_j`` up to a constant. A candidate equal to a
    row's positive (a duplicate positive in the batch, or an accidental uniform hit) is masked out of
    that row; the row's own positive stays.

    With ``in_batch=False`` a row's candidates are its own positive and the uniform negatives only, and
    each row embeds its candidates itself (``encode_items`` of ``(B, 1 + M)`` ids): its loss then depends
    on its own example alone, which DP-SGD's per-example gradients need (in-batch negatives make each
    row's loss depend on the other rows' items). Uniform candidates need no logQ correction.

    Args:
        temperature: divides the cosine scores (smaller = sharper).
        uniform_negatives: uniform negatives shared by the batch (0 = in-batch only).
        logq_correction: subtract the log expected candidate count (in-batch candidates only).
        in_batch: the batch's positives are candidates for every row.

    Shapes:
        queries ``(B, D)``; items ``(B,)`` in ``1..N``; ``encode_items(ids (C,) or (B, 1 + M)) -> (..., D)``;
        sampling_prob ``(N + 1,)`` → scalar.
    """

    def __init__(
        self, temperature: float = 0.05, uniform_negatives: int = 0, logq_correction: bool = True, in_batch: bool = True
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if uniform_negatives < 0:
            raise ValueError(f"uniform_negatives must be >= 0, got {uniform_negatives}")
        if not in_batch and uniform_negatives == 0:
            raise ValueError("uniform_negatives must be >= 1 when in_batch is false (no other candidates)")
        self.temperature, self.uniform_negatives, self.logq_correction = temperature, uniform_negatives, logq_correction
        self.in_batch = in_batch

    def forward(
        self, queries: Tensor, items: Tensor, encode_items: Callable[[Tensor], Tensor], sampling_prob: Tensor
    ) -> Tensor:
        batch, num_items = items.shape[0], sampling_prob.shape[0] - 1
        negatives = torch.randint(1, num_items + 1, (self.uniform_negatives,), device=items.device)
        if not self.in_batch:
            return self._own_candidates(queries, items, encode_items, negatives)
        candidates = torch.cat([items, negatives])  # (C,) with C = B + M
        logits = queries @ encode_items(candidates).T / self.temperature  # (B, C)
        if self.logq_correction:
            expected = batch * sampling_prob[candidates] + self.uniform_negatives / num_items
            logits = logits - expected.clamp_min(torch.finfo(logits.dtype).tiny).log()
        rows = torch.arange(batch, device=items.device)
        duplicate = items.unsqueeze(1) == candidates.unsqueeze(0)
        duplicate[rows, rows] = False
        return F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), rows)

    def _own_candidates(
        self, queries: Tensor, items: Tensor, encode_items: Callable[[Tensor], Tensor], negatives: Tensor
    ) -> Tensor:
        """Each row against its positive (column 0) and the uniform negatives, embedded per row."""
        candidates = torch.cat([items.unsqueeze(1), negatives.expand(len(items), -1)], dim=1)  # (B, 1 + M)
        logits = torch.einsum("bd,bcd->bc", queries, encode_items(candidates)) / self.temperature
        hit = candidates == items.unsqueeze(1)
        hit[:, 0] = False
        target = torch.zeros_like(items)
        return F.cross_entropy(logits.masked_fill(hit, float("-inf")), target)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, uniform_negatives={self.uniform_negatives}, "
            f"logq_correction={self.logq_correction}, in_batch={self.in_batch}"
        )
