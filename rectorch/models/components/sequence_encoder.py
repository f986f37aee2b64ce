"""One transformer backbone over item sequences, shared by SASRec (causal) and BERT4Rec (bidirectional).

Written in nanoGPT order: attention → feed-forward → block → encoder. Attention is
``F.scaled_dot_product_attention`` with a boolean mask, so the module exports with
``torch.onnx.export(dynamo=True)``: forward has no Python branches on tensor values.
Sequences are right-aligned (the newest item is the last column) and 0-padded.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Multi-head self-attention over a boolean ``allowed`` mask.

    Args:
        dim: model width ``D``.
        num_heads: heads; ``dim`` must be divisible by it.
        dropout: dropout on the output projection.
        attention_dropout: dropout on the attention weights (it forces SDPA's slower math kernel on CPU).

    Shapes:
        x: ``(B, L, D)``; allowed: ``(B, 1, L, L)`` (True = may attend) → ``(B, L, D)``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.attention_dropout = num_heads, attention_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor, context: Tensor | None = None) -> Tensor:
        """Queries from ``x``; keys and values from ``context`` (default ``x``), same shape."""
        B, L, D = x.shape
        if context is None:
            qkv = self.qkv(x)
        else:
            weight, bias = self.qkv.weight, self.qkv.bias
            qkv = torch.cat([F.linear(x, weight[:D], bias[:D]), F.linear(context, weight[D:], bias[D:])], dim=-1)
        q, k, v = qkv.view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(  # (B, nh, L, hs)
            q, k, v, attn_mask=allowed, dropout_p=self.attention_dropout if self.training else 0.0
        )
        return self.out_dropout(self.proj(y.transpose(1, 2).reshape(B, L, D)))


class FeedForward(nn.Module):
    """Position-wise two-layer MLP.

    Args:
        dim: model width ``D``.
        hidden: inner width (SASRec uses ``D``, BERT4Rec ``4 D``).
        activation: non-linearity module (``nn.ReLU()`` for SASRec, ``nn.GELU()`` for BERT4Rec).
        dropout: dropout after each layer.
    """

    def __init__(self, dim: int, hidden: int, activation: nn.Module, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), activation, nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Block(nn.Module):
    """Attention + feed-forward with residuals, LayerNorm before (pre-LN) or after (post-LN) each.

    ``query_norm_only`` is the block of the original SASRec code: only the attention queries are
    normalised (keys and values read the raw stream), the residual adds to the normalised queries, and
    the feed-forward reads and adds to a normalised stream.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden: int,
        activation: nn.Module,
        dropout: float,
        attention_dropout: float,
        pre_norm: bool,
        query_norm_only: bool = False,
    ) -> None:
        super().__init__()
        self.pre_norm, self.query_norm_only = pre_norm, query_norm_only
        self.ln_attn, self.ln_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout, attention_dropout)
        self.ffn = FeedForward(dim, hidden, activation, dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        if self.query_norm_only:
            q = self.ln_attn(x)
            x = self.ln_ffn(q + self.attn(q, allowed, context=x))
            return x + self.ffn(x)
        if self.pre_norm:
            x = x + self.attn(self.ln_attn(x), allowed)
            return x + self.ffn(self.ln_ffn(x))
        x = self.ln_attn(x + self.attn(x, allowed))
        return self.ln_ffn(x + self.ffn(x))


class SequenceEncoder(nn.Module):
    """Item sequences → one hidden vector per position.

    Item embedding (row 0 = padding, then ``num_items`` items, then ``extra_tokens`` special rows such
    as BERT4Rec's [MASK]), learnable positions, ``num_blocks`` transformer blocks. Padding keys are
    never attended to; a padding query attends to itself only, so every row of the attention is finite
    and padded positions never influence real ones.

    Args:
        num_items: catalog size; item ids are ``1..num_items``.
        max_len: longest sequence (number of position embeddings).
        dim: model width ``D``.
        num_blocks: transformer blocks.
        num_heads: attention heads per block.
        dropout: embedding, attention-output and feed-forward dropout.
        attention_dropout: dropout on attention weights (default: ``dropout``, as in both papers).
        causal: position ``t`` sees only positions ``≤ t`` (SASRec) or all of them (BERT4Rec).
        pre_norm: pre-LN blocks plus a final LayerNorm, else post-LN blocks after an embedding LayerNorm.
        ffn_hidden: feed-forward inner width (default ``dim``).
        activation: feed-forward non-linearity (default ``nn.ReLU()``).
        extra_tokens: special embedding rows after the items.
        scale_embeddings: multiply item embeddings by ``sqrt(D)`` (as SASRec does).
        positions_from_start: number positions from each sequence's first real item (0, 1, ...), so a
            causal prefix's positions do not depend on how many items follow it; else from the right end
            (the newest item is always position ``max_len - 1``, as in the original SASRec code).
        query_norm_only: pre-LN blocks as in the original SASRec code (see :class:`Block`).
        init_std: normal init std of the embeddings and of every linear weight (biases zero);
            ``None`` = embeddings ``N(0, 1/D)`` and PyTorch's default linear init.
        xavier_qkv: with ``init_std``, the fused query/key/value projection keeps the Xavier-uniform
            init of ``torch.nn.MultiheadAttention`` (as the reference SASRec+ code does), since
            ``N(0, 0.02)`` queries and keys start with near-uniform attention.

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
        pre_norm: bool = True,
        ffn_hidden: int | None = None,
        activation: nn.Module | None = None,
        extra_tokens: int = 0,
        scale_embeddings: bool = True,
        positions_from_start: bool = False,
        query_norm_only: bool = False,
        init_std: float | None = None,
        xavier_qkv: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_blocks", num_blocks), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"encoder.{name} must be a positive integer, got {value!r}")
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if value is not None and not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise ValueError(f"encoder.{name} must lie in [0, 1), got {value!r}")
        if query_norm_only and not pre_norm:
            raise ValueError("query_norm_only is a pre-LN block: it needs pre_norm=true")
        self.num_items, self.max_len, self.dim = num_items, max_len, dim
        self.causal, self.pre_norm = causal, pre_norm
        self.positions_from_start, self.init_std, self.xavier_qkv = positions_from_start, init_std, xavier_qkv
        self.scale = math.sqrt(dim) if scale_embeddings else 1.0
        self.item_embedding = nn.Embedding(num_items + 1 + extra_tokens, dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        activation = nn.ReLU() if activation is None else activation
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, ffn_hidden or dim, activation, dropout, attention_dropout, pre_norm, query_norm_only)
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_encoder(self, [block.attn.qkv.weight for block in self.blocks])

    def attention_mask(self, items: Tensor) -> Tensor:
        """Boolean ``(B, 1, L, L)`` mask: real keys (causal if set), plus each position itself."""
        L = items.shape[1]
        eye = torch.eye(L, dtype=torch.bool, device=items.device)
        allowed = (items != 0)[:, None, None, :]  # (B, 1, 1, L)
        if self.causal:
            allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
        return allowed | eye

    def position_vectors(self, items: Tensor) -> Tensor:
        """``(B, L, D)`` from the first real item, or ``(L, D)`` counted from the right end."""
        if self.positions_from_start:
            index = ((items != 0).long().cumsum(dim=1) - 1).clamp(min=0)
            return self.position_embedding(index)
        return self.position_embedding.weight[self.max_len - items.shape[1] :]

    def forward(self, items: Tensor) -> Tensor:
        x = self.item_embedding(items) * self.scale + self.position_vectors(items)
        if not self.pre_norm:
            x = self.norm(x)
        x = self.dropout(x)
        allowed = self.attention_mask(items)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x) if self.pre_norm else x


def reset_encoder(encoder: nn.Module, qkv_weights: list[torch.Tensor]) -> None:
    """The sequence encoders' initialisation: embeddings N(0, init_std) (N(0, 1/D) when null), block linears
    N(0, init_std) with zero bias when set, ``qkv_weights`` Xavier-uniform with ``xavier_qkv``, padding row zero."""
    std = encoder.dim**-0.5 if encoder.init_std is None else encoder.init_std
    nn.init.normal_(encoder.item_embedding.weight, std=std)
    nn.init.normal_(encoder.position_embedding.weight, std=std)
    if encoder.init_std is not None:
        for module in encoder.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=encoder.init_std)
                nn.init.zeros_(module.bias)
        if encoder.xavier_qkv:
            for weight in qkv_weights:
                nn.init.xavier_uniform_(weight)
    with torch.no_grad():
        encoder.item_embedding.weight[0].zero_()
