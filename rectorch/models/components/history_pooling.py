"""History poolers for the user tower: a right-aligned history of item embeddings → one vector.

Histories are right-aligned (the most recent item in the last column) and 0-padded, as
``PairView`` builds them, so "recency" is the distance from the last column. Both poolers return
zeros-safe outputs for an empty history (a brand-new user).
"""

import torch
from torch import Tensor, nn


class MeanPooling(nn.Module):
    """Mean of the history embeddings, optionally recency-weighted.

    With ``recency=True`` each distance from the most recent item has a learned logit (initialised to
    0, i.e. a plain mean) and the weights are the softmax of the logits over the valid positions.

    Args:
        dim: item embedding size.
        max_len: history length ``N``.
        recency: learn a weight per distance from the most recent item.

    Shapes:
        history ``(B, N, dim)``, mask ``(B, N)`` bool → ``(B, dim)``.
    """

    def __init__(self, dim: int, max_len: int, recency: bool = True) -> None:
        super().__init__()
        self.out_dim = dim
        self.recency = nn.Parameter(torch.zeros(max_len)) if recency else None

    def forward(self, history: Tensor, mask: Tensor) -> Tensor:
        if self.recency is None:
            weights = mask.float()
        else:
            logits = self.recency[: mask.shape[1]].flip(0).expand_as(mask)  # column -1 = distance 0
            weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1).nan_to_num(0.0)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-9)
        return torch.einsum("bn,bnd->bd", weights, history)


class AttentionPooling(nn.Module):
    """Multi-head attention over the history with recency embeddings, queried by the most recent item.

    Each history item gets a learned embedding of its distance from the most recent item. One query
    per user (a learned vector plus a projection of the most recent item) attends over the history and
    a learned "null" item, so an empty history attends to the null item only. With a single query the
    key and value projections fold into the query and the output (``qᵀW_k k = (W_kᵀq)ᵀk``), so the cost
    is ``O(B · N · D)`` instead of projecting every history item. The output concatenates the attended
    vector with the most recent item, which carries most of the next-item signal.

    Args:
        dim: item embedding size.
        max_len: history length ``N``.
        num_heads: attention heads (must divide ``dim``).

    Shapes:
        history ``(B, N, dim)``, mask ``(B, N)`` bool → ``(B, 2 * dim)``.
    """

    def __init__(self, dim: int, max_len: int, num_heads: int = 2) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.out_dim, self.num_heads = 2 * dim, num_heads
        self.positions = nn.Embedding(max_len, dim)
        self.null = nn.Parameter(torch.zeros(1, 1, dim))
        self.query = nn.Parameter(torch.zeros(1, dim))
        self.query_proj = nn.Linear(dim, dim)
        self.keys = nn.Linear(dim, dim, bias=False)
        self.values = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, history: Tensor, mask: Tensor) -> Tensor:
        batch, length, dim = history.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        distance = length - 1 - torch.arange(length, device=history.device)
        tokens = torch.cat([self.null.expand(batch, -1, -1), history + self.positions(distance)], dim=1)  # (B, N+1, D)
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        latest = history[:, -1] * mask[:, -1:]  # (B, D), zero for an empty history
        query = (self.query + self.query_proj(latest)).view(batch, heads, head_dim)
        folded = torch.einsum("bhe,hed->bhd", query, self.keys.weight.view(heads, head_dim, dim))  # (B, H, D)
        scores = torch.einsum("bhd,bnd->bhn", folded, tokens) / head_dim**0.5
        weights = torch.softmax(scores.masked_fill(~valid.unsqueeze(1), float("-inf")), dim=-1)
        context = torch.einsum("bhn,bnd->bhd", weights, tokens)  # (B, H, D)
        attended = torch.einsum("bhd,hed->bhe", context, self.values.weight.view(heads, head_dim, dim))
        return torch.cat([self.out(attended.reshape(batch, dim)), latest], dim=-1)
