"""Next-item losses for sequence models, injected as objects (``model.loss._target_``).

Every loss has one signature: ``loss(hidden, targets, items)`` with the hidden states gathered at
the positions that have a target, their target ids, and the item table whose row ``i`` scores item
``i`` (row 0 = padding, never a candidate). Only target positions reach a loss, so padding costs
nothing here.

Shapes:
    hidden: ``(P, D)``; targets: ``(P,)`` in ``1..N``; items: ``(N + 1, D)`` → scalar.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over the whole catalog, at most ``chunk`` rows of logits at a time.

    Gradients are computed chunk by chunk during the forward pass (the loss is a scalar, so backward
    only rescales them): no ``(P, N)`` matrix is ever stored for autograd, and no logits are
    recomputed. Matmuls follow the active autocast (bf16 on CPUs with AMX); the softmax runs in fp32.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, targets: Tensor, items: Tensor, chunk: int) -> Tensor:
        count = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_items = torch.zeros(items.shape, dtype=torch.float32, device=items.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, count, chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (h @ items.T).float()  # (chunk, N + 1)
            logits[:, 0] = float("-inf")
            log_probs = logits.log_softmax(dim=1)
            rows = torch.arange(len(t), device=t.device)
            total -= log_probs[rows, t].sum()
            grad_logits = log_probs.exp_()  # softmax - one_hot(target) is d(sum of losses)/d logits
            grad_logits[rows, t] -= 1.0
            grad_hidden[start : start + chunk] = grad_logits @ items.to(grad_logits.dtype)
            grad_items += grad_logits.T @ h.to(grad_logits.dtype)
        ctx.save_for_backward(grad_hidden / count, (grad_items / count).to(items.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_items = ctx.saved_tensors
        return grad_hidden * grad_output, None, grad_items * grad_output, None


class FullSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over the whole catalog (SASRec+ / BERT4Rec), chunked to bound memory.

    Args:
        max_logits: most logits held at once; rows per chunk = ``max_logits // (N + 1)``
            (default 2^22 ≈ 16 MB of fp32, so a 54k-item catalog uses 77-row chunks).
    """

    def __init__(self, max_logits: int = 2**22) -> None:
        super().__init__()
        self.max_logits = max_logits

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        chunk = max(1, self.max_logits // items.shape[0])
        return _ChunkedCrossEntropy.apply(hidden, targets, items, chunk)


def uniform_negatives(count: int, items: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``count`` item ids drawn uniformly from ``1..N`` (``items`` is the ``(N + 1, D)`` table)."""
    return torch.randint(1, items.shape[0], (count,), device=items.device, generator=generator)


class SampledSoftmaxLoss(nn.Module):
    """Softmax cross-entropy over the target and ``num_negatives`` uniform negatives.

    The negatives are shared by every position in the batch (one ``(P, D) @ (D, K)`` matmul); a
    negative equal to a position's target is masked out. Uniform sampling makes the logQ
    correction a constant, so none is applied.

    Args:
        num_negatives: negatives per batch ``K`` (e.g. 256-3000).
    """

    def __init__(self, num_negatives: int = 256) -> None:
        super().__init__()
        self.num_negatives = num_negatives

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        negatives = uniform_negatives(self.num_negatives, items)
        positive = (hidden * items[targets]).sum(-1, keepdim=True)  # (P, 1)
        negative = (hidden @ items[negatives].T).masked_fill(negatives == targets[:, None], float("-inf"))
        logits = torch.cat([positive, negative], dim=1).float()  # (P, 1 + K)
        return (logits.logsumexp(dim=1) - logits[:, 0]).mean()


class BCELoss(nn.Module):
    """Binary cross-entropy with one uniform negative per position (the original SASRec).

    ``-log σ(s⁺) - log(1 - σ(s⁻))`` averaged over positions. Negatives are uniform over the catalog
    (the paper excludes the user's history; here only the position's own target is excluded, by
    resampling it as the next id modulo ``N``).
    """

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        num_items = items.shape[0] - 1
        negatives = uniform_negatives(len(targets), items)
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
    across the batch; a negative equal to the target is masked out.

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

    def forward(self, hidden: Tensor, targets: Tensor, items: Tensor) -> Tensor:
        negatives = uniform_negatives(self.num_negatives, items)
        positive = (hidden * items[targets]).sum(-1).float()  # (P,)
        negative = (hidden @ items[negatives].T).float()  # (P, K)
        negative_loss = F.softplus(negative).masked_fill(negatives == targets[:, None], 0.0).sum(1)
        return (self.beta(items.shape[0] - 1) * F.softplus(-positive) + negative_loss).mean()
