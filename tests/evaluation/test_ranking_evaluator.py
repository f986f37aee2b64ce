"""RankingEvaluator against a plain-Python reference and on hand-made cases."""

import math
from collections.abc import Callable

import pytest
import torch

from rectorch.evaluation import EvaluationSettings, RankingEvaluator

NUM_ITEMS = 40
KS = (1, 3, 10)


def reference_percentile(counts: list[int]) -> list[float]:
    """Average-rank popularity percentile of items 1..n by direct counting."""
    items = counts[1:]
    percentile = [0.0]
    for value in items:
        below = sum(other < value for other in items)
        ties = sum(other == value for other in items)
        percentile.append((below + (ties - 1) / 2) / (len(items) - 1))
    return percentile


def reference_metrics(
    scores: torch.Tensor,
    targets: torch.Tensor,
    seen: torch.Tensor,
    counts: list[int],
    category: list[int],
    mask_seen: bool,
) -> dict[str, float]:
    """Sort each user's scores in Python and compute every metric by its definition."""
    percentile = reference_percentile(counts)
    sums: dict[str, float] = {}
    recommended: dict[int, set[int]] = {k: set() for k in KS}
    users = 0
    for row, row_targets, row_seen in zip(scores.tolist(), targets.tolist(), seen.tolist(), strict=True):
        wanted = {item for item in row_targets if item != 0}
        if not wanted:
            continue
        users += 1
        hidden = {item for item in row_seen if item != 0} - wanted if mask_seen else set()
        rankable = [item for item in range(1, NUM_ITEMS + 1) if item not in hidden]
        ranking = sorted(rankable, key=lambda item: -row[item])
        for k in KS:
            top = ranking[:k]
            recommended[k].update(top)
            hit_ranks = [rank for rank, item in enumerate(top, start=1) if item in wanted]
            ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
            known = [(a, b) for i, a in enumerate(top) for b in top[i + 1 :] if category[a] and category[b]]
            values = {
                "hr": float(bool(hit_ranks)),
                "recall": len(hit_ranks) / len(wanted),
                "ndcg": sum(1 / math.log2(rank + 1) for rank in hit_ranks) / ideal,
                "mrr": 1 / hit_ranks[0] if hit_ranks else 0.0,
                "pop_bias": sum(percentile[item] for item in top) / len(top),
                "diversity": sum(category[a] != category[b] for a, b in known) / max(len(known), 1),
            }
            for name, value in values.items():
                sums[f"{name}@{k}"] = sums.get(f"{name}@{k}", 0.0) + value
    result = {key: total / users for key, total in sums.items()}
    result.update({f"coverage@{k}": len(recommended[k]) / NUM_ITEMS for k in KS})
    result["users"] = users
    return result


def random_case(seed: int, users: int = 23) -> tuple[torch.Tensor, ...]:
    """Scores, several 0-padded targets (some seen, some repeated, one user without any) and histories."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(users, NUM_ITEMS + 1, generator=generator, dtype=torch.float64)
    targets = torch.randint(1, NUM_ITEMS + 1, (users, 4), generator=generator)
    targets[torch.rand(users, 4, generator=generator) < 0.4] = 0
    targets[0] = 0
    targets[1] = torch.tensor([5, 5, 0, 7])
    seen = torch.randint(1, NUM_ITEMS + 1, (users, 12), generator=generator)
    seen[torch.rand(users, 12, generator=generator) < 0.3] = 0
    seen[2, :2] = targets[2, :2]
    return scores, targets, seen


def make_evaluator(**settings: object) -> RankingEvaluator:
    counts = torch.arange(NUM_ITEMS + 1) % 7
    category = torch.arange(NUM_ITEMS + 1) % 4
    return RankingEvaluator(EvaluationSettings(ks=KS, **settings), NUM_ITEMS, counts, category)


@pytest.mark.parametrize("mask_seen", [True, False])
def test_matches_plain_python_reference(mask_seen: bool) -> None:
    scores, targets, seen = random_case(seed=3)
    counts = (torch.arange(NUM_ITEMS + 1) % 7).tolist()
    category = (torch.arange(NUM_ITEMS + 1) % 4).tolist()
    expected = reference_metrics(scores, targets, seen, counts, category, mask_seen)
    evaluator = make_evaluator(mask_seen=mask_seen)
    evaluator.update(scores.clone(), targets, seen)
    result = evaluator.compute()
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-9), key


def test_chunked_updates_equal_one_update() -> None:
    scores, targets, seen = random_case(seed=5, users=30)
    whole, chunked = make_evaluator(), make_evaluator()
    whole.update(scores.clone(), targets, seen)
    for start in range(0, 30, 7):
        chunked.update(scores[start : start + 7].clone(), targets[start : start + 7], seen[start : start + 7])
    assert chunked.compute() == pytest.approx(whole.compute(), abs=1e-12)


def test_seen_target_stays_rankable_and_column_zero_is_never_recommended() -> None:
    evaluator = RankingEvaluator(EvaluationSettings(ks=(1, 3)), num_items=3, item_popularity=[0, 1, 2, 3])
    scores = torch.tensor([[99.0, 5.0, 4.0, 3.0]])  # padding column scored highest
    evaluator.update(scores, targets=torch.tensor([[2]]), seen=torch.tensor([[1, 2, 0]]))
    result = evaluator.compute()
    assert result["hr@1"] == 1.0
    # Only items 2 and 3 are rankable, so the top-3 holds two items and never item 0 or seen item 1.
    assert result["coverage@3"] == pytest.approx(2 / 3)
    assert result["pop_bias@3"] == pytest.approx(0.75)


def test_beyond_accuracy_on_a_hand_made_case() -> None:
    evaluator = RankingEvaluator(
        EvaluationSettings(ks=(2,), mask_seen=False),
        num_items=4,
        item_popularity=[0, 10, 10, 1, 5],  # percentiles: 5/6, 5/6, 0, 1/3
        item_category=[0, 1, 2, 2, 0],
    )
    scores = torch.tensor([[0.0, 4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 4.0, 3.0]])
    evaluator.update(scores, targets=torch.tensor([[1], [4]]))
    result = evaluator.compute()  # top-2 lists: [1, 2] and [3, 4]
    assert result["coverage@2"] == 1.0
    assert result["diversity@2"] == pytest.approx(0.5)  # 1 pair differs, item 4's pair is unknown (0)
    assert result["pop_bias@2"] == pytest.approx((5 / 6 + (0 + 1 / 3) / 2) / 2)
    assert result["mrr@2"] == pytest.approx((1 + 1 / 2) / 2)


def test_users_without_targets_are_skipped_and_empty_state_raises() -> None:
    evaluator = make_evaluator()
    with pytest.raises(RuntimeError, match="no user was evaluated"):
        evaluator.compute()
    evaluator.update(torch.randn(2, NUM_ITEMS + 1), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="no user was evaluated"):
        evaluator.compute()
    evaluator.update(torch.randn(2, NUM_ITEMS + 1), torch.tensor([0, 4]))
    assert evaluator.compute()["users"] == 1
    evaluator.reset()
    assert evaluator.protocol("synthetic", "loo").users == 0


def test_wrong_shapes_are_rejected() -> None:
    evaluator = make_evaluator()
    with pytest.raises(ValueError, match=r"scores must have shape \(B, 41\)"):
        evaluator.update(torch.randn(2, NUM_ITEMS), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"item_popularity must have shape \(41,\)"):
        RankingEvaluator(EvaluationSettings(), NUM_ITEMS, torch.ones(NUM_ITEMS))


def test_sampled_ranking_is_labelled_seeded_and_optimistic() -> None:
    scores, targets, seen = random_case(seed=7)
    full = make_evaluator()
    full.update(scores.clone(), targets, seen)
    runs = []
    for _ in range(2):
        sampled = make_evaluator(sampled_negatives=10, seed=1)
        sampled.update(scores.clone(), targets, seen)
        runs.append(sampled.compute())
    assert runs[0] == runs[1]
    assert set(runs[0]) - {"users"} == {f"sampled-10/{key}" for key in full.compute() if key != "users"}
    assert sampled.protocol("synthetic", "loo").ranking == "sampled-10"
    for key, value in full.compute().items():
        if key.split("@")[0] in ("hr", "recall", "ndcg", "mrr"):
            assert runs[0][f"sampled-10/{key}"] >= value - 1e-12, key


def test_sampled_negatives_exclude_seen_items_and_reset_reseeds() -> None:
    evaluator = RankingEvaluator(
        EvaluationSettings(ks=(1,), mask_seen=False, sampled_negatives=5, seed=3), 8, torch.ones(9)
    )
    scores = torch.tensor([[0.0, 9.0, 8.0, 7.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    evaluator.update(scores.clone(), targets=torch.tensor([[3]]), seen=torch.tensor([[1, 2]]))
    assert evaluator.compute()["sampled-5/hr@1"] == 1.0
    assert evaluator.protocol("synthetic", "loo").mask_seen
    scores, targets, seen = random_case(seed=11)
    evaluator = make_evaluator(sampled_negatives=3)
    evaluator.update(scores.clone(), targets, seen)
    first = evaluator.compute()
    evaluator.reset()
    evaluator.update(scores.clone(), targets, seen)
    assert evaluator.compute() == first


@pytest.mark.parametrize("double", [lambda t: t * 2, lambda t: torch.cat([t[None], t[None]]).sum(0)])
def test_reduce_with_a_doubling_sum_keeps_averages(double: Callable[[torch.Tensor], torch.Tensor]) -> None:
    scores, targets, seen = random_case(seed=13)
    evaluator = make_evaluator()
    evaluator.update(scores, targets, seen)
    before = evaluator.compute()
    evaluator.reduce_(double)
    after = evaluator.compute()
    assert after.pop("users") == 2 * before.pop("users")
    assert after == pytest.approx(before, abs=1e-12)
