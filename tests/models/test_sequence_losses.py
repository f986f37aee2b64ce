"""Sequence losses against hand-computed values on a tiny case; chunked and sampled CE against ``F.cross_entropy``."""

import math

import pytest
import torch
import torch.nn.functional as F

from rectorch.models.components.sequence_losses import (
    BCELoss,
    FullSoftmaxLoss,
    GBCELoss,
    MixedSampledSoftmaxLoss,
    SampledSoftmaxLoss,
    SeenItems,
)


@pytest.fixture
def tiny() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # padding + 3 items
    hidden = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([1, 3])
    return hidden, targets, items


def test_full_softmax_hand_computed(tiny) -> None:
    hidden, targets, items = tiny
    # row 1 logits over items 1..3: [2, 0, 2] → -log(e²/(2e²+1)); row 2: [0, 1, 1] → -log(e/(2e+1))
    expected = (math.log(2 * math.e**2 + 1) - 2 + math.log(2 * math.e + 1) - 1) / 2
    assert FullSoftmaxLoss()(hidden, targets, items).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("max_logits", [1, 50, 2**20])
def test_chunked_matches_unchunked_value_and_gradients(max_logits: int) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(37, 8, requires_grad=True)
    items = torch.randn(21, 8, requires_grad=True)
    targets = torch.randint(1, 21, (37,))
    loss = FullSoftmaxLoss(max_logits=max_logits)(hidden, targets, items)
    (2 * loss).backward()
    h2, w2 = hidden.detach().clone().requires_grad_(), items.detach().clone().requires_grad_()
    reference = F.cross_entropy((h2 @ w2.T)[:, 1:], targets - 1)
    (2 * reference).backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(hidden.grad, h2.grad)
    torch.testing.assert_close(items.grad, w2.grad)


def test_full_softmax_bf16_is_close() -> None:
    torch.manual_seed(0)
    hidden, items, targets = torch.randn(50, 16), torch.randn(30, 16) * 0.3, torch.randint(1, 30, (50,))
    exact = FullSoftmaxLoss()(hidden, targets, items)
    assert FullSoftmaxLoss(bf16=True)(hidden, targets, items).item() == pytest.approx(exact.item(), rel=2e-2)


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("with_seen", [False, True])
def test_sampled_softmax_over_every_item_equals_the_full_softmax(monkeypatch, with_seen: bool) -> None:
    """K = N negatives, each item drawn once: the sampled loss is the full softmax, in value and gradients."""
    torch.manual_seed(0)
    num_items, count = 7, 5
    hidden, items = torch.randn(count, 3), torch.randn(num_items + 1, 3)
    targets = torch.tensor([1, 3, 3, 6, 7])
    seen = seen_of([[1, 2, 3], [4, 6, 7]], [0, 0, 0, 1, 1], num_items) if with_seen else None
    module = "rectorch.models.components.sequence_losses.uniform_negatives"
    monkeypatch.setattr(module, lambda k, table, generator=None: torch.arange(1, table.shape[0]))
    h1, w1 = _leaves(hidden, items)
    sampled = SampledSoftmaxLoss(num_negatives=num_items)(h1, targets, w1, seen)
    sampled.backward()
    h2, w2 = _leaves(hidden, items)
    logits = h2 @ w2.T
    excluded = torch.zeros(count, num_items + 1, dtype=torch.bool)
    excluded[:, 0] = True
    if with_seen:
        excluded[:3, [1, 2, 3]] = excluded[3:, [4, 6, 7]] = True
        excluded[torch.arange(count), targets] = False
    reference = F.cross_entropy(logits.masked_fill(excluded, float("-inf")), targets)  # explicit full softmax
    reference.backward()
    assert sampled.item() == pytest.approx(reference.item(), rel=1e-6)
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)
    h3, w3 = _leaves(hidden, items)
    assert FullSoftmaxLoss(max_logits=16)(h3, targets, w3, seen).item() == pytest.approx(reference.item(), rel=1e-6)


def test_sampled_softmax_is_cross_entropy_over_its_draw() -> None:
    """K = 6 uniform draws, repeats and target hits included: ``F.cross_entropy`` over [target, draws]."""
    torch.manual_seed(0)
    num_items, count, k = 5, 6, 6
    hidden, items = torch.randn(count, 4), torch.randn(num_items + 1, 4)
    targets = torch.randint(1, num_items + 1, (count,))
    torch.manual_seed(3)
    negatives = torch.randint(1, num_items + 1, (k,))
    assert len(negatives.unique()) < k and bool((negatives[None] == targets[:, None]).any())  # both cases occur
    h1, w1 = _leaves(hidden, items)
    torch.manual_seed(3)
    sampled = SampledSoftmaxLoss(num_negatives=k)(h1, targets, w1)
    sampled.backward()
    h2, w2 = _leaves(hidden, items)
    logits = torch.cat([(h2 * w2[targets]).sum(1, keepdim=True), h2 @ w2[negatives].T], dim=1)
    hits = torch.cat([torch.zeros(count, 1, dtype=torch.bool), negatives[None] == targets[:, None]], dim=1)
    reference = F.cross_entropy(logits.masked_fill(hits, float("-inf")), torch.zeros(count, dtype=torch.long))
    reference.backward()
    assert sampled.item() == pytest.approx(reference.item(), rel=1e-6)
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)


def test_bce_hand_computed(tiny) -> None:
    hidden, targets, items = tiny
    torch.manual_seed(0)
    negatives = torch.randint(1, 4, (2,))
    negatives = torch.where(negatives == targets, negatives % 3 + 1, negatives)
    torch.manual_seed(0)
    loss = BCELoss()(hidden, targets, items)
    pos = (hidden * items[targets]).sum(1)
    neg = (hidden * items[negatives]).sum(1)
    expected = (-torch.log(torch.sigmoid(pos)) - torch.log(1 - torch.sigmoid(neg))).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert (negatives != targets).all()


def test_gbce_beta_and_value(tiny) -> None:
    hidden, targets, items = tiny
    loss_fn = GBCELoss(num_negatives=2, t=0.5)
    alpha = 2 / (3 - 1)
    assert loss_fn.beta(3) == pytest.approx(alpha * (0.5 * (1 - 1 / alpha) + 1 / alpha))
    assert GBCELoss(num_negatives=10, t=0.0).beta(1001) == pytest.approx(1.0)
    assert GBCELoss(num_negatives=10, t=1.0).beta(1001) == pytest.approx(10 / 1000)
    torch.manual_seed(0)
    negatives = torch.randint(1, 4, (2,))
    torch.manual_seed(0)
    loss = loss_fn(hidden, targets, items)
    beta = loss_fn.beta(3)
    pos = (hidden * items[targets]).sum(1)
    neg = hidden @ items[negatives].T
    neg_terms = -torch.log(1 - torch.sigmoid(neg)) * (negatives[None] != targets[:, None])
    expected = (-beta * torch.log(torch.sigmoid(pos)) + neg_terms.sum(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gbce_rejects_bad_t() -> None:
    with pytest.raises(ValueError, match="calibration"):
        GBCELoss(t=1.5)


def seen_of(sequences: list[list[int]], positions: list[int], num_items: int) -> SeenItems:
    """``SeenItems`` for target positions ``positions[p]`` = index of the sequence holding position p."""
    has_target = torch.zeros(len(sequences), len(positions), dtype=torch.bool)
    for p, row in enumerate(positions):
        has_target[row, p] = True
    return SeenItems.from_sequences(torch.tensor(sequences), has_target, num_items)


def test_seen_items_maps_positions_to_their_sequence() -> None:
    sequences = torch.tensor([[0, 2, 3], [1, 4, 0]])
    has_target = torch.tensor([[False, True, True], [True, False, False]])
    seen = SeenItems.from_sequences(sequences, has_target, num_items=5)
    assert seen.row.tolist() == [0, 0, 1]  # hidden[has_target] gathers row-major
    assert seen.of_each(torch.tensor([3, 1, 4])).tolist() == [True, False, True]
    assert seen.of_shared(torch.tensor([2, 4])).tolist() == [[True, False], [True, False], [False, True]]
    assert seen.of_rows(2, 3)[0, 1:].tolist() == [True, False, False, True, False]


@pytest.mark.parametrize("max_logits", [1, 2**20])
def test_full_softmax_excluding_seen_drops_them_from_the_softmax(max_logits: int) -> None:
    torch.manual_seed(0)
    num_items = 9
    hidden = torch.randn(3, 4, requires_grad=True)
    items = torch.randn(num_items + 1, 4, requires_grad=True)
    sequences = [[2, 5, 7], [0, 1, 3]]
    targets = torch.tensor([5, 7, 3])  # each target is in its own sequence and stays a candidate
    seen = seen_of(sequences, [0, 0, 1], num_items)
    loss = FullSoftmaxLoss(max_logits=max_logits)(hidden, targets, items, seen)
    loss.backward()
    h2, w2 = hidden.detach().clone().requires_grad_(), items.detach().clone().requires_grad_()
    logits = h2 @ w2.T
    excluded = torch.zeros(3, num_items + 1, dtype=torch.bool)
    excluded[0, [0, 2, 7]] = excluded[1, [0, 2, 5]] = excluded[2, [0, 1]] = True
    reference = F.cross_entropy(logits.masked_fill(excluded, float("-inf")), targets)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(hidden.grad, h2.grad)
    torch.testing.assert_close(items.grad, w2.grad)
    assert items.grad[[2]].abs().sum() > 0 and reference.item() < F.cross_entropy(logits[:, 1:], targets - 1)


def test_sampled_softmax_and_gbce_mask_seen_negatives() -> None:
    torch.manual_seed(0)
    num_items = 6
    hidden, items = torch.randn(2, 3), torch.randn(num_items + 1, 3)
    targets = torch.tensor([2, 4])
    seen = seen_of([[1, 2, 3], [4, 5, 6]], [0, 1], num_items)
    logits = hidden @ items.T
    torch.manual_seed(1)
    negatives = torch.randint(1, num_items + 1, (5,))
    unseen = torch.stack([negatives > 3, negatives <= 3])  # (P, K)
    torch.manual_seed(1)
    sampled = SampledSoftmaxLoss(num_negatives=5)(hidden, targets, items, seen)
    expected = [
        torch.cat([logits[p, t, None], logits[p, negatives[unseen[p]]]]).logsumexp(0) - logits[p, t]
        for p, t in enumerate(targets)
    ]
    assert sampled.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    torch.manual_seed(1)
    gbce = GBCELoss(num_negatives=5, t=0.0)(hidden, targets, items, seen)  # t = 0: β = 1
    expected = [
        F.softplus(-logits[p, t]) + F.softplus(logits[p, negatives[unseen[p]]]).sum() for p, t in enumerate(targets)
    ]
    assert gbce.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_bce_draws_negatives_outside_the_sequence() -> None:
    # seen items score 10, unseen 0: every unseen negative adds exactly log 2, a seen one about 10
    num_items, count = 50, 400
    seen = seen_of([list(range(1, 26))] * count, list(range(count)), num_items)  # half the catalog seen
    items = torch.zeros(num_items + 1, 1)
    items[1:26] = 10.0
    hidden, targets = torch.ones(count, 1), torch.randint(1, 26, (count,))
    torch.manual_seed(0)
    loss = BCELoss()(hidden, targets, items, seen)
    assert loss.item() == pytest.approx(F.softplus(torch.tensor(-10.0)).item() + math.log(2), rel=1e-4)
    assert BCELoss()(hidden, targets, items).item() > 3  # without ``seen`` about half are seen items


def _skewed_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets with Zipf-like popularity over 400 items, as next-item targets are."""
    generator = torch.Generator().manual_seed(seed)
    num_items = 400
    weights = 1.0 / torch.arange(1, num_items + 1).float() ** 1.1
    targets = torch.multinomial(weights, 3000, replacement=True, generator=generator) + 1
    hidden = torch.randn(3000, 16, generator=generator)
    items = torch.randn(num_items + 1, 16, generator=generator) * 0.5
    return hidden, targets, items


def _mean_item_gradient(loss: torch.nn.Module, hidden, targets, items, draws: int) -> torch.Tensor:
    total = torch.zeros_like(items)
    torch.manual_seed(1)
    for _ in range(draws):
        table = items.clone().requires_grad_()
        loss(hidden, targets, table).backward()
        total += table.grad.to_dense()
    return total / draws


def test_logq_brings_mixed_sampled_gradients_towards_full_softmax() -> None:
    """In-batch candidates over-sample popular items; subtracting log E[count] undoes it (Yi et al.)."""
    hidden, targets, items = _skewed_batch()
    full = _mean_item_gradient(FullSoftmaxLoss(), hidden, targets, items, draws=1)
    corrected = _mean_item_gradient(MixedSampledSoftmaxLoss(64, 16), hidden, targets, items, draws=30)
    plain = _mean_item_gradient(MixedSampledSoftmaxLoss(64, 16, logq_correction=False), hidden, targets, items, 30)
    cosine = torch.nn.functional.cosine_similarity
    close, far = cosine(corrected.flatten(), full.flatten(), dim=0), cosine(plain.flatten(), full.flatten(), dim=0)
    assert close > 0.8 and close > far + 0.2, (close, far)  # measured: 0.88 vs 0.58


def test_mixed_sampled_softmax_touches_only_the_batch_and_its_candidates() -> None:
    hidden, targets, items = _skewed_batch(1)
    table = items.clone().requires_grad_()
    torch.manual_seed(0)
    MixedSampledSoftmaxLoss(32, 32)(hidden[:50], targets[:50], table).backward()
    grad = table.grad.to_dense()  # a sparse gradient: only the gathered rows
    touched = int((grad.abs().sum(dim=1) > 0).sum())
    assert touched <= len(set(targets[:50].tolist())) + 32  # targets + uniform draws; in-batch ones are targets


def test_mixed_sampled_softmax_masks_the_target_and_the_seen_items() -> None:
    hidden, targets, items = torch.randn(1, 4), torch.tensor([3]), torch.randn(6, 4)
    assert MixedSampledSoftmaxLoss(8, 0)(hidden, targets, items).item() == 0.0  # its only candidates are itself
    sequences = torch.tensor([[1, 2, 3, 4, 5]])
    seen = SeenItems.from_sequences(sequences, torch.tensor([[True]]), num_items=5)
    assert MixedSampledSoftmaxLoss(4, 64)(hidden, targets, items, seen).item() == 0.0  # every other item is seen
    with pytest.raises(ValueError, match="at least one candidate"):
        MixedSampledSoftmaxLoss(0, 0)
