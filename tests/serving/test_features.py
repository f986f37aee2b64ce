"""Item tables and ranking features against brute-force, one-candidate-at-a-time references."""

import io
import math
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from rectorch.serving.features import FeatureBuilder, ItemStats, Request
from rectorch.serving.manifest import BundleError
from rectorch.serving.merge import merge_channels

NUM_ITEMS, DIM, WINDOW, TOP, RECENT_DAYS = 40, 6, 3, 4, 30.0
START = 1_600_000_000.0
DAY = 86400.0


def catalog(seed: int = 0) -> dict:
    """Users' sequences over 40 items with NaN times, unknown categories, a zero vector and an empty user."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 15, 30)
    lengths[3] = 0
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    rows = rng.integers(0, NUM_ITEMS - 3, indptr[-1])  # rows 37..39 are never seen
    times = START + rng.uniform(0, 100 * DAY, len(rows))
    times[rng.random(len(rows)) < 0.1] = np.nan
    category = rng.integers(0, 4, NUM_ITEMS)
    vectors = rng.normal(size=(NUM_ITEMS, DIM))
    vectors[5] = 0.0
    price = rng.uniform(1, 50, NUM_ITEMS)
    price[::7] = np.nan
    return {
        "indptr": indptr,
        "rows": rows,
        "timestamps": times,
        "category": category,
        "vectors": vectors,
        "numeric": {"price": price},
    }


def brute_covisit(data: dict) -> dict[int, dict[int, float]]:
    """item → {neighbour: weight} for the top lists, counted pair by pair."""
    counts: dict[int, Counter] = {item: Counter() for item in range(NUM_ITEMS)}
    indptr, rows = data["indptr"], data["rows"]
    for user in range(len(indptr) - 1):
        sequence = rows[indptr[user] : indptr[user + 1]].tolist()
        for i, a in enumerate(sequence):
            for b in sequence[i + 1 : i + 1 + WINDOW]:
                if a != b:
                    counts[a][b] += 1
                    counts[b][a] += 1
    top = {}
    for item, counter in counts.items():
        best = sorted(counter.items(), key=lambda pair: (-pair[1], pair[0]))[:TOP]
        top[item] = {row: count / best[0][1] for row, count in best}
    return top


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def brute_stats(data: dict) -> dict:
    rows, times, category = data["rows"].tolist(), data["timestamps"].tolist(), data["category"].tolist()
    timed = [(r, t) for r, t in zip(rows, times, strict=True) if not math.isnan(t)]
    latest = max(t for _, t in timed)
    first_seen = [min((t for r, t in timed if r == item), default=math.nan) for item in range(NUM_ITEMS)]
    hours = {c: Counter() for c in range(max(category) + 1)}
    for r, t in timed:
        hours[category[r]][utc(t).hour] += 1
    share = [[hours[c][h] / max(sum(hours[c].values()), 1) for h in range(24)] for c in sorted(hours)]
    return {
        "popularity": [rows.count(item) for item in range(NUM_ITEMS)],
        "recent_popularity": [sum(r == i and t >= latest - RECENT_DAYS * DAY for r, t in timed) for i in range(40)],
        "first_seen": first_seen,
        "category_hour": share,
        "covisit": brute_covisit(data),
    }


@pytest.fixture(scope="module")
def data() -> dict:
    return catalog()


@pytest.fixture(scope="module")
def stats(data: dict) -> ItemStats:
    return ItemStats.from_interactions(
        **data, num_items=NUM_ITEMS, recent_days=RECENT_DAYS, covisit_window=WINDOW, covisit_top=TOP
    )


def test_item_stats_match_brute_force_counting(data: dict, stats: ItemStats) -> None:
    expected = brute_stats(data)
    assert stats.popularity.tolist() == expected["popularity"]
    assert stats.recent_popularity.tolist() == expected["recent_popularity"]
    assert 0 < stats.recent_popularity.sum() < stats.popularity.sum()
    np.testing.assert_array_equal(stats.first_seen, np.asarray(expected["first_seen"]))
    assert np.isnan(stats.first_seen[37:]).all()
    np.testing.assert_allclose(stats.category_hour, expected["category_hour"], rtol=1e-6)
    np.testing.assert_allclose(stats.category_hour.sum(1), 1.0, rtol=1e-6)
    for item, neighbours in expected["covisit"].items():
        start, end = stats.covisit_indptr[item], stats.covisit_indptr[item + 1]
        assert stats.covisit_rows[start:end].tolist() == sorted(neighbours)
        np.testing.assert_allclose(stats.covisit_weights[start:end], [neighbours[r] for r in sorted(neighbours)])
    assert (np.diff(stats.covisit_indptr) == TOP).sum() > 10  # the top lists were cut
    np.testing.assert_allclose(np.linalg.norm(stats.vectors, axis=1)[[0, 5]], [1.0, 0.0], atol=1e-6)
    assert stats.category.dtype == np.int32 and stats.numeric["price"].dtype == np.float32


def test_item_stats_without_timestamps_or_categories(data: dict) -> None:
    stats = ItemStats.from_interactions(data["indptr"], data["rows"], None, NUM_ITEMS)
    assert not stats.recent_popularity.any() and np.isnan(stats.first_seen).all()
    assert stats.category_hour.shape == (1, 24) and not stats.category_hour.any()
    assert stats.vectors is None and stats.numeric == {} and not stats.category.any()


def test_item_stats_refuse_bad_interactions(data: dict) -> None:
    with pytest.raises(ValueError, match=r"rows must be item rows in \[0, 10\)"):
        ItemStats.from_interactions(data["indptr"], data["rows"], None, 10)
    with pytest.raises(ValueError, match="indptr must rise"):
        ItemStats.from_interactions(data["indptr"][:-1], data["rows"], None, NUM_ITEMS)
    with pytest.raises(ValueError, match="timestamps has shape"):
        ItemStats.from_interactions(data["indptr"], data["rows"], data["timestamps"][1:], NUM_ITEMS)
    with pytest.raises(ValueError, match="numeric feature name"):
        ItemStats.from_interactions(data["indptr"], data["rows"], None, NUM_ITEMS, numeric={"a b": np.ones(40)})
    with pytest.raises(ValueError, match="covisit_window and covisit_top must be >= 1"):
        ItemStats.from_interactions(data["indptr"], data["rows"], None, NUM_ITEMS, covisit_top=0)


def test_covisit_lookups_match_the_top_lists(data: dict, stats: ItemStats) -> None:
    top = brute_covisit(data)
    anchors, candidates = np.array([0, 3, 3, 38, 12]), np.arange(NUM_ITEMS)
    expected = [[top[a].get(c, 0.0) for c in candidates] for a in anchors]
    np.testing.assert_allclose(stats.covisit_with(anchors, candidates), expected, rtol=1e-6)
    summed = Counter()
    for a in anchors:
        summed.update(top[int(a)])
    best = sorted(summed.items(), key=lambda pair: (-pair[1], pair[0]))[:6]
    rows, scores = stats.covisit_neighbours(anchors, 6)
    assert rows.tolist() == [r for r, _ in best] and rows.dtype == np.int64
    np.testing.assert_allclose(scores, [s for _, s in best], rtol=1e-6)
    assert stats.covisit_with(np.zeros(0, np.int64), candidates).shape == (0, NUM_ITEMS)
    assert stats.covisit_neighbours(np.array([38]), 5)[0].shape == (0,)


def brute_features(stats: ItemStats, data: dict, request: Request, lists, channels, vectors: bool) -> list[dict]:
    """Every column for every candidate, from the raw catalog and the brute-force tables."""
    expected_stats, top = brute_stats(data), brute_covisit(data)
    category, raw = data["category"].tolist(), data["vectors"]
    history = request.history.tolist()
    recent = history[-3:]
    now = request.now
    when = None if math.isnan(now) else utc(now)
    hour = math.nan if when is None else when.hour

    def cosine(a: int, b: int) -> float:
        norms = np.linalg.norm(raw[a]) * np.linalg.norm(raw[b])
        return float(raw[a] @ raw[b] / norms) if norms else 0.0

    def share(items: list[int], c: int) -> float:
        return sum(category[i] == c for i in items) / len(items) if items and c else math.nan

    union = merge_channels(lists).rows.tolist()
    out = []
    for row in union:
        c, columns = category[row], {}
        hits = 0
        for name, (rows, scores) in zip(channels, lists, strict=True):
            valid = [(r, s) for r, s in zip(rows.tolist(), scores.tolist(), strict=True) if r >= 0]
            position = next((p for p, (r, _) in enumerate(valid) if r == row), None)
            columns[f"{name}_score"] = math.nan if position is None else valid[position][1]
            columns[f"{name}_rank"] = math.nan if position is None else position
            hits += position is not None
        last_time = math.nan if request.history_times is None or not history else request.history_times[-1]
        columns |= {
            "channels_hit": hits,
            "item_log_popularity": math.log1p(expected_stats["popularity"][row]),
            "item_log_recent_popularity": math.log1p(expected_stats["recent_popularity"][row]),
            "item_age_days": (now - expected_stats["first_seen"][row]) / DAY,
            "item_category": c,
            "item_price": data["numeric"]["price"][row],
            "user_history_length": len(history),
            "user_days_since_last": (now - last_time) / DAY,
            "user_age": request.user.get("age", math.nan),
            "user_segment": request.user.get("segment", math.nan),
            "hour": hour,
            "weekday": math.nan if when is None else when.weekday(),
            "ctx_device": request.context.get("device", math.nan),
            "ctx_depth": request.context.get("depth", math.nan),
            "category_share_history": share(history, c),
            "category_share_recent": share(recent, c),
            "sim_last_max": max(cosine(row, h) for h in recent) if vectors and history else math.nan,
            "sim_last_mean": sum(cosine(row, h) for h in recent) / len(recent) if vectors and history else math.nan,
            "covisit_last": top[history[-1]].get(row, 0.0) if history else math.nan,
            "covisit_recent": sum(top[h].get(row, 0.0) for h in recent) if history else math.nan,
            "category_hour_share": expected_stats["category_hour"][c][hour] if c and when else math.nan,
        }
        out.append(columns)
    return out


REQUESTS = {
    "full": Request(
        history=np.array([4, 9, 9, 5, 20, 1, 0]),
        history_times=START + np.arange(7) * DAY,
        now=START + 10.3 * DAY,
        context={"device": 2.0},
        user={"age": 31, "segment": 4.0},
    ),
    "empty history, unknown time": Request(history=np.zeros(0, np.int64), context={"depth": 7}),
    "short history without times": Request(history=np.array([12, 38]), now=START - 5 * DAY),
    "last time unknown": Request(history=np.array([2]), history_times=np.array([np.nan]), now=START + 3 * DAY),
}


@pytest.mark.parametrize("vectors", [True, False])
@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_every_column_matches_the_brute_force_reference(data: dict, stats: ItemStats, case: str, vectors: bool) -> None:
    if not vectors:
        stats = ItemStats.from_bytes(ItemStats(**{**stats.__dict__, "vectors": None}).to_bytes())
    rng = np.random.default_rng(7)
    channels = ["ann", "popular", "covisit"]
    lists = [(rng.integers(-1, NUM_ITEMS, 15), np.sort(rng.normal(size=15))[::-1]) for _ in channels[:2]]
    lists.append(stats.covisit_neighbours(np.array([4, 9]), 10))
    fields = {"context_fields": ["device", "depth"], "user_fields": ["age", "segment"]}
    builder = FeatureBuilder(stats, channels, **fields, last_n=3)
    request = REQUESTS[case]
    features = builder.build(request, merge_channels(lists))
    expected = brute_features(stats, data, request, lists, channels, vectors)
    assert features.dtype == np.float32 and features.shape == (len(expected), len(builder.names))
    assert sorted(builder.names) == sorted(expected[0])
    for column, name in enumerate(builder.names):
        want = np.asarray([candidate[name] for candidate in expected], np.float64)
        np.testing.assert_allclose(features[:, column], want, rtol=2e-6, atol=1e-6, equal_nan=True, err_msg=name)


def test_column_order_and_stacking(stats: ItemStats) -> None:
    builder = FeatureBuilder(stats, ["ann", "popular"], context_fields=["device"])
    assert builder.names[:5] == ["ann_score", "ann_rank", "popular_score", "popular_rank", "channels_hit"]
    assert builder.names[-1] == "category_hour_share" and "ctx_device" in builder.names
    merged = merge_channels([(np.array([1, 2]), np.array([1.0, 0.5])), (np.array([3]), np.array([9.0]))])
    request = REQUESTS["full"]
    stacked = builder.build_many([request, request], [merged, merged])
    np.testing.assert_array_equal(stacked, np.concatenate([builder.build(request, merged)] * 2))


def test_feature_builder_refuses_bad_input(stats: ItemStats) -> None:
    builder = FeatureBuilder(stats, ["ann"])
    merged = merge_channels([(np.array([1, 2]), np.array([1.0, 0.5]))])
    with pytest.raises(ValueError, match=r"history must be item rows in \[0, 40\)"):
        builder.build(Request(history=np.array([40])), merged)
    with pytest.raises(ValueError, match="merged scores/ranks must have shape"):
        FeatureBuilder(stats, ["ann", "popular"]).build(REQUESTS["full"], merged)
    with pytest.raises(ValueError, match="history_times has shape"):
        builder.build(Request(history=np.array([1, 2]), history_times=np.array([1.0])), merged)
    with pytest.raises(ValueError, match="user field 'age' must be a number"):
        FeatureBuilder(stats, ["ann"], user_fields=["age"]).build(Request(np.array([1]), user={"age": "x"}), merged)
    with pytest.raises(ValueError, match="feature names repeat"):
        FeatureBuilder(stats, ["ann", "ann"])


def arrays_of(stats: ItemStats) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(stats.to_bytes()), allow_pickle=False) as archive:
        return dict(archive)


def test_bytes_round_trip(stats: ItemStats) -> None:
    back = ItemStats.from_bytes(stats.to_bytes())
    for name, value in stats.__dict__.items():
        if name == "numeric":
            assert back.numeric.keys() == value.keys()
            np.testing.assert_array_equal(back.numeric["price"], value["price"])
        else:
            np.testing.assert_array_equal(getattr(back, name), value)
            assert getattr(back, name).dtype == value.dtype
    assert "numeric_price" in arrays_of(stats)


def rewritten(stats: ItemStats, **changes) -> bytes:
    arrays = arrays_of(stats) | changes
    buffer = io.BytesIO()
    np.savez(buffer, **{name: value for name, value in arrays.items() if value is not None})
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"popularity": None}, r"missing the arrays \['popularity'\]"),
        ({"popularity": np.ones(40)}, "array 'popularity' must be a 1-D float32 array, got 1-D float64"),
        ({"category_hour": np.zeros(24, np.float32)}, "array 'category_hour' must be a 2-D float32 array"),
        ({"category": np.zeros(39, np.int32)}, r"array 'category' has shape \(39,\), expected \(40,\)"),
        ({"category": np.full(40, 9, np.int32)}, "array 'category' must hold codes"),
        ({"vectors": np.ones((40, 0), np.float32)}, "array 'vectors' has shape"),
        ({"covisit_indptr": np.zeros(41, np.int64)}, "array 'covisit_indptr' must rise"),
        ({"covisit_weights": None}, "missing the arrays"),
        ({"extra": np.ones(3)}, "unexpected array 'extra.npy'"),
        ({"numeric_price": np.ones(40, np.float64)}, "array 'numeric_price' must be a"),
        ({"first_seen": np.array([{"a": 1}], dtype=object)}, "array 'first_seen' cannot be read"),
    ],
)
def test_malformed_bytes_raise_bundle_error(stats: ItemStats, changes: dict, message: str) -> None:
    with pytest.raises(BundleError, match=rf"^features\.npz: {message}") as error:
        ItemStats.from_bytes(rewritten(stats, **changes))
    assert "\n" not in str(error.value)


def test_unsorted_covisit_slices_and_garbage_are_refused(stats: ItemStats) -> None:
    rows = stats.covisit_rows.copy()
    start = stats.covisit_indptr[0]
    rows[start], rows[start + 1] = rows[start + 1], rows[start]
    with pytest.raises(BundleError, match=r"b\.npz: array 'covisit_rows' must be strictly increasing"):
        ItemStats.from_bytes(rewritten(stats, covisit_rows=rows), where="b.npz")
    with pytest.raises(BundleError, match=r"features\.npz is not a readable \.npz archive"):
        ItemStats.from_bytes(b"not a zip file")
    with pytest.raises(BundleError, match=r"features\.npz is not a readable \.npz archive"):
        ItemStats.from_bytes(stats.to_bytes()[:300])  # truncated
    corrupt = stats.to_bytes().replace(b"\x93NUMPY", b"\x93NUMPX", 1)
    with pytest.raises(BundleError, match=r"features\.npz: array 'popularity' cannot be read"):
        ItemStats.from_bytes(corrupt)


def test_features_module_loads_no_torch() -> None:
    code = "import sys, rectorch.serving.features, rectorch.serving.merge; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
