"""HSTUEncoder: the block against a per-pair reference, buckets, causality, padding, SASRec training, ONNX export."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rectorch.models.components.hstu import HSTUBlock, HSTUEncoder, relative_position_buckets
from tests.export.conftest import compose_config

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*self.log.*"),
    pytest.mark.filterwarnings("ignore:.*configure_optimizers.*"),
]

SMALL = [
    "data.source.num_users=300",
    "data.source.num_items=120",
    "data.batch_size=64",
    "logger=none",
    "callbacks=none",
    "+trainer.enable_progress_bar=false",
]


def make(causal: bool = True, **kwargs) -> HSTUEncoder:
    torch.manual_seed(0)
    return HSTUEncoder(num_items=20, max_len=8, dim=16, num_heads=2, causal=causal, **kwargs).eval()


def test_buckets_are_exact_then_log_spaced() -> None:
    buckets = relative_position_buckets(200, 32, causal=True)
    distance = torch.arange(200)
    by_distance = buckets[distance, 0]  # query t, key 0: distance t
    assert by_distance[:16].tolist() == list(range(16))
    assert (by_distance.diff() >= 0).all() and by_distance.max() == 31 and len(by_distance.unique()) == 32
    assert torch.equal(buckets[50:60, 40:50], buckets[10:20, :10])  # depends on the distance only
    assert torch.equal(relative_position_buckets(8, 32, causal=True)[:, 0], torch.arange(8))
    both = relative_position_buckets(6, 4, causal=False)
    assert (both[1, 2:] >= 4).all() and (both.tril() < 4).all()
    assert both[0, 3] == both[3, 0] + 4  # keys after the query use the second set


def test_block_matches_a_per_pair_reference() -> None:
    """SiLU(q·k + rab) / n over allowed pairs, no softmax; output gated by u; residual."""
    torch.manual_seed(0)
    n, L, H, dqk, dv = 10, 5, 2, 3, 4
    block = HSTUBlock(
        dim=6, num_heads=H, attention_dim=dqk, linear_dim=dv, num_biases=5, dropout=0.0, attention_dropout=0.0
    ).eval()
    torch.nn.init.normal_(block.position_bias)
    x, buckets = torch.randn(1, L, 6), relative_position_buckets(L, 5, causal=True)
    allowed = torch.ones(L, L).tril()
    allowed[:, 0] = 0  # key 0 is padding
    mask = (allowed / n)[None, None]
    u, v, q, k = F.silu(block.uvqk(block.norm_in(x[0]))).split([H * dv, H * dv, H * dqk, H * dqk], dim=-1)
    q, k, v = q.view(L, H, dqk), k.view(L, H, dqk), v.view(L, H, dv)
    attended = torch.zeros(L, H, dv)
    for i in range(L):
        for h in range(H):
            for j in range(L):
                if allowed[i, j]:
                    score = q[i, h] @ k[j, h] + block.position_bias[h, buckets[i, j]]
                    attended[i, h] += F.silu(score) / n * v[j, h]
    attended = attended.view(L, H * dv)
    expected = x[0] + block.proj(u * block.norm_attention(attended))
    torch.testing.assert_close(block(x, mask, buckets)[0], expected)


@pytest.mark.parametrize("positions_from_start", [True, False])
def test_causal_output_ignores_later_items(positions_from_start: bool) -> None:
    encoder = make(causal=True, positions_from_start=positions_from_start)
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = items.clone()
    changed[0, 5] = 19
    a, b = encoder(items), encoder(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_bidirectional_output_sees_later_items() -> None:
    encoder = make(causal=False, extra_tokens=1)
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 21]])
    changed = items.clone()
    changed[0, 6] = 19
    assert not torch.allclose(encoder(items)[:, 2], encoder(changed)[:, 2])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions_from_start", [True, False])
def test_padding_invariance(causal: bool, positions_from_start: bool) -> None:
    encoder = make(causal=causal, positions_from_start=positions_from_start)
    short = torch.tensor([[0, 0, 0, 0, 0, 5, 6, 7]])
    full = encoder(short)
    torch.testing.assert_close(full[:, -3:], encoder(short[:, -4:])[:, -3:])
    batch = torch.cat([short, torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])])
    torch.testing.assert_close(encoder(batch)[:1, -3:], full[:, -3:])
    assert torch.isfinite(full).all()


def test_bad_arguments_name_the_key() -> None:
    with pytest.raises(ValueError, match="divisible"):
        HSTUEncoder(num_items=5, max_len=4, dim=10, num_heads=3)
    assert HSTUEncoder(num_items=5, max_len=4, dim=10, num_heads=3, attention_dim=4, linear_dim=4)(
        torch.tensor([[0, 1, 2]])
    ).shape == (1, 3, 10)
    with pytest.raises(ValueError, match="position_buckets"):
        HSTUEncoder(num_items=5, max_len=4, position_buckets=1)
    with pytest.raises(ValueError, match=r"encoder\.dropout"):
        HSTUEncoder(num_items=5, max_len=4, dropout=1.5)


def test_init_std_and_xavier_on_the_fused_projection() -> None:
    encoder = HSTUEncoder(num_items=2000, max_len=8, dim=64, init_std=0.02, xavier_qkv=True)
    assert encoder.item_embedding.weight[1:].std().item() == pytest.approx(0.02, rel=0.05)
    assert encoder.item_embedding.weight[0].abs().sum() == 0
    assert encoder.blocks[0].proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    bound = (6 / (64 + 256)) ** 0.5
    assert encoder.blocks[0].uvqk.weight.abs().max().item() <= bound


@pytest.fixture(scope="module")
def hstu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """SASRec with ``model/encoder=hstu``, 2 epochs on the small synthetic data: (results, run dir)."""
    from rectorch.training.train import train

    root = tmp_path_factory.mktemp("hstu")
    overrides = [*SMALL, "model=sasrec", "model/encoder=hstu", "trainer.max_epochs=2", f"paths.log_dir={root}/logs"]
    cfg = compose_config("train", overrides, root / "run")
    assert cfg.model.encoder._target_ == "rectorch.models.components.hstu.HSTUEncoder"
    return train(cfg), root / "run"


def test_sasrec_with_hstu_learns_the_planted_successors(hstu_run: tuple[dict, Path], tmp_path: Path) -> None:
    from rectorch.training.train import train

    results, _ = hstu_run
    cfg = compose_config("train", [*SMALL, "model=popularity", f"paths.log_dir={tmp_path}/logs"], tmp_path / "run")
    popularity = train(cfg)["val"]["ndcg@10"]
    assert results["val"]["ndcg@10"] > 2 * popularity, (results["val"], popularity)


def test_hstu_exports_with_a_dynamic_history_and_serves_like_torch(hstu_run: tuple[dict, Path], tmp_path: Path) -> None:
    from rectorch.export.cli import export
    from rectorch.runs import load_run
    from rectorch.serving import Recommender, read_manifest

    _, run_dir = hstu_run
    overrides = [f"run_dir={run_dir}", f"bundle_dir={tmp_path / 'bundle'}", "quality_users=100", "export/quantize=none"]
    bundle = export(compose_config("export", overrides, tmp_path))
    manifest = read_manifest(bundle)
    assert manifest.validation["max_abs_diff"] <= 1e-4 and manifest.validation["queries"] > 0
    assert manifest.inputs[0].shape == ["batch", "length"]

    model = load_run(run_dir).model.eval()
    encoder = Recommender.from_bundle(bundle).encoder
    history = np.arange(1, 8)  # unpadded, shorter than max_len
    padded = torch.zeros(1, model.encoder.max_len, dtype=torch.long)
    padded[0, -7:] = torch.from_numpy(history)
    with torch.no_grad():
        expected = model.encode_query(history=padded).numpy()
    np.testing.assert_allclose(encoder.encode([history], [None]), expected, atol=1e-4)
