"""BERT4RecModule: masking correctness, the inference [MASK], shapes, overfitting one batch."""

import functools

import pytest
import torch

from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.bert4rec import BERT4RecModule, mask_items
from rectorch.models.components.sequence_encoder import SequenceEncoder
from rectorch.models.components.sequence_losses import FullSoftmaxLoss, MixedSampledSoftmaxLoss, SampledSoftmaxLoss
from rectorch.models.sasrec import trim_padding

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*")


def make(loss: torch.nn.Module | None = None, mask_prob: float = 0.3) -> BERT4RecModule:
    torch.manual_seed(0)
    encoder = functools.partial(SequenceEncoder, dim=32, num_blocks=2, num_heads=2, dropout=0.0)
    return BERT4RecModule(DataSpec("tiny", 8, 30), SequenceView(10), encoder, loss or FullSoftmaxLoss(), mask_prob)


def test_mask_items_only_masks_real_items_and_every_row() -> None:
    items = torch.tensor([[0, 0, 0, 0, 5], [0, 1, 2, 3, 4], [6, 7, 8, 9, 10]]).repeat(50, 1)
    inputs, masked = mask_items(items, 0.3, 99, torch.Generator().manual_seed(0))
    assert not masked[items == 0].any()
    assert masked.any(dim=1).all()
    assert (inputs[masked] == 99).all() and torch.equal(inputs[~masked], items[~masked])
    assert 0.2 < masked[:, :-1][items[:, :-1] != 0].float().mean() < 0.4  # the last column may be forced


def test_mask_items_is_reproducible_with_a_generator() -> None:
    items = torch.randint(1, 9, (4, 12))
    a = mask_items(items, 0.5, 10, torch.Generator().manual_seed(3))
    b = mask_items(items, 0.5, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1])


def test_query_is_the_appended_mask_position() -> None:
    model = make().eval()
    history = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]])
    expected = model.encoder(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 31]]))[:, -1]
    torch.testing.assert_close(model.encode_query(history), expected)
    assert model.item_vectors().shape == (31, 32)
    assert model.encoder.item_embedding.num_embeddings == 32


def test_bidirectional_query_sees_whole_history() -> None:
    model = make().eval()
    history = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]])
    changed = history.clone()
    changed[0, 2] = 20
    assert not torch.allclose(model.encode_query(history), model.encode_query(changed))


def test_rejects_bad_mask_prob() -> None:
    with pytest.raises(ValueError, match="mask_prob"):
        make(mask_prob=0.0)


@pytest.mark.parametrize(
    "loss", [FullSoftmaxLoss(max_logits=64), SampledSoftmaxLoss(16), MixedSampledSoftmaxLoss(16, 8)]
)
def test_overfits_one_batch(loss: torch.nn.Module) -> None:
    model = make(loss, mask_prob=0.4)
    batch = {"items": torch.randint(1, 31, (6, 11), generator=torch.Generator().manual_seed(1))}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        model.training_step(batch, 0).backward()
        optimizer.step()
    model.eval()
    history, targets = batch["items"][:, 1:-1], batch["items"][:, -1]
    padded = torch.cat([torch.zeros(6, 1, dtype=torch.long), history], dim=1)
    top = model.score(history=padded)[:, 1:].argmax(dim=1) + 1
    assert (top == targets).float().mean() >= 4 / 6


def test_exclude_seen_drops_the_users_other_items_from_the_softmax() -> None:
    model = make(mask_prob=0.4)
    batch = {"items": torch.tensor([[0, 0, 0, 4, 9, 2, 9, 7, 1, 3, 5], [6, 1, 8, 2, 3, 4, 5, 7, 11, 12, 13]])}
    torch.manual_seed(5)
    plain = model.training_step(batch, 0)
    model.exclude_seen = True
    torch.manual_seed(5)
    excluding = model.training_step(batch, 0)
    items = trim_padding(batch["items"][:, 1:])
    torch.manual_seed(5)
    inputs, masked = mask_items(items, model.mask_prob, model.mask_id)
    logits = model.encoder(inputs) @ model.item_vectors().T  # (B, L, N + 1)
    expected = []
    for b, t in masked.nonzero().tolist():
        seen, target = items[b][items[b] != 0], items[b, t]
        row = logits[b, t].clone()
        row[0] = row[seen[seen != target]] = float("-inf")
        expected.append(row.logsumexp(0) - row[target])
    assert len(expected) > 2
    assert excluding.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    assert excluding.item() < plain.item()
