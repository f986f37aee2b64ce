"""PinSage: its small parts, item-to-item evaluation, and learning planted structure above popularity."""

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

from rectorch.data.csr import Csr
from rectorch.data.splits import EvalSet
from rectorch.evaluation.item_to_item import item_to_item_hit_rate, last_and_next
from rectorch.models.components.pair_losses import (
    HardNegativeCurriculum,
    MaxMarginLoss,
    SampledSoftmaxLoss,
)
from rectorch.models.pinsage import RecencyQuery
from rectorch.training.train import train


def test_recency_query_weights_recent_items_more() -> None:
    encoder = RecencyQuery(num_items=3, dim=2, history_len=3, decay=0.5)
    encoder.items.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    out = encoder(torch.tensor([[1, 2], [0, 3]]))
    torch.testing.assert_close(out, torch.tensor([[1 / 3, 2 / 3], [1.0, 1.0]]))  # weights 0.5, 1; padding ignored


def test_pair_losses() -> None:
    positive, negative = torch.tensor([0.9, 0.1]), torch.tensor([[0.0, 0.5], [0.3, 0.1]])
    valid = torch.tensor([[True, True], [True, False]])
    # hinge terms (margin 0.1): row 0 -> 0, 0; row 1 -> 0.3 (the second negative is masked)
    torch.testing.assert_close(MaxMarginLoss(0.1)(positive, negative, valid), torch.tensor(0.3 / 3))
    logits = torch.tensor([[0.9, 0.0, 0.5], [0.1, 0.3, float("-inf")]]) / 0.5
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(SampledSoftmaxLoss(0.5)(positive, negative, valid), expected)
    with pytest.raises(ValueError):
        MaxMarginLoss(0.0)


def test_hard_negative_curriculum() -> None:
    curriculum = HardNegativeCurriculum(start_epoch=2, per_epoch=2, max_count=5)
    assert [curriculum.count(epoch, available=8) for epoch in range(6)] == [0, 0, 2, 4, 5, 5]
    assert HardNegativeCurriculum(start_epoch=0).count(10, available=3) == 3


def test_item_to_item_hit_rate() -> None:
    vectors = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    last, following = torch.tensor([1, 3, 1]), torch.tensor([2, 4, 4])
    assert item_to_item_hit_rate(vectors, last, following, k=1) == pytest.approx(2 / 3)
    assert item_to_item_hit_rate(vectors, last, following, k=3) == 1.0
    es = EvalSet(
        np.array([1, 2]), Csr(np.array([0, 2, 3]), np.array([5, 6, 7])), Csr(np.array([0, 1, 2]), np.array([8, 9]))
    )
    assert [t.tolist() for t in last_and_next(es)] == [[6, 7], [8, 9]]


def test_pinsage_learns_planted_structure_above_popularity(compose_train) -> None:
    """Item-item transitions in the synthetic data are learnable from co-engagement pairs."""
    scores = {}
    for model in ("popularity", "pinsage"):
        cfg = compose_train(f"model={model}", "logger=none", "callbacks=none", "trainer.max_epochs=3")
        scores[model] = train(cfg)["test"]["ndcg@10"]
    assert scores["pinsage"] > 1.5 * scores["popularity"], scores
