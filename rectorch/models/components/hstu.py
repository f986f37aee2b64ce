"""An HSTU-style sequence encoder: a drop-in alternative to :class:`SequenceEncoder` (``model/encoder=hstu``).

After Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for
Generative Recommendations" (ICML 2024). One block is

    U, V, Q, K = split(SiLU(f1(Norm(X))))
    A = SiLU(Q Kᵀ + rab) / n ⊙ mask          pointwise aggregated attention: no softmax, n = max_len
    Y = X + f2(Norm(A V) ⊙ U)                 the attention output is gated by U

``rab`` is a learned relative attention bias over the bucketed distance between query and key positions,
one scalar per head and bucket in every block. Dividing by the constant ``max_len`` (not the number of
attended items) keeps an item's output independent of how much padding precedes it.

The paper's time bias (bucketed log time gaps) is left out: ``SequenceView`` hands models item histories
only, and serving encodes ``history`` alone, so timestamps would have to travel through the view, the
training batch, the export inputs and the serving encoder first.

Sequences are right-aligned and 0-padded, as for :class:`SequenceEncoder`; forward has no Python branch on
tensor values, so it exports with ``torch.onnx.export(dynamo=True)`` and a dynamic history length.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rectorch.models.components.sequence_encoder import reset_encoder


def relative_position_buckets(max_len: int, num_buckets: int, causal: bool) -> Tensor:
    """``(max_len, max_len)`` bucket of the distance ``d = query − key`` for every position pair.

    Distances below ``num_buckets // 2`` get a bucket each, longer ones share log-spaced buckets up to
    ``max_len``; with ``num_buckets ≥ max_len`` every distance has its own. Bidirectionally, keys after
    the query (``d < 0``) use a second set of ``num_buckets`` buckets.
    """
    num_buckets = min(num_buckets, max_len)
    position = torch.arange(max_len)
    distance = position[:, None] - position[None, :]
    size = distance.abs()
    exact = num_buckets if num_buckets == max_len else num_buckets // 2
    spread = torch.log(size.clamp(min=1).double() / exact) / math.log(max_len / exact) * (num_buckets - exact)
    bucket = torch.where(size < exact, size, (exact + spread.long()).clamp(max=num_buckets - 1))
    return bucket if causal else bucket + num_buckets * (distance < 0).long()


class HSTUBlock(nn.Module):
    """One HSTU layer with a residual (see the module docstring).

    Args:
        dim: model width ``D``.
        num_heads: heads ``H``.
        attention_dim: query/key width per head.
        linear_dim: value/gate width per head.
        num_biases: relative-position buckets (both directions counted).
        dropout: dropout on the gated attention output, before ``f2``.
        attention_dropout: dropout on the pointwise attention weights.

    Shapes:
        x: ``(B, L, D)``; mask: ``(B, 1, L, L)`` float, ``1 / n`` where a query may read a key, else 0;
        buckets: ``(L, L)`` long → ``(B, L, D)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attention_dim: int,
        linear_dim: int,
        num_biases: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.num_heads, self.attention_dim, self.linear_dim = num_heads, attention_dim, linear_dim
        self.norm_in = nn.LayerNorm(dim)
        self.uvqk = nn.Linear(dim, 2 * num_heads * (linear_dim + attention_dim))
        self.position_bias = nn.Parameter(torch.zeros(num_heads, num_biases))
        self.norm_attention = nn.LayerNorm(num_heads * linear_dim, eps=1e-6)  # A V is small: n scales it down
        self.proj = nn.Linear(num_heads * linear_dim, dim)
        self.attention_dropout, self.dropout = nn.Dropout(attention_dropout), nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, buckets: Tensor) -> Tensor:
        B, L, _ = x.shape
        H, dv, dqk = self.num_heads, self.linear_dim, self.attention_dim
        u, v, q, k = F.silu(self.uvqk(self.norm_in(x))).split([H * dv, H * dv, H * dqk, H * dqk], dim=-1)
        q, k = (t.view(B, L, H, dqk).transpose(1, 2) for t in (q, k))  # (B, H, L, dqk)
        scores = q @ k.transpose(-2, -1) + self.position_bias[:, buckets]  # (B, H, L, L)
        weights = self.attention_dropout(F.silu(scores) * mask)
        attended = (weights @ v.view(B, L, H, dv).transpose(1, 2)).transpose(1, 2).reshape(B, L, H * dv)
        return x + self.proj(self.dropout(u * self.norm_attention(attended)))


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"encoder.{name} must be a positive integer, got {value!r}")


class HSTUEncoder(nn.Module):
    """Item sequences → one hidden vector per position, through HSTU blocks.

    The same constructor contract, attributes (``item_embedding``, ``max_len``) and shapes as
    :class:`~rectorch.models.components.sequence_encoder.SequenceEncoder`, so SASRec (``causal=True``) and
    BERT4Rec (``causal=False``, one extra token) complete it the same way. Item embedding (row 0 =
    padding) plus learned absolute positions, ``num_blocks`` HSTU blocks, a final LayerNorm. Padding keys
    get zero attention weight; a padding query reads nothing.

    Args:
        num_items: catalog size; item ids are ``1..num_items``.
        max_len: longest sequence; also the attention's ``1 / n`` scale.
        dim: model width ``D``.
        num_blocks: HSTU blocks.
        num_heads: attention heads per block.
        dropout: embedding dropout and dropout before each block's output projection.
        attention_dropout: dropout on the attention weights (default: ``dropout``).
        causal: position ``t`` sees only positions ``≤ t`` (SASRec) or all of them (BERT4Rec).
        attention_dim: query/key width per head (default ``dim // num_heads``).
        linear_dim: value/gate width per head (default ``dim // num_heads``).
        position_buckets: relative-position buckets per direction (see :func:`relative_position_buckets`).
        extra_tokens: special embedding rows after the items (BERT4Rec's [MASK]).
        scale_embeddings: multiply item embeddings by ``sqrt(D)``.
        positions_from_start: number absolute positions from each sequence's first real item; else from
            the right end.
        init_std: normal init std of the embeddings and linear weights (biases zero); ``None`` =
            embeddings ``N(0, 1/D)`` and PyTorch's default linear init.
        xavier_qkv: with ``init_std``, the fused U/V/Q/K projection gets Xavier-uniform init instead.

    Shapes:
        items: ``(B, L)`` with ``L ≤ max_len``, right-aligned → ``(B, L, D)``.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int,
        dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        attention_dropout: float | None = None,
        causal: bool = True,
        attention_dim: int | None = None,
        linear_dim: int | None = None,
        position_buckets: int = 32,
        extra_tokens: int = 0,
        scale_embeddings: bool = True,
        positions_from_start: bool = True,
        init_std: float | None = None,
        xavier_qkv: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("max_len", max_len), ("dim", dim), ("num_blocks", num_blocks), ("num_heads", num_heads)):
            _check_positive(name, value)
        if (attention_dim is None or linear_dim is None) and dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}: set attention_dim and linear_dim")
        attention_dim = dim // num_heads if attention_dim is None else attention_dim
        linear_dim = dim // num_heads if linear_dim is None else linear_dim
        for name, value in (("attention_dim", attention_dim), ("linear_dim", linear_dim)):
            _check_positive(name, value)
        _check_positive("position_buckets", position_buckets)
        if position_buckets < 2:
            raise ValueError(f"encoder.position_buckets must be at least 2, got {position_buckets}")
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if value is not None and not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise ValueError(f"encoder.{name} must lie in [0, 1), got {value!r}")
        self.num_items, self.max_len, self.dim, self.causal = num_items, max_len, dim, causal
        self.positions_from_start, self.init_std, self.xavier_qkv = positions_from_start, init_std, xavier_qkv
        self.scale = math.sqrt(dim) if scale_embeddings else 1.0
        self.item_embedding = nn.Embedding(num_items + 1 + extra_tokens, dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        buckets = relative_position_buckets(max_len, position_buckets, causal)
        self.register_buffer("buckets", buckets, persistent=False)
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.blocks = nn.ModuleList(
            HSTUBlock(dim, num_heads, attention_dim, linear_dim, int(buckets.max()) + 1, dropout, attention_dropout)
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_encoder(self, [block.uvqk.weight for block in self.blocks])

    def attention_mask(self, items: Tensor, dtype: torch.dtype) -> Tensor:
        """``(B, 1, L, L)``: ``1 / max_len`` where a query may read a key (a real one, earlier if causal), else 0."""
        L = items.shape[1]
        allowed = (items != 0)[:, None, None, :]  # (B, 1, 1, L)
        if self.causal:
            allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
        return allowed.to(dtype) / self.max_len

    def position_vectors(self, items: Tensor) -> Tensor:
        """``(B, L, D)`` from the first real item, or ``(L, D)`` counted from the right end."""
        if self.positions_from_start:
            index = ((items != 0).long().cumsum(dim=1) - 1).clamp(min=0)
            return self.position_embedding(index)
        return self.position_embedding.weight[self.max_len - items.shape[1] :]

    def forward(self, items: Tensor) -> Tensor:
        L = items.shape[1]
        x = self.dropout(self.item_embedding(items) * self.scale + self.position_vectors(items))
        mask, buckets = self.attention_mask(items, x.dtype), self.buckets[:L, :L]
        for block in self.blocks:
            x = block(x, mask, buckets)
        return self.norm(x)
