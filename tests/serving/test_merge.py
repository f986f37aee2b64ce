"""Channel merge against a pure-Python reference: interleaving by rank, first position wins, -1 dropped."""

import math

import numpy as np
import pytest

from rectorch.serving.merge import merge_channels


def reference(lists: list[tuple[np.ndarray, np.ndarray]], limit: int | None) -> tuple[list, list, list]:
    """Union rows and per-channel (score, rank) lists, one candidate at a time."""
    kept = [[(int(r), float(s)) for r, s in zip(rows, scores, strict=True) if r >= 0] for rows, scores in lists]
    first = [{} for _ in kept]  # per channel: row → (score, position of its first occurrence)
    for k, entries in enumerate(kept):
        for position, (row, score) in enumerate(entries):
            first[k].setdefault(row, (score, position))
    union: list[int] = []
    for position in range(max((len(e) for e in kept), default=0)):
        for entries in kept:
            if position < len(entries) and entries[position][0] not in union:
                union.append(entries[position][0])
    union = union if limit is None else union[:limit]
    scores = [[first[k].get(row, (math.nan, math.nan))[0] for row in union] for k in range(len(kept))]
    ranks = [[first[k].get(row, (math.nan, math.nan))[1] for row in union] for k in range(len(kept))]
    return union, scores, ranks


def check(lists: list[tuple[np.ndarray, np.ndarray]], limit: int | None = None) -> None:
    merged = merge_channels(lists, limit)
    rows, scores, ranks = reference(lists, limit)
    assert merged.rows.dtype == np.int64 and merged.rows.tolist() == rows
    assert merged.scores.dtype == np.float32 and merged.ranks.dtype == np.float32
    assert merged.scores.shape == merged.ranks.shape == (len(lists), len(rows))
    np.testing.assert_array_equal(merged.scores, np.asarray(scores, np.float32).reshape(merged.scores.shape))
    np.testing.assert_array_equal(merged.ranks, np.asarray(ranks, np.float32).reshape(merged.ranks.shape))


def random_channel(rng: np.random.Generator, num_items: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    rows = rng.integers(-1, num_items, length)  # overlaps, in-channel duplicates and FAISS's -1
    return rows, np.sort(rng.normal(size=length))[::-1]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("limit", [None, 0, 7, 1000])
def test_random_overlapping_channels_match_the_reference(seed: int, limit: int | None) -> None:
    rng = np.random.default_rng(seed)
    lists = [random_channel(rng, 30, int(rng.integers(0, 25))) for _ in range(int(rng.integers(1, 5)))]
    check(lists, limit)


def test_interleaves_by_rank_then_channel() -> None:
    a = (np.array([1, 2, 3]), np.array([0.9, 0.8, 0.7]))
    b = (np.array([4, 1, 5]), np.array([5.0, 4.0, 3.0]))
    merged = merge_channels([a, b])
    assert merged.rows.tolist() == [1, 4, 2, 3, 5]
    assert merged.ranks[1].tolist()[:2] == [1.0, 0.0] and math.isnan(merged.ranks[1, 2])
    assert merged.scores[0, 1] != merged.scores[0, 1] and merged.scores[1, 0] == 4.0


def test_edge_cases() -> None:
    empty = (np.zeros(0, np.int64), np.zeros(0))
    same = (np.array([3, 1, 2]), np.array([3.0, 2.0, 1.0]))
    check([empty])
    check([empty, same, empty])
    check([same, same, same])  # all duplicates: one copy of each, every channel hits every row
    check([(np.array([-1, -1]), np.array([1.0, 1.0])), same])
    check([(np.array([7, 7, 7]), np.array([1.0, 0.5, 0.2]))])
    merged = merge_channels([])
    assert merged.rows.shape == (0,) and merged.scores.shape == merged.ranks.shape == (0, 0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="channel 1: rows and scores"):
        merge_channels([(np.array([1]), np.array([1.0])), (np.array([1, 2]), np.array([1.0]))])
    with pytest.raises(ValueError, match="channel 0: rows must be integers"):
        merge_channels([(np.array([1.5]), np.array([1.0]))])
    with pytest.raises(ValueError, match="limit"):
        merge_channels([], limit=-1)
