"""SequenceEncoder: causality, padding invariance, bidirectional mixing, shapes."""

import math

import pytest
import torch

from rectorch.models.components.sequence_encoder import SequenceEncoder


def make(causal: bool, pre_norm: bool = True, **kwargs) -> SequenceEncoder:
    torch.manual_seed(0)
    encoder = SequenceEncoder(num_items=20, max_len=8, dim=16, num_heads=2, causal=causal, pre_norm=pre_norm, **kwargs)
    return encoder.eval()


@pytest.mark.parametrize("pre_norm, query_norm_only", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("positions_from_start", [True, False])
def test_causal_output_ignores_later_items(pre_norm: bool, query_norm_only: bool, positions_from_start: bool) -> None:
    encoder = make(
        causal=True, pre_norm=pre_norm, query_norm_only=query_norm_only, positions_from_start=positions_from_start
    )
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = items.clone()
    changed[0, 5] = 19
    a, b = encoder(items), encoder(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_bidirectional_output_sees_later_items() -> None:
    encoder = make(causal=False)
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = items.clone()
    changed[0, 7] = 19
    assert not torch.allclose(encoder(items)[:, 2], encoder(changed)[:, 2])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions_from_start", [True, False])
@pytest.mark.parametrize("query_norm_only", [True, False])
def test_padding_invariance(causal: bool, positions_from_start: bool, query_norm_only: bool) -> None:
    encoder = make(causal=causal, positions_from_start=positions_from_start, query_norm_only=query_norm_only)
    short = torch.tensor([[0, 0, 0, 0, 0, 5, 6, 7]])
    trimmed = short[:, -4:]
    other_padding = short.clone()
    other_padding[0, :5] = 0
    full = encoder(short)
    torch.testing.assert_close(full[:, -3:], encoder(trimmed)[:, -3:])
    batch = torch.cat([short, torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])])
    torch.testing.assert_close(encoder(batch)[:1, -3:], full[:, -3:])
    assert torch.isfinite(full).all()


def test_shapes_and_extra_tokens() -> None:
    encoder = make(causal=False, extra_tokens=1, ffn_hidden=32, activation=torch.nn.GELU())
    assert encoder.item_embedding.num_embeddings == 22
    assert encoder(torch.tensor([[0, 21, 3]])).shape == (1, 3, 16)


def test_heads_must_divide_dim() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SequenceEncoder(num_items=5, max_len=4, dim=10, num_heads=3)


def test_positions_from_start_make_a_prefix_independent_of_what_follows() -> None:
    prefix = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    longer = torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7]])
    from_start = make(causal=True, positions_from_start=True)
    torch.testing.assert_close(from_start(prefix)[:, 5:], from_start(longer)[:, 3:6])
    from_end = make(causal=True)
    assert not torch.allclose(from_end(prefix)[:, 5:], from_end(longer)[:, 3:6])


def test_init_std_sets_embeddings_and_linear_weights() -> None:
    encoder = SequenceEncoder(num_items=2000, max_len=8, dim=64, init_std=0.02)
    assert encoder.item_embedding.weight[1:].std().item() == pytest.approx(0.02, rel=0.05)
    assert encoder.item_embedding.weight[0].abs().sum() == 0
    qkv = encoder.blocks[0].attn.qkv
    assert qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert qkv.bias.abs().sum() == 0


def test_xavier_qkv_keeps_multihead_attention_init() -> None:
    encoder = SequenceEncoder(num_items=2000, max_len=8, dim=64, init_std=0.02, xavier_qkv=True)
    bound = math.sqrt(6 / (64 + 3 * 64))  # Xavier-uniform on the fused (3D, D) weight
    qkv = encoder.blocks[1].attn.qkv.weight
    assert qkv.abs().max().item() <= bound and qkv.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert encoder.blocks[1].attn.proj.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_query_norm_only_block_reads_raw_keys_and_values() -> None:
    encoder = make(causal=True, query_norm_only=True)
    block = encoder.blocks[0]
    x = torch.randn(2, 5, 16) * 3 + 1
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]
    q = block.ln_attn(x)
    expected = block.ln_ffn(q + block.attn(q, allowed, context=x))
    torch.testing.assert_close(block(x, allowed), expected + block.ffn(expected))
    assert not torch.allclose(block.attn(q, allowed, context=x), block.attn(q, allowed))
    with pytest.raises(ValueError, match="pre_norm"):
        SequenceEncoder(num_items=5, max_len=4, dim=8, pre_norm=False, query_norm_only=True)
