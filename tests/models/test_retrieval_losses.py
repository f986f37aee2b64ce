"""InBatchSoftmaxLoss against hand-computed values: logQ, duplicate positives, uniform negatives."""

import math

import pytest
import torch

from rectorch.models.components.retrieval_losses import InBatchSoftmaxLoss

TABLE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])  # item i → row i
PROB = torch.tensor([0.0, 0.5, 0.25, 0.125, 0.125])


def encode(ids: torch.Tensor) -> torch.Tensor:
    return TABLE[ids]


def hand_loss(queries: list[list[float]], items: list[int], candidates: list[int], counts: list[float], tau: float):
    """Mean over rows of -log softmax, logits ``q·v / tau - log count``, same-item columns but the own one dropped."""
    total = 0.0
    for row, (query, item) in enumerate(zip(queries, items, strict=True)):
        logits = []
        for col, (cand, count) in enumerate(zip(candidates, counts, strict=True)):
            if cand == item and col != row:
                continue
            dot = sum(a * b for a, b in zip(query, TABLE[cand].tolist(), strict=True))
            logits.append((dot / tau - math.log(count), col == row))
        norm = math.log(sum(math.exp(value) for value, _ in logits))
        total += norm - next(value for value, own in logits if own)
    return total / len(items)


def test_logq_correction_matches_hand_computed_loss() -> None:
    queries, items = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], [1, 2, 3]
    loss = InBatchSoftmaxLoss(temperature=0.5)(torch.tensor(queries), torch.tensor(items), encode, PROB)
    counts = [3 * PROB[i].item() for i in items]  # expected count in the batch: B * p_j
    assert loss.item() == pytest.approx(hand_loss(queries, items, items, counts, 0.5), rel=1e-5)


def test_logq_changes_the_loss_and_can_be_disabled() -> None:
    queries, items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), torch.tensor([1, 2, 3])
    corrected = InBatchSoftmaxLoss(temperature=0.5)(queries, items, encode, PROB)
    plain = InBatchSoftmaxLoss(temperature=0.5, logq_correction=False)(queries, items, encode, PROB)
    expected = hand_loss(queries.tolist(), items.tolist(), items.tolist(), [1.0, 1.0, 1.0], 0.5)
    assert plain.item() == pytest.approx(expected, rel=1e-5)
    assert corrected.item() != pytest.approx(plain.item(), rel=1e-3)


def test_duplicate_positives_are_masked() -> None:
    queries, items = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [1, 1, 2]
    loss = InBatchSoftmaxLoss(temperature=0.5)(torch.tensor(queries), torch.tensor(items), encode, PROB)
    counts = [3 * PROB[i].item() for i in items]
    assert loss.item() == pytest.approx(hand_loss(queries, items, items, counts, 0.5), rel=1e-5)
    # unmasked, each of the two rows of item 1 would see its own item as a negative at the same logit: loss >= log 2
    assert loss.item() < math.log(2)


def test_mixed_uniform_negatives_use_the_mixture_count() -> None:
    queries, items = [[1.0, 0.0], [0.0, 1.0]], [1, 2]
    torch.manual_seed(3)
    loss = InBatchSoftmaxLoss(temperature=0.5, uniform_negatives=4)(
        torch.tensor(queries), torch.tensor(items), encode, PROB
    )
    torch.manual_seed(3)
    negatives = torch.randint(1, 5, (4,)).tolist()
    candidates = items + negatives
    counts = [2 * PROB[c].item() + 4 / 4 for c in candidates]  # B p_j + M / N
    assert loss.item() == pytest.approx(hand_loss(queries, items, candidates, counts, 0.5), rel=1e-5)


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"uniform_negatives": -1}])
def test_invalid_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        InBatchSoftmaxLoss(**kwargs)
