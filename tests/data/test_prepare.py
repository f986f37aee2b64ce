"""Preprocessing (sort, dedup, filters, id maps, features) and the prepared-dataset cache."""

import shutil

import numpy as np
import pandas as pd
import pytest

from rectorch.data import columns as C
from rectorch.data.errors import DataError
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.prepared import PreparedDataset
from rectorch.data.raw import RawData
from rectorch.data.sources import InteractionsFileSource


def raw_of(users, items, times=None, ratings=None, **kwargs) -> RawData:
    frame = pd.DataFrame({C.USER: users, C.ITEM: items})
    if times is not None:
        frame[C.TIME] = np.asarray(times, np.int64)
    if ratings is not None:
        frame[C.RATING] = np.asarray(ratings, float)
    return RawData(name="tiny", interactions=frame, **kwargs)


def sequences(data: PreparedDataset) -> dict[str, list[str]]:
    return {
        str(data.user_ids[u]): data.item_ids[data.items[data.indptr[u] : data.indptr[u + 1]]].tolist()
        for u in range(1, data.num_users + 1)
    }


def test_stable_chronological_sort_ties_keep_file_order():
    data = Preprocessing()(raw_of(["a", "b", "a", "a", "a"], ["x", "y", "z", "w", "v"], [5, 1, 3, 5, 1]))
    assert sequences(data) == {"a": ["v", "z", "x", "w"], "b": ["y"]}
    assert data.timestamps.tolist() == [1, 3, 5, 5, 1]
    assert data.indptr.tolist() == [0, 0, 4, 5]


def test_without_timestamps_file_order_is_kept():
    data = Preprocessing()(raw_of([2, 1, 2], [30, 10, 20]))
    assert sequences(data) == {"1": ["10"], "2": ["30", "20"]} and data.timestamps is None


@pytest.mark.parametrize(
    ("dedup", "expected"), [("first", ["x", "y"]), ("last", ["y", "x"]), ("none", ["x", "y", "x"])]
)
def test_dedup_in_chronological_order(dedup, expected):
    raw = raw_of(["a"] * 3, ["x", "x", "y"], [1, 3, 2])
    assert sequences(Preprocessing(dedup=dedup)(raw))["a"] == expected


def test_ids_sorted_numerically_else_as_text_and_zero_reserved():
    data = Preprocessing()(raw_of([10, 9, 10], ["b", "a", "c"]))
    assert data.user_ids.tolist() == ["", "9", "10"] and data.item_ids.tolist() == ["", "a", "b", "c"]
    assert data.items.min() == 1 and data.num_users == 2


def test_min_rating_and_iterative_k_core():
    users = ["a", "a", "b", "b", "c", "c", "c"]
    items = ["x", "y", "x", "y", "x", "y", "z"]
    raw = raw_of(users, items, ratings=[5, 5, 5, 1, 5, 5, 5])
    assert sequences(Preprocessing(min_rating=4)(raw))["b"] == ["x"]
    # rating filter leaves b with 1 interaction -> b dropped; then z has 1 user -> dropped
    data = Preprocessing(min_rating=4, user_core=2, item_core=2)(raw)
    assert sequences(data) == {"a": ["x", "y"], "c": ["x", "y"]}


@pytest.mark.parametrize(
    ("raw", "prep", "message"),
    [
        (raw_of(["a"], ["x"]), Preprocessing(user_core=2), "user_core=2"),
        (raw_of(["a"], ["x"]), Preprocessing(min_rating=3), "'rating'"),
        (raw_of(["a", None], ["x", "y"]), Preprocessing(), "'user_id' has 1 missing id"),
        (raw_of(["a"], ["x"], category_feature="genre"), Preprocessing(), "'genre'"),
    ],
)
def test_preprocessing_errors(raw, prep, message):
    with pytest.raises(DataError, match=message):
        prep(raw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dedup": "latest"}, "preprocessing.dedup must be 'first', 'last' or 'none', got 'latest'"),
        ({"user_core": -1}, "preprocessing.user_core must be a non-negative integer, got -1"),
        ({"item_core": 2.5}, "preprocessing.item_core must be a non-negative integer, got 2.5"),
        ({"min_rating": "4"}, "preprocessing.min_rating must be a number or null, got '4'"),
    ],
)
def test_bad_settings_name_the_key_and_value(kwargs, message):
    with pytest.raises(ValueError) as err:
        Preprocessing(**kwargs)
    assert str(err.value) == message


def test_features_cover_survivors_only():
    items = pd.DataFrame(
        {
            "genre": ["drama", "comedy", "horror"],
            "year": [1990, 2000, 1980],
            "tags": [["a", "b", "a"], ["c"], ["z"]],
            "price": [1.5, np.nan, 3.0],
        },
        index=[1, 2, 3],
    )
    users = pd.DataFrame({"age": [30]}, index=["u"])
    raw = raw_of(["u", "v", "u"], [1, 2, 4], item_features=items, user_features=users)
    data = Preprocessing()(raw)
    table = data.item_features
    assert table.vocab["genre"] == ["", "comedy", "drama"]  # horror's item 3 never interacted
    assert table.columns["genre"].tolist() == [0, 2, 1, 0]  # item 4 has no features -> unknown
    assert table.vocab["year"] == ["", "1990", "2000"] and table.kinds["year"].kind == "categorical"
    assert table.columns["tags"].tolist() == [[0, 0], [1, 2], [3, 0], [0, 0]]
    assert table.kinds["tags"].cardinality == 4 and table.kinds["tags"].width == 2
    assert table.columns["price"].dtype == np.float32 and table.columns["price"].tolist() == [0, 1.5, 0, 0]
    assert data.user_features.columns["age"].tolist() == [0, 1, 0]


def test_a_million_rows_match_a_pandas_reference():
    rng = np.random.default_rng(0)
    raw = raw_of(rng.integers(0, 6000, 1_000_000), rng.integers(0, 3500, 1_000_000), rng.integers(0, 10**9, 10**6))
    data = Preprocessing(user_core=5, item_core=5)(raw)
    # every user and item has far more than 5 events: only dedup (first in time) removes rows
    frame = raw.interactions.astype({C.USER: str, C.ITEM: str}).sort_values([C.USER, C.TIME], kind="stable")
    expected = frame.drop_duplicates([C.USER, C.ITEM], keep="first").sort_values(
        C.USER, key=lambda users: users.astype(int), kind="stable"
    )
    assert data.num_users == 6000 and data.num_items == 3500 and data.num_interactions == len(expected)
    assert np.array_equal(data.user_ids[1:][np.repeat(np.arange(6000), data.lengths()[1:])], expected[C.USER])
    assert np.array_equal(data.item_ids[data.items], expected[C.ITEM])
    assert np.array_equal(data.timestamps, expected[C.TIME])


class CountingSource(InteractionsFileSource):
    loads = 0

    def load(self) -> RawData:
        CountingSource.loads += 1
        return super().load()


def assert_same(a: PreparedDataset, b: PreparedDataset) -> None:
    for name in ("user_ids", "item_ids", "indptr", "items", "timestamps"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for table_a, table_b in ((a.item_features, b.item_features), (a.user_features, b.user_features)):
        assert table_a.kinds == table_b.kinds and table_a.vocab == table_b.vocab
        assert all(np.array_equal(table_a.columns[n], table_b.columns[n]) for n in table_a.columns)
    assert (a.name, a.fingerprint, a.category_feature) == (b.name, b.fingerprint, b.category_feature)


@pytest.fixture
def csv_source(tmp_path) -> CountingSource:
    data = tmp_path / "data"
    data.mkdir()
    (data / "log.csv").write_text("user_id,item_id,ts\nu1,i1,3\nu1,i2,4\nu2,i1,1\n")
    (data / "items.csv").write_text("item_id,cat,tags\ni1,c1,a|b\ni2,c2,b\n")
    CountingSource.loads = 0
    return CountingSource(
        data / "log.csv", time_col="ts", item_features_path=data / "items.csv", multi_value_cols=["tags"],
        category_feature="cat",
    )  # fmt: skip


def test_cache_hit_skips_loading_and_returns_an_equal_dataset(csv_source, tmp_path):
    first = load_or_prepare(csv_source, Preprocessing(), tmp_path / "cache")
    second = load_or_prepare(csv_source, Preprocessing(), tmp_path / "cache")
    assert CountingSource.loads == 1 and len(first.fingerprint) == 64
    assert_same(first, second)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npz"]
    with np.load(tmp_path / "cache" / f"{first.fingerprint}.npz", allow_pickle=False) as npz:
        assert npz["item_ids"].dtype.kind == "U"


def test_fingerprint_follows_content_not_location(csv_source, tmp_path):
    base = load_or_prepare(csv_source, Preprocessing()).fingerprint
    assert load_or_prepare(csv_source, Preprocessing(dedup="last")).fingerprint != base
    moved = shutil.copytree(tmp_path / "data", tmp_path / "elsewhere")
    source = CountingSource(moved / "log.csv", time_col="ts", item_features_path=moved / "items.csv",
                            multi_value_cols=["tags"], category_feature="cat")  # fmt: skip
    assert load_or_prepare(source, Preprocessing()).fingerprint == base
    (moved / "log.csv").write_text("user_id,item_id,ts\nu1,i1,3\n")
    assert load_or_prepare(source, Preprocessing()).fingerprint != base


def test_corrupt_cache_is_rebuilt(csv_source, tmp_path):
    first = load_or_prepare(csv_source, Preprocessing(), tmp_path / "cache")
    (tmp_path / "cache" / f"{first.fingerprint}.npz").write_bytes(b"not a zip")
    assert_same(first, load_or_prepare(csv_source, Preprocessing(), tmp_path / "cache"))
    assert CountingSource.loads == 2
