"""Next-item losses for sequence models, injected as objects (``model.loss._target_``).

Every loss has one signature: ``loss(hidden, targets, items, seen=None)`` with the hidden states
gathered at the positions that have a target, their target ids, and the item table whose row ``i``
scores item ``i`` (row 0 = padding, never a candidate). Only target positions reach a loss, so padding
costs nothing here. With ``seen`` (:class:`SeenItems`), no item of a position's own sequence counts as
a negative there, as evaluation never ranks a user's seen items.

Shapes:
    hidden: ``(P, D)``; targets: ``(P,)`` in ``1..N``; items: ``(N + 1, D)`` → scalar.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SeenItems(NamedTuple):
    """Which items each target position's sequence holds.

    Shapes:
        matrix: ``(B, N + 1)`` bool, True where sequence ``b`` holds item ``i``; row: ``(P,)`` the
        sequence of each target position.
    """

    matrix: Tensor
    row: Tensor

    @classmethod
    def from_sequences(cls, sequences: Tensor, has_target: Tensor, num_items: int) -> "SeenItems":
        """``sequences``: ``(B, S)`` 0-padded ids; ``has_target``: ``(B, L)`` bool, the positions in the
        row-major order in which ``hidden[has_target]`` gathers them."""
        matrix = torch.zeros(len(sequences), num_items + 1, dtype=torch.bool, device=sequences.device)
        matrix.scatter_(1, sequences, True)  # padding marks column 0, never a candidate anyway
        return cls(matrix, has_target.nonzero()[:, 0])

    def of_rows(self, start: int, stop: int) -> Tensor:
        """``(stop - start, N + 1)``: the whole catalog for target positions ``start:stop``."""
        return self.matrix[self.row[start:stop]]

    def of_shared(self, ids: Tensor) -> Tensor:
        """``(P, K)``: ``K`` ids shared by every position."""
        return self.matrix[:, ids][self.row]

    def of_each(self, ids: Tensor) -> Tensor:
        """``(P,)``: one id per position."""
        return self.matrix[self.row, ids]


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over the whole catalog, ``chunk`` rows of logits at a time.

    Gradients are computed chunk by chunk during the forward pass (the loss is a scalar, so backward
    only rescales them): no ``(P, N)`` matrix is stored for autograd and no logits are recomputed.
    The two catalog matmuls run in ``dtype``; the softmax always runs in fp32. A position's loss
    saturates at ``-log(tiny fp32) ≈ 87`` (its gradient is exact).
    """

    @staticmethod
    def forward(
        ctx, hidden: Tensor, targets: Tensor, items: Tensor, chunk: int, dtype: torch.dtype, seen: SeenItems | None
    ) -> Tensor:
        count = hidden.shape[0]
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        grad_items = torch.zeros(items.shape, dtype=torch.float32, device=items.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        tiny = torch.finfo(torch.float32).tiny
        with torch.autocast(hidden.device.type, enabled=False):
            queries, table = hidden.to(dtype), items.to(dtype)
            for start in range(0, count, chunk):
                h, t = queries[start : start + chunk], targets[start : start + chunk]
                rows = torch.arange(len(t), device=t.device)
                logits = (h @ table.T).float()  # (chunk, N + 1)
                if seen is not None:
                    target_logits = logits[rows, t]
                    logits.masked_fill_(seen.of_rows(start, start + chunk), float("-inf"))
                    logits[rows, t] = target_logits
                logits[:, 0] = float("-inf")
                probs = logits.softmax(dim=1)
                total -= probs[rows, t].clamp_min(tiny).log().sum()
                probs[rows, t] -= 1.0  # softmax - one_hot(target) = d(sum of losses) / d(logits)
                grad_logits = probs.to(dtype)
                grad_hidden[start : start + chunk] = grad_logits @ table
                grad_items += grad_logits.T @ h
        ctx.save_for_backward((grad_hidden / count).to(hidden.dtype), (grad_items / count).to(items.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_items = ctx.saved_tensors
        return grad_hidden * grad_output, None, grad_items * grad_output, None, None, None


class FullSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over the whole catalog (SASRec+ / BERT4Rec), chunked to bound memory.

    Args:
        max_logits: most logits held at once; rows per chunk = ``max_logits // (N + 1)``. Each chunk
            also adds into the ``(N + 1, D)`` gradient, so chunks much shorter than ``D`` rows waste
            memory traffic: the default (2^24, 64 MB of fp32) gives a 54k-item catalog 308-row chunks.
        bf16: run the catalog matmuls in bfloat16 (fast on CPUs with AMX). They also follow an active
            bf16 autocast.
    """

    def __init__(self, max_logits: int = 2**24, bf16: bool = False) -> None:
        super().__init__()
        self.max_logits, self.bf16 = max_logits, bf16

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor, seen: SeenItems | None = None) -> Tensor:
        chunk = max(1, self.max_logits // items.shape[0])
        device = hidden.device.type
        autocast_bf16 = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16
        dtype = torch.bfloat16 if self.bf16 or autocast_bf16 else torch.float32
        return _ChunkedCrossEntropy.apply(hidden, targets, items, chunk, dtype, seen)


def uniform_negatives(count: int, items: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``count`` item ids drawn uniformly from ``1..N`` (``items`` is the ``(N + 1, D)`` table)."""
    return torch.randint(1, items.shape[0], (count,), device=items.device, generator=generator)


class SampledSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over the target and ``num_negatives`` uniform negatives.

    The negatives are shared by every position in the batch (one ``(P, D) @ (D, K)`` matmul); a
    negative equal to a position's target (with ``seen``, any in the position's sequence) is masked
    out. Uniform sampling makes the logQ correction a constant, so none is applied.

    Args:
        num_negatives: negatives per batch ``K`` (e.g. 256-3000).
    """

    def __init__(self, num_negatives: int = 256) -> None:
        super().__init__()
        self.num_negatives = num_negatives

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor, seen: SeenItems | None = None) -> Tensor:
        negatives = uniform_negatives(self.num_negatives, items)
        positive = (hidden * items[targets]).sum(-1, keepdim=True)  # (P, 1)
        excluded = negatives == targets[:, None] if seen is None else seen.of_shared(negatives)
        negative = (hidden @ items[negatives].T).masked_fill(excluded, float("-inf"))
        logits = torch.cat([positive, negative], dim=1).float()  # (P, 1 + K)
        return (logits.logsumexp(dim=1) - logits[:, 0]).mean()


class MixedSampledSoftmaxLoss(nn.Module):
    """Sampled softmax over in-batch and uniform negatives with the logQ correction, for large catalogs.

    Candidates shared by the batch: ``in_batch_negatives`` targets of the batch's own positions, drawn with
    replacement (so popular items come up as often as they are targets), and ``uniform_negatives`` ids
    drawn uniformly from the catalog (Mixed Negative Sampling, Yang et al., WWW 2020). Every logit,
    the target's included, is reduced by ``log E[count of the item among the candidates]`` (Yi et al.,
    RecSys 2019): ``K_b · c_j / P + K_u / N`` with ``c_j`` the item's count among the batch's ``P``
    targets. That is the exact proposal of this sampling given the batch, so no popularity table is
    needed and the item-side work is ``O(K_b + K_u)`` rows per step whatever the catalog size. A
    candidate equal to a position's target (with ``seen``, any in its sequence) is masked out there.

    Args:
        in_batch_negatives: candidates drawn from the batch's targets ``K_b``.
        uniform_negatives: candidates drawn uniformly from ``1..N`` ``K_u``.
        logq_correction: subtract the log expected count (``False`` = plain mixed sampled softmax).
    """

    def __init__(
        self, in_batch_negatives: int = 512, uniform_negatives: int = 512, logq_correction: bool = True
    ) -> None:
        super().__init__()
        if in_batch_negatives < 0 or uniform_negatives < 0 or in_batch_negatives + uniform_negatives == 0:
            raise ValueError(
                f"in_batch_negatives and uniform_negatives must be >= 0 with at least one candidate, "
                f"got {in_batch_negatives} and {uniform_negatives}"
            )
        self.in_batch_negatives, self.uniform_negatives = in_batch_negatives, uniform_negatives
        self.logq_correction = logq_correction

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor, seen: SeenItems | None = None) -> Tensor:
        count, num_items = len(targets), items.shape[0] - 1
        picks = torch.randint(0, count, (self.in_batch_negatives,), device=targets.device)
        candidates = torch.cat([targets[picks], uniform_negatives(self.uniform_negatives, items)])  # (C,)
        # one gather; when the table is the parameter itself (SASRec) its gradient is sparse, P + C rows instead
        # of all N + 1 (a slice of a table, as BERT4Rec's with its mask token, cannot take a sparse gradient)
        vectors = F.embedding(torch.cat([targets, candidates]), items, sparse=items.is_leaf)
        positive = (hidden * vectors[:count]).sum(-1, keepdim=True).float()  # (P, 1)
        negative = (hidden @ vectors[count:].T).float()  # (P, C)
        if self.logq_correction:  # counts among the batch's targets by binary search: no (N + 1,) table
            ordered = targets.sort().values

            def log_expected(ids: Tensor) -> Tensor:
                hits = torch.searchsorted(ordered, ids, right=True) - torch.searchsorted(ordered, ids)
                return (self.in_batch_negatives * hits.float() / count + self.uniform_negatives / num_items).log()

            positive = positive - log_expected(targets).unsqueeze(1)
            negative = negative - log_expected(candidates)
        excluded = candidates == targets[:, None] if seen is None else seen.of_shared(candidates)
        logits = torch.cat([positive, negative.masked_fill(excluded, float("-inf"))], dim=1)
        return (logits.logsumexp(dim=1) - logits[:, 0]).mean()

    def extra_repr(self) -> str:
        return (
            f"in_batch_negatives={self.in_batch_negatives}, uniform_negatives={self.uniform_negatives}, "
            f"logq_correction={self.logq_correction}"
        )


class BCELoss(nn.Module):
    """Binary cross-entropy with one uniform negative per position (the original SASRec).

    ``-log σ(s⁺) - log(1 - σ(s⁻))`` averaged over positions. Negatives are uniform over the catalog;
    with ``seen`` they are redrawn (up to ``redraws`` times) while inside the position's sequence, as
    the paper does. A negative equal to the target is then moved to the next id modulo ``N``.
    """

    redraws = 20

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor, seen: SeenItems | None = None) -> Tensor:
        num_items = items.shape[0] - 1
        negatives = uniform_negatives(len(targets), items)
        for _ in range(self.redraws if seen is not None else 0):
            inside = seen.of_each(negatives)
            if not inside.any():
                break
            negatives = torch.where(inside, uniform_negatives(len(targets), items), negatives)
        negatives = torch.where(negatives == targets, negatives % num_items + 1, negatives)
        positive = (hidden * items[targets]).sum(-1).float()
        negative = (hidden * items[negatives]).sum(-1).float()
        return (F.softplus(-positive) + F.softplus(negative)).mean()


class GBCELoss(nn.Module):
    """Generalised BCE of gSASRec (https://arxiv.org/abs/2308.07192).

    With ``K`` uniform negatives out of ``N - 1`` the sampling rate is ``α = K / (N - 1)`` and the
    positive probability is raised to ``β = α (t (1 - 1/α) + 1/α)``, which undoes the overconfidence
    that negative sampling causes (``t = 0`` is plain BCE, ``t = 1`` full calibration). Loss per
    position: ``-β log σ(s⁺) - Σₖ log(1 - σ(s⁻ₖ))``, averaged over positions. Negatives are shared
    across the batch; a negative equal to the target (with ``seen``, any in the sequence) is masked out.

    Args:
        num_negatives: negatives per batch ``K``.
        t: calibration parameter in ``[0, 1]``.
    """

    def __init__(self, num_negatives: int = 256, t: float = 0.75) -> None:
        super().__init__()
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"gBCE calibration t must be in [0, 1], got {t}")
        self.num_negatives, self.t = num_negatives, t

    def beta(self, num_items: int) -> float:
        alpha = self.num_negatives / (num_items - 1)
        return alpha * (self.t * (1.0 - 1.0 / alpha) + 1.0 / alpha)

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor, seen: SeenItems | None = None) -> Tensor:
        negatives = uniform_negatives(self.num_negatives, items)
        positive = (hidden * items[targets]).sum(-1).float()  # (P,)
        negative = (hidden @ items[negatives].T).float()  # (P, K)
        excluded = negatives == targets[:, None] if seen is None else seen.of_shared(negatives)
        negative_loss = F.softplus(negative).masked_fill(excluded, 0.0).sum(1)
        return (self.beta(items.shape[0] - 1) * F.softplus(-positive) + negative_loss).mean()
