"""The four serving stages on the tiny bundle: retrieve, filter, re-rank, fall back."""

from pathlib import Path

import numpy as np
import pytest

from rectorch.serving import Recommender, RecommendSettings
from tests.serving.conftest import NOW


@pytest.fixture(scope="module")
def plain(bundle: Path) -> Recommender:
    return Recommender.from_bundle(bundle)


def exact_top(recommender: Recommender, history: list[str], k: int) -> list[str]:
    rows = [int(h[1:]) for h in history]
    vectors = recommender.index.vectors(np.arange(60))
    scores = vectors @ vectors[rows].mean(axis=0)
    scores[rows] = -np.inf
    scores[5] = -np.inf  # unavailable
    return [f"i{r}" for r in np.argsort(-scores)[:k]]


def test_relevance_matches_exact_scoring(plain: Recommender) -> None:
    result = plain.recommend(["i0", "i3", "i6"], k=8)
    assert result.items == exact_top(plain, ["i0", "i3", "i6"], 8)
    assert result.sources == ["ann"] * 8 and result.fallback is None
    assert result.scores == sorted(result.scores, reverse=True)


def test_filters_drop_seen_excluded_unavailable_and_other_categories(plain: Recommender) -> None:
    history = ["i2", "i5", "i8"]
    result = plain.recommend(history, k=30, exclude=["i11", "i14"], filters={"category": ["drama"]})
    assert not {"i2", "i5", "i8", "i11", "i14"} & set(result.items)
    assert all(int(i[1:]) % 3 + 1 == 3 for i in result.items)
    assert len(result.items) == 20 - 5  # 20 drama items; i2, i5 (unavailable), i8, i11, i14 dropped
    assert "i5" not in plain.recommend(["i0"], k=59).items


def test_unknown_history_items_are_reported_and_ignored(plain: Recommender) -> None:
    result = plain.recommend(["nope", "i0", "gone"], k=5)
    assert result.unknown_items == ["nope", "gone"]
    assert result.items == plain.recommend(["i0"], k=5).items


def test_empty_or_unknown_history_falls_back_to_popularity(plain: Recommender) -> None:
    result = plain.recommend([], k=4)
    assert result.fallback == "empty_history" and result.items == ["i0", "i1", "i2", "i3"]
    assert plain.recommend(["ghost"], k=4).items == result.items
    comedy = plain.recommend([], k=3, filters={"category": ["comedy"]})
    assert comedy.items == ["i1", "i4", "i7"] and set(comedy.sources) == {"popular"}


def test_mmr_diversifies_categories(bundle: Path, plain: Recommender) -> None:
    diverse = Recommender.from_bundle(bundle, RecommendSettings(mmr_lambda=0.3, diversity="categories"))
    history = ["i0", "i3", "i6"]
    categories = {int(i[1:]) % 3 for i in diverse.recommend(history, k=3).items}
    assert len({int(i[1:]) % 3 for i in plain.recommend(history, k=3).items}) == 1
    assert len(categories) == 3
    vectors = Recommender.from_bundle(bundle, RecommendSettings(mmr_lambda=0.3))
    assert len({int(i[1:]) % 3 for i in vectors.recommend(history, k=3).items}) > 1


def test_freshness_and_exploration(bundle: Path) -> None:
    fresh = Recommender.from_bundle(bundle, RecommendSettings(freshness_weight=5.0))
    assert int(fresh.recommend(["i0"], k=1, now=NOW).items[0][1:]) >= 55
    explore = Recommender.from_bundle(bundle, RecommendSettings(explore_share=0.2))
    result = explore.recommend(["i0", "i3"], k=10, now=NOW)
    assert result.sources[-2:] == ["explore", "explore"] and result.sources[:8] == ["ann"] * 8
    assert len(set(result.items)) == 10 and not {"i0", "i3", "i5"} & set(result.items)


def test_similar_items_and_batches(plain: Recommender) -> None:
    similar = plain.similar_items("i3", k=4)
    assert "i3" not in similar.items and len(similar.items) == 4
    assert all(int(i[1:]) % 3 == 0 for i in similar.items)
    requests = [{"history": ["i1"]}, {"history": []}, {"history": ["i2", "i4"], "k": 3}]
    batched = plain.recommend_many(requests)
    assert [b.items for b in batched] == [plain.recommend(**r).items for r in requests]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"k": 5000}, "k must be"),
        ({"history": ["i1"] * 20000}, "at most"),
        ({"filters": {"brand": ["x"]}}, "unsupported filters"),
        ({"filters": {"category": ["opera"]}}, "unknown categories"),
        ({"filters": {"category": []}}, "names no category"),
        ({"k": True}, "k must be between 1 and 1000, got True"),
        ({"k": 2.0}, "k must be between 1 and 1000, got 2.0"),
        ({"user_features": {"age": 3}}, r"unknown user_features \['age'\]; the encoder takes \[\]"),
        ({"history": ["i1"], "now": float("nan")}, "now must be finite"),
    ],
)
def test_bad_requests_raise_value_errors(plain: Recommender, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plain.recommend(**kwargs)
    with pytest.raises(KeyError):
        plain.similar_items("nope")
