"""CandidateEvaluator: equal to full ranking over the whole catalog, a plain-Python reference, planted cases."""

import math

import numpy as np
import pytest
import torch

from rectorch.data.context import TrainContext
from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import DataSpec
from rectorch.evaluation import CandidateEvaluator, EvaluationSettings, Protocol, RankingEvaluator
from rectorch.evaluation.protocol import ranking_label

NUM_ITEMS = 40
KS = (1, 3, 10, 20)
COUNTS = [(item * 5) % 7 for item in range(NUM_ITEMS + 1)]
CATEGORY = [item % 4 for item in range(NUM_ITEMS + 1)]


def make(num_candidates: int, mask_seen: bool = True, **kwargs: object) -> CandidateEvaluator:
    return CandidateEvaluator(
        EvaluationSettings(ks=KS, mask_seen=mask_seen),
        NUM_ITEMS,
        torch.tensor(COUNTS),
        torch.tensor(CATEGORY),
        num_candidates=num_candidates,
        **kwargs,
    )


def random_users(seed: int, users: int = 25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-catalog scores, 0-padded targets (some seen, one repeated, one user without any) and histories."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(users, NUM_ITEMS + 1, generator=generator, dtype=torch.float64)
    targets = torch.randint(1, NUM_ITEMS + 1, (users, 3), generator=generator)
    targets[torch.rand(users, 3, generator=generator) < 0.4] = 0
    targets[0] = 0
    targets[1] = torch.tensor([5, 5, 7])
    seen = torch.randint(1, NUM_ITEMS + 1, (users, 10), generator=generator)
    seen[torch.rand(users, 10, generator=generator) < 0.3] = 0
    seen[2, :2] = targets[2, :2]
    return scores, targets, seen


def random_candidates(seed: int, targets: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates with padding, repeats (scored differently) and targets both inside and outside; their scores."""
    generator = torch.Generator().manual_seed(seed)
    users = targets.shape[0]
    candidates = torch.randint(1, NUM_ITEMS + 1, (users, width), generator=generator)
    candidates[torch.rand(users, width, generator=generator) < 0.15] = 0
    candidates[:, 3] = candidates[:, 1]  # a repeat in every row
    planted = torch.rand(users, generator=generator) < 0.5
    candidates[planted, width - 2] = targets[planted, 0]  # half the users get their first target late
    scores = torch.randn(users, width, generator=generator, dtype=torch.float64)
    return candidates, scores


def reference(
    scores: list[list[float]],
    candidates: list[list[int]],
    targets: list[list[int]],
    seen: list[list[int]],
    mask_seen: bool,
    recall_ns: tuple[int, ...],
) -> dict[str, float]:
    """Every metric by its definition: keep the first occurrence of each candidate, rank by score in Python."""
    items = COUNTS[1:]
    percentile = [0.0] + [
        (sum(o < v for o in items) + (sum(o == v for o in items) - 1) / 2) / (NUM_ITEMS - 1) for v in items
    ]
    sums: dict[str, float] = {}
    recommended: dict[int, set[int]] = {k: set() for k in KS}
    users = 0
    for row_scores, row, row_targets, row_seen in zip(scores, candidates, targets, seen, strict=True):
        wanted = {item for item in row_targets if item != 0}
        if not wanted:
            continue
        users += 1
        hidden = ({item for item in row_seen if item != 0} - wanted) if mask_seen else set()
        first: dict[int, float] = {}
        for item, score in zip(row, row_scores, strict=True):
            if item != 0 and item not in first and item not in hidden:
                first[item] = score
        given_order = list(first)
        ranking = sorted(given_order, key=lambda item: -first[item])
        values: dict[str, float] = {}
        for n in recall_ns:
            values[f"candidate_recall@{n}"] = len(wanted & set(given_order[:n])) / len(wanted)
        for k in KS:
            top = ranking[:k]
            recommended[k].update(top)
            hit_ranks = [rank for rank, item in enumerate(top, start=1) if item in wanted]
            ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(wanted), k) + 1))
            known = [(a, b) for i, a in enumerate(top) for b in top[i + 1 :] if CATEGORY[a] and CATEGORY[b]]
            values[f"hr@{k}"] = float(bool(hit_ranks))
            values[f"recall@{k}"] = len(hit_ranks) / len(wanted)
            values[f"ndcg@{k}"] = sum(1 / math.log2(rank + 1) for rank in hit_ranks) / ideal
            values[f"mrr@{k}"] = 1 / hit_ranks[0] if hit_ranks else 0.0
            values[f"pop_bias@{k}"] = sum(percentile[item] for item in top) / max(len(top), 1)
            values[f"diversity@{k}"] = sum(CATEGORY[a] != CATEGORY[b] for a, b in known) / max(len(known), 1)
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
    result = {key: total / users for key, total in sums.items()}
    result.update({f"coverage@{k}": len(recommended[k]) / NUM_ITEMS for k in KS})
    return result


@pytest.mark.parametrize("mask_seen", [True, False])
def test_whole_catalog_as_candidates_equals_full_ranking_exactly(mask_seen: bool) -> None:
    scores, targets, seen = random_users(seed=1)
    full = RankingEvaluator(
        EvaluationSettings(ks=KS, mask_seen=mask_seen), NUM_ITEMS, torch.tensor(COUNTS), torch.tensor(CATEGORY)
    )
    full.update(scores.clone(), targets, seen)
    expected = full.compute()
    generator = torch.Generator().manual_seed(2)
    shuffled = torch.stack([torch.randperm(NUM_ITEMS, generator=generator) + 1 for _ in range(len(scores))])
    evaluator = make(NUM_ITEMS, mask_seen=mask_seen)
    evaluator.update(scores.gather(1, shuffled), shuffled, targets, seen)
    result = evaluator.compute()
    prefix = "candidates-40/"
    assert result.pop("users") == expected.pop("users") == sum(1 for row in targets.tolist() if any(row))
    assert result.pop(f"{prefix}candidate_recall@40") == 1.0  # every target is a candidate
    assert result == {f"{prefix}{key}": value for key, value in expected.items()}


def test_candidates_in_score_order_give_candidate_recall_equal_to_recall() -> None:
    scores, targets, seen = random_users(seed=3)
    ordered = scores[:, 1:].argsort(dim=1, descending=True) + 1
    evaluator = make(NUM_ITEMS, recall_ns=KS)
    evaluator.update(scores.gather(1, ordered), ordered, targets, seen)
    result = evaluator.compute()
    for k in KS:
        assert result[f"candidates-40/candidate_recall@{k}"] == pytest.approx(result[f"candidates-40/recall@{k}"])


@pytest.mark.parametrize(("seed", "mask_seen"), [(4, True), (5, False), (6, True)])
def test_matches_plain_python_reference(seed: int, mask_seen: bool) -> None:
    width, recall_ns = 15, (1, 5, 15)
    _, targets, seen = random_users(seed)
    candidates, scores = random_candidates(seed + 100, targets, width)
    evaluator = make(width, mask_seen=mask_seen, recall_ns=recall_ns)
    evaluator.update(scores, candidates, targets, seen)
    result = evaluator.compute()
    expected = reference(scores.tolist(), candidates.tolist(), targets.tolist(), seen.tolist(), mask_seen, recall_ns)
    assert result.pop("users") == sum(1 for row in targets.tolist() if any(row))
    assert result.keys() == {f"candidates-15/{key}" for key in expected}
    for key, value in expected.items():
        assert result[f"candidates-15/{key}"] == pytest.approx(value, abs=1e-9), key
    assert 0 < expected["hr@20"] < 1  # the case holds both hits and targets outside the candidates


def test_chunks_and_a_ddp_style_sum_equal_one_update() -> None:
    _, targets, seen = random_users(seed=7, users=30)
    candidates, scores = random_candidates(8, targets, 12)
    whole = make(12, recall_ns=(4, 12))
    whole.update(scores, candidates, targets, seen)
    shards = [make(12, recall_ns=(4, 12)) for _ in range(2)]
    for start in range(0, 30, 6):
        shard, rows = shards[(start // 6) % 2], slice(start, start + 6)
        shard.update(scores[rows], candidates[rows], targets[rows], seen[rows])
    other: list[torch.Tensor] = []
    shards[1].reduce_(lambda t: other.append(t) or t)
    remaining = iter(other)
    shards[0].reduce_(lambda t: t + next(remaining))
    assert shards[0].compute() == pytest.approx(whole.compute(), abs=1e-12)


def test_candidate_recall_on_a_planted_case() -> None:
    candidates = torch.tensor([[3, 0, 5, 3, 7, 2, 9, 1], [6, 8, 1, 0, 0, 0, 0, 0]])
    targets = torch.tensor([[7, 9, 4], [8, 0, 0]])
    seen = torch.tensor([[5, 9], [6, 0]])
    scores = torch.zeros(2, 8)
    ns = (1, 2, 3, 4, 8)
    masked = make(8, recall_ns=ns)
    masked.update(scores, candidates, targets, seen)
    # rankable, in order: [3, 7, 2, 9, 1] (0, the repeated 3 and seen 5 dropped; seen target 9 kept) and [8, 1]
    user0, user1 = [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3], [1, 1, 1, 1, 1]
    result = masked.compute()
    for i, n in enumerate(ns):
        assert result[f"candidates-8/candidate_recall@{n}"] == pytest.approx((user0[i] + user1[i]) / 2), n
    unmasked = make(8, mask_seen=False, recall_ns=ns)
    unmasked.update(scores, candidates, targets, seen)
    # order [3, 5, 7, 2, 9, 1] and [6, 8, 1]: target 4 is never a candidate
    user0, user1 = [0, 0, 1 / 3, 1 / 3, 2 / 3], [0, 1, 1, 1, 1]
    result = unmasked.compute()
    for i, n in enumerate(ns):
        assert result[f"candidates-8/candidate_recall@{n}"] == pytest.approx((user0[i] + user1[i]) / 2), n


def test_padding_is_never_ranked_and_a_repeat_counts_once_with_its_first_score() -> None:
    settings = EvaluationSettings(ks=(1, 3), mask_seen=False)
    evaluator = CandidateEvaluator(settings, 5, torch.tensor([0, 1, 2, 3, 4, 5]), num_candidates=3)
    # item 4 twice: its first (low) score ranks it, the repeat's 5.0 is ignored; then padding scored highest
    evaluator.update(torch.tensor([[0.0, 1.0, 5.0]]), torch.tensor([[4, 2, 4]]), torch.tensor([4]))
    evaluator.update(torch.tensor([[99.0, 1.0, 0.5]]), torch.tensor([[0, 3, 3]]), torch.tensor([3]))
    result = evaluator.compute()
    assert result["candidates-3/mrr@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert result["candidates-3/recall@3"] == 1.0  # a repeated target is one hit, not two
    assert result["candidates-3/hr@1"] == 0.5
    assert result["candidates-3/coverage@3"] == pytest.approx(3 / 5)  # items 2, 4 and 3; never id 0
    assert result["candidates-3/candidate_recall@3"] == 1.0


def test_cut_offs_beyond_the_candidates_and_users_without_rankable_candidates() -> None:
    evaluator = make(2, recall_ns=2)
    evaluator.update(
        torch.tensor([[0.3, 0.2], [0.1, 0.9]]),
        torch.tensor([[6, 9], [4, 0]]),
        torch.tensor([9, 4]),
        torch.tensor([[6], [4]]),
    )
    result = evaluator.compute()
    assert result["candidates-2/hr@20"] == 1.0  # seen 6 dropped, target 9 ranked first; target 4 seen yet kept
    assert result["candidates-2/ndcg@1"] == 1.0
    evaluator.reset()
    evaluator.update(torch.tensor([[1.0, 2.0]]), torch.tensor([[6, 0]]), torch.tensor([5]), torch.tensor([[6]]))
    result = evaluator.compute()
    assert result["candidates-2/hr@20"] == 0.0 and result["candidates-2/pop_bias@20"] == 0.0
    assert result["candidates-2/candidate_recall@2"] == 0.0 and result["users"] == 1


def test_from_context_reads_the_catalog_tables() -> None:
    context = TrainContext(
        spec=DataSpec("tiny", num_users=1, num_items=NUM_ITEMS),
        split="loo",
        train=Csr(np.array([0, 0, 0]), np.array([], dtype=np.int64)),
        user_features=FeatureTable(),
        item_features=FeatureTable(),
        item_popularity=np.array(COUNTS),
        item_category=np.array(CATEGORY),
        eval_users={"val": 0, "test": 0},
    )
    settings = EvaluationSettings(ks=KS)
    built = CandidateEvaluator.from_context(settings, context, num_candidates=15, recall_ns=(1, 5))
    _, targets, seen = random_users(seed=9)
    candidates, scores = random_candidates(10, targets, 15)
    direct = make(15, recall_ns=(1, 5))
    for evaluator in (built, direct):
        evaluator.update(scores, candidates, targets, seen)
    assert built.compute() == direct.compute()
    assert "candidates-15/diversity@10" in built.compute()


def test_bad_input_is_rejected_with_a_clear_message() -> None:
    evaluator = make(4)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        evaluator.update(torch.randn(2, 5), torch.ones(2, 5, dtype=torch.long), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        evaluator.update(torch.randn(2, 4), torch.ones(2, 3, dtype=torch.long), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"candidate ids must lie in 0\.\.40"):
        evaluator.update(torch.randn(1, 4), torch.tensor([[1, 2, 41, 0]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="same number of rows"):
        evaluator.update(torch.randn(2, 4), torch.ones(2, 4, dtype=torch.long), torch.tensor([1]))
    with pytest.raises(ValueError, match="N=5 must be between 1 and num_candidates=4"):
        make(4, recall_ns=[2, 5])
    with pytest.raises(ValueError, match="num_candidates=0 must be a positive int"):
        make(0)
    with pytest.raises(ValueError, match="sampled_negatives=10 cannot be combined"):
        CandidateEvaluator(EvaluationSettings(sampled_negatives=10), NUM_ITEMS, torch.ones(41), num_candidates=5)
    with pytest.raises(RuntimeError, match="no user was evaluated"):
        evaluator.compute()


def test_protocol_label_and_prefix() -> None:
    evaluator = make(15)
    assert evaluator.protocol("synthetic", "loo") == Protocol("synthetic", "loo", "candidates-15", True, KS, 0)
    protocol = Protocol("ml1m", "loo", "candidates-200", mask_seen=True, ks=(10,), users=1)
    assert protocol.metric_prefix() == "candidates-200/" and protocol.candidates == 200 and not protocol.sampled
    assert Protocol("ml1m", "loo", "sampled-100", True, (10,), 1).candidates is None
    assert ranking_label(None, candidates=200) == "candidates-200" and ranking_label(None) == "full"
    assert ranking_label(100) == "sampled-100"
    with pytest.raises(ValueError, match="exclude each other"):
        ranking_label(100, candidates=200)
    for bad in ("candidates", "candidates-0", "candidate-5"):
        with pytest.raises(ValueError, match="'candidates-<N>'"):
            Protocol("ml1m", "loo", bad, mask_seen=True, ks=(10,), users=1)
