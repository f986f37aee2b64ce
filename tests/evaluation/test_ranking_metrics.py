"""Per-user metric functions against values computed by hand on tiny lists."""

import math

import pytest
import torch

from rectorch.evaluation.metrics import (
    accuracy_metrics,
    count_targets,
    coverage_counts,
    intra_list_diversity,
    popularity_bias,
    popularity_percentile,
)


def test_single_target_at_rank_three() -> None:
    topk = torch.tensor([[4, 9, 7, 1, 2, 3, 5, 6, 8, 10]])
    metrics = accuracy_metrics(topk, torch.tensor([[7]]), ks=(1, 5, 10))
    assert metrics["hr"].tolist() == [[0.0, 1.0, 1.0]]
    assert metrics["recall"].tolist() == [[0.0, 1.0, 1.0]]
    assert metrics["mrr"][0].tolist() == pytest.approx([0.0, 1 / 3, 1 / 3])
    assert metrics["ndcg"][0].tolist() == pytest.approx([0.0, 1 / math.log2(4), 1 / math.log2(4)])


def test_several_targets_use_ideal_dcg_over_min_targets_and_k() -> None:
    topk = torch.tensor([[5, 2, 7, 1]])
    targets = torch.tensor([[2, 1, 9]])
    metrics = accuracy_metrics(topk, targets, ks=(1, 2, 4))
    gain = [1 / math.log2(rank + 1) for rank in range(1, 5)]
    assert metrics["hr"].tolist() == [[0.0, 1.0, 1.0]]
    assert metrics["recall"][0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert metrics["mrr"][0].tolist() == pytest.approx([0.0, 0.5, 0.5])
    expected_ndcg = [0.0, gain[1] / sum(gain[:2]), (gain[1] + gain[3]) / sum(gain[:3])]
    assert metrics["ndcg"][0].tolist() == pytest.approx(expected_ndcg)


def test_duplicate_targets_count_once_and_padding_never_hits() -> None:
    topk = torch.tensor([[3, 0, 0]])
    targets = torch.tensor([[3, 3, 0, 0]])
    assert count_targets(targets).tolist() == [1]
    metrics = accuracy_metrics(topk, targets, ks=(3,))
    assert metrics["recall"].item() == 1.0
    assert metrics["ndcg"].item() == pytest.approx(1.0)
    assert accuracy_metrics(torch.tensor([[0, 0]]), torch.tensor([[0, 5]]), ks=(2,))["hr"].item() == 0.0


def test_cut_off_longer_than_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="exceeds the top-K list length 2"):
        accuracy_metrics(torch.tensor([[1, 2]]), torch.tensor([[1]]), ks=(3,))


def test_popularity_percentile_averages_ties() -> None:
    counts = torch.tensor([100, 5, 1, 5, 3])  # id 0 (padding) is left out of the ranking
    assert popularity_percentile(counts).tolist() == pytest.approx([0.0, 2.5 / 3, 0.0, 2.5 / 3, 1 / 3])
    assert popularity_percentile(torch.tensor([0, 4, 4])).tolist() == [0.0, 0.5, 0.5]
    assert popularity_percentile(torch.tensor([0, 7])).tolist() == [0.0, 0.5]


def test_popularity_bias_skips_empty_slots() -> None:
    percentile = torch.tensor([0.0, 1.0, 0.0, 0.5], dtype=torch.float64)
    bias = popularity_bias(torch.tensor([[1, 2, 0], [0, 0, 0]]), percentile, ks=(1, 3))
    assert bias.tolist() == [[1.0, 0.5], [0.0, 0.0]]


def test_intra_list_diversity_leaves_out_unknown_categories() -> None:
    category = torch.tensor([0, 1, 1, 2, 0])  # item 4 has no known category
    diversity = intra_list_diversity(torch.tensor([[1, 2, 3, 4]]), category, ks=(1, 2, 3, 4))
    assert diversity[0].tolist() == pytest.approx([0.0, 0.0, 2 / 3, 2 / 3])


def test_coverage_counts_per_cut_off() -> None:
    counts = coverage_counts(torch.tensor([[1, 2], [1, 3]]), num_items=4, ks=(1, 2))
    assert counts.tolist() == [[0, 2, 0, 0, 0], [0, 2, 1, 1, 0]]
