"""SASRecModule: causality through the module, shapes, overfitting one batch, planted structure."""

import functools

import pytest
import torch

from rectorch.data.spec import DataSpec
from rectorch.data.views import SequenceView
from rectorch.models.components.sequence_encoder import SequenceEncoder
from rectorch.models.components.sequence_losses import (
    BCELoss,
    FullSoftmaxLoss,
    GBCELoss,
    MixedSampledSoftmaxLoss,
    SampledSoftmaxLoss,
)
from rectorch.models.sasrec import SASRecModule, trim_padding
from rectorch.resolvers import config_dir
from rectorch.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*")


def make(loss: torch.nn.Module | None = None, num_items: int = 30, max_len: int = 10) -> SASRecModule:
    torch.manual_seed(0)
    encoder = functools.partial(SequenceEncoder, dim=32, num_blocks=2, num_heads=2, dropout=0.0)
    return SASRecModule(DataSpec("tiny", 8, num_items), SequenceView(max_len), encoder, loss or FullSoftmaxLoss())


def test_query_and_item_vector_shapes() -> None:
    model = make()
    assert model.encode_query(torch.randint(0, 31, (3, 10))).shape == (3, 32)
    assert model.item_vectors().shape == (31, 32)
    assert model.score(history=torch.randint(0, 31, (2, 10))).shape == (2, 31)


def test_query_at_t_ignores_later_items() -> None:
    model = make().eval()
    history = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]])
    changed = history.clone()
    changed[0, 6:] = torch.tensor([20, 21, 22, 23])
    hidden, hidden_changed = model.encoder(history), model.encoder(changed)
    torch.testing.assert_close(hidden[:, :6], hidden_changed[:, :6])
    torch.testing.assert_close(model.encode_query(history), hidden[:, -1])


def test_trim_padding_drops_shared_leading_zeros() -> None:
    items = torch.tensor([[0, 0, 0, 4, 5], [0, 0, 2, 3, 4]])
    assert trim_padding(items).tolist() == [[0, 4, 5], [2, 3, 4]]


@pytest.mark.parametrize(
    "loss",
    [
        FullSoftmaxLoss(max_logits=64),
        SampledSoftmaxLoss(16),
        BCELoss(),
        GBCELoss(16, t=0.75),
        MixedSampledSoftmaxLoss(16, 8),
    ],
)
def test_overfits_one_batch(loss: torch.nn.Module) -> None:
    model = make(loss)
    generator = torch.Generator().manual_seed(1)
    batch = {"items": torch.randint(1, 31, (6, 11), generator=generator)}
    batch["items"][:2, :4] = 0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        model.training_step(batch, 0).backward()
        optimizer.step()
    model.eval()
    inputs, targets = batch["items"][:, :-1], batch["items"][:, -1]
    top = model.score(history=inputs)[:, 1:].argmax(dim=1) + 1
    assert (top == targets).float().mean() >= 5 / 6


def test_exclude_seen_drops_the_users_other_items_from_the_softmax() -> None:
    model = make()
    batch = {"items": torch.tensor([[0, 0, 0, 4, 9, 2, 9, 7, 1, 3, 5], [6, 1, 8, 2, 3, 4, 5, 7, 11, 12, 13]])}
    plain = model.training_step(batch, 0)
    model.exclude_seen = True
    excluding = model.training_step(batch, 0)
    items = trim_padding(batch["items"])
    hidden = model.encoder(items[:, :-1])
    logits = hidden @ model.item_vectors().T  # (B, L, N + 1)
    expected = []
    for b in range(len(items)):
        seen = items[b][items[b] != 0]
        for t in range(items.shape[1] - 1):
            target = items[b, t + 1]
            if target == 0:
                continue
            row = logits[b, t].clone()
            row[0] = row[seen[seen != target]] = float("-inf")
            expected.append(row.logsumexp(0) - row[target])
    assert excluding.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    assert excluding.item() < plain.item()


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "model" / "loss").glob("*.yaml")))
def test_every_loss_config_builds_and_trains_a_step(compose_train, name: str) -> None:
    from hydra.utils import instantiate

    cfg = compose_train("model=sasrec", f"model/loss={name}")
    loss = instantiate(cfg.model.loss)
    assert type(loss).__name__.lower().removesuffix("loss") == name.replace("_", "")
    model = make(loss)
    value = model.training_step({"items": torch.randint(1, 31, (4, 11))}, 0)
    value.backward()
    assert torch.isfinite(value) and model.encoder.item_embedding.weight.grad.abs().sum() > 0


def test_sasrec_beats_popularity_and_ease_on_planted_structure(compose_train) -> None:
    """The planted successor transitions are only visible to an order-aware model."""
    scores = {}
    sasrec = ["model.view.max_len=20", "model.optimizer.lr=0.005", "model.encoder.dropout=0.1"]
    for model in ("popularity", "ease", "sasrec"):
        cfg = compose_train(
            f"model={model}",
            "logger=none",
            "callbacks=none",
            "data.source.num_users=400",
            "data.source.num_items=150",
            "trainer.max_epochs=25",
            *(sasrec if model == "sasrec" else []),
        )
        scores[model] = train(cfg)["test"]["ndcg@10"]
    assert scores["sasrec"] > 1.5 * max(scores["popularity"], scores["ease"]), scores
