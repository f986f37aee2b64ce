"""``RecModule.score_candidates`` equals the full ``score()`` gathered at the candidates, for each retriever."""

import importlib.util

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*", "ignore:.*does not have many workers.*")

PINSAGE = pytest.param(
    "pinsage",
    marks=pytest.mark.skipif(importlib.util.find_spec("torch_geometric") is None, reason="needs torch_geometric"),
)


def built_model(compose_train, name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The configured model on tiny synthetic data, bound to its context, its catalog state filled by one
    validation pass, and the query inputs of one evaluation batch."""
    cfg = compose_train(f"model={name}", "logger=none", "callbacks=none", "evaluation.batch_users=16")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    torch.manual_seed(0)
    model = instantiate(cfg.model, spec=datamodule.spec).bind(datamodule.context, instantiate(cfg.evaluation))
    datamodule.view = model.view
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )
    trainer.validate(model, datamodule=datamodule, verbose=False)
    batch = next(iter(datamodule.val_dataloader()))
    return model.eval(), batch["query"]


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "two_tower", PINSAGE])
def test_score_candidates_equals_gathered_full_scores(compose_train, name: str) -> None:
    model, query = built_model(compose_train, name)
    num_items = model.spec.num_items
    users = next(iter(query.values())).shape[0]
    generator = torch.Generator().manual_seed(1)
    candidates = torch.randint(1, num_items + 1, (users, 25), generator=generator)
    candidates[:, 5] = candidates[:, 2]  # a repeated candidate
    candidates[torch.rand(users, 25, generator=generator) < 0.2] = 0  # padding
    with torch.no_grad():
        scores = model.score_candidates(candidates, **query)
        full = model.score(**query)
    assert scores.shape == (users, 25)
    real = candidates != 0
    assert bool(torch.isneginf(scores[~real]).all())
    expected = full.gather(1, candidates)
    torch.testing.assert_close(scores[real], expected[real], rtol=0, atol=1e-5)
    assert expected[real].std() > 1e-3  # the items are told apart, so a mix-up of candidates would show
