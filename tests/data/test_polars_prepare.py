"""The Polars engine and the Arrow cache give the pandas engine's prepared dataset, array for array."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("polars")

from rectorch.data import columns as C
from rectorch.data.cache import fingerprint
from rectorch.data.errors import DataError
from rectorch.data.movielens import MovieLens1MSasrecSource
from rectorch.data.parquet_source import ParquetSource
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.prepared import PreparedDataset
from rectorch.data.raw import RawData
from rectorch.data.synthetic import SyntheticSource

ARRAYS = ("user_ids", "item_ids", "indptr", "items", "timestamps")


def assert_same(left: PreparedDataset, right: PreparedDataset) -> None:
    for name in ARRAYS:
        a, b = getattr(left, name), getattr(right, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype.kind == b.dtype.kind and np.array_equal(a, b), name
    for table in ("item_features", "user_features"):
        a, b = getattr(left, table), getattr(right, table)
        assert a.kinds == b.kinds and a.vocab == b.vocab
        for name in a.columns:
            assert np.array_equal(a.columns[name], b.columns[name]), (table, name)


ids = st.one_of(
    st.integers(-5, 40).map(str),
    st.sampled_from(["a", "b", "B", "10", "2", "x1", "é", "1e3", "inf", "nan"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(ids, ids, st.integers(0, 6), st.integers(1, 5)), min_size=1, max_size=60),
    dedup=st.sampled_from(["first", "last", "none"]),
    min_rating=st.sampled_from([None, 3]),
    cores=st.sampled_from([(0, 0), (2, 0), (0, 2), (3, 2)]),
    with_time=st.booleans(),
)
def test_polars_engine_equals_pandas_engine_on_generated_logs(rows, dedup, min_rating, cores, with_time) -> None:
    """Ties in time, repeated pairs, ids that are numbers, text or both, ratings and k-cores: the same arrays."""
    frame = pd.DataFrame(rows, columns=[C.USER, C.ITEM, C.TIME, C.RATING])
    if not with_time:
        frame = frame.drop(columns=C.TIME)
    frame[C.RATING] = frame[C.RATING].astype(float)
    raw = RawData(name="generated", interactions=frame)
    settings_ = {"dedup": dedup, "min_rating": min_rating, "user_core": cores[0], "item_core": cores[1]}
    try:
        expected = Preprocessing(**settings_)(raw)
    except DataError as err:
        with pytest.raises(DataError, match="no interactions left"):
            Preprocessing(**settings_, engine="polars")(raw)
        assert "no interactions left" in str(err)
        return
    assert_same(expected, Preprocessing(**settings_, engine="polars")(raw))


def test_polars_engine_keeps_features_and_categories_of_the_synthetic_data() -> None:
    raw = SyntheticSource(num_users=400, num_items=200, seed=3).load()
    settings_ = {"user_core": 5, "item_core": 3}
    assert_same(Preprocessing(**settings_)(raw), Preprocessing(**settings_, engine="polars")(raw))


def test_the_engine_is_not_part_of_the_cache_key(tmp_path: Path) -> None:
    source = SyntheticSource(num_users=100, num_items=50, seed=0)
    assert fingerprint(source, Preprocessing()) == fingerprint(source, Preprocessing(engine="polars"))
    with pytest.raises(ValueError, match=r"preprocessing\.engine"):
        Preprocessing(engine="spark")


def test_arrow_cache_entry_is_memory_mapped_and_equal(tmp_path: Path) -> None:
    source = SyntheticSource(num_users=300, num_items=120, seed=1)
    prepared = load_or_prepare(source, Preprocessing(engine="polars"), tmp_path, "arrow")
    (entry,) = tmp_path.iterdir()
    assert entry.name == f"{prepared.fingerprint}.arrow" and (entry / "meta.json").is_file()
    cached = load_or_prepare(source, Preprocessing(), tmp_path, "arrow")
    assert_same(Preprocessing()(source.load(), prepared.fingerprint), cached)
    assert not cached.items.flags.writeable and not cached.items.flags.owndata  # a view of the mapped file
    assert load_or_prepare(source, Preprocessing(), tmp_path, "npz").items.base is not None  # the arrow entry served
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]


def test_an_incomplete_arrow_entry_is_prepared_again_and_left_in_place(tmp_path: Path, caplog) -> None:
    source = SyntheticSource(num_users=100, num_items=50, seed=2)
    key = fingerprint(source, Preprocessing())
    damaged = tmp_path / f"{key}.arrow"
    damaged.mkdir()
    (damaged / "interactions.arrow").write_bytes(b"not arrow")
    prepared = load_or_prepare(source, Preprocessing(engine="polars"), tmp_path, "arrow")
    assert prepared.num_interactions > 0
    assert (damaged / "interactions.arrow").read_bytes() == b"not arrow"  # not removed, not overwritten
    assert "left in place" in caplog.text


def _parquet_log(folder: Path, frame: pd.DataFrame, parts: int) -> None:
    folder.mkdir()
    for index, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[chunk].to_parquet(folder / f"part-{index:05d}.parquet", index=False)


def test_parquet_parts_give_the_same_dataset_through_both_engines(tmp_path: Path) -> None:
    raw = SyntheticSource(num_users=300, num_items=150, seed=4).load()
    frame = raw.interactions.assign(user_id=lambda f: f.user_id.astype(np.int64) * 7 + 1000)
    frame[C.ITEM] = frame[C.ITEM].astype(np.int64)
    _parquet_log(tmp_path / "log", frame[[C.USER, C.ITEM, C.TIME]], parts=3)
    items = raw.item_features[["category"]].rename_axis(C.ITEM).reset_index()
    items[C.ITEM] = items[C.ITEM].astype(np.int64)
    items.to_parquet(tmp_path / "items.parquet", index=False)
    source = ParquetSource(tmp_path / "log", item_features_path=tmp_path / "items.parquet", category_feature="category")
    pandas_engine = Preprocessing()(source.load())
    polars_engine = Preprocessing(engine="polars")(source.scan())
    assert_same(pandas_engine, polars_engine)
    assert pandas_engine.num_interactions == len(frame.drop_duplicates([C.USER, C.ITEM]))
    assert pandas_engine.item_features.kinds["category"].kind == "categorical"


def test_parquet_source_names_a_missing_column_and_a_bad_time_type(tmp_path: Path) -> None:
    frame = pd.DataFrame({"u": [1, 2], "i": [3, 4], "t": ["x", "y"]})
    _parquet_log(tmp_path / "log", frame, parts=1)
    with pytest.raises(DataError, match=r"no column\(s\) \['user_id'"):
        ParquetSource(tmp_path / "log").scan()
    with pytest.raises(DataError, match=r"column 't' is \w*string"):
        ParquetSource(tmp_path / "log", user_col="u", item_col="i", time_col="t").scan()
    with pytest.raises(DataError, match=r"no \*\.parquet"):
        ParquetSource(tmp_path).parts()


@pytest.mark.slow
def test_polars_engine_gives_the_ml1m_dataset_unchanged() -> None:
    root = Path(os.environ.get("RECTORCH_DATA_DIR", "/nonexistent")) / "ml-1m"
    if not root.is_dir():
        pytest.skip(f"MovieLens-1M not found under {root} (set RECTORCH_DATA_DIR)")
    raw = MovieLens1MSasrecSource(root=root, with_features=True).load()
    assert_same(Preprocessing()(raw), Preprocessing(engine="polars")(raw))


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(-50, 50), st.integers(-(2**40), 2**40), st.integers(0, 3)), min_size=1))
def test_integer_id_columns_join_on_integers_and_match_pandas(rows) -> None:
    frame = pd.DataFrame(rows, columns=[C.USER, C.ITEM, C.TIME]).astype({C.USER: np.int32})
    raw = RawData(name="integers", interactions=frame)
    assert_same(Preprocessing()(raw), Preprocessing(engine="polars")(raw))


def test_parquet_text_ids_are_cleaned_alike_by_both_engines(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {C.USER: [" a", "a", "b ", "c", "c", "c"], C.ITEM: ["x", "y", "x", " z", "z", "y"], C.TIME: range(6)}
    )
    _parquet_log(tmp_path / "log", frame, parts=2)
    source = ParquetSource(tmp_path / "log")
    expected = Preprocessing()(source.load())
    assert_same(expected, Preprocessing(engine="polars")(source.scan()))
    assert list(expected.user_ids) == ["", "a", "b", "c"]


@pytest.mark.parametrize(
    ("users", "message"),
    [(["1", "1.0", "2"], "writes one id two ways"), (["1", " ", "2"], "empty")],
)
def test_parquet_bad_text_ids_fail_alike(tmp_path: Path, users, message) -> None:
    frame = pd.DataFrame({C.USER: users, C.ITEM: ["x", "y", "z"], C.TIME: [1, 2, 3]})
    _parquet_log(tmp_path / "log", frame, parts=1)
    source = ParquetSource(tmp_path / "log")
    for prepare in (lambda: Preprocessing()(source.load()), lambda: Preprocessing(engine="polars")(source.scan())):
        with pytest.raises(DataError, match=message):
            prepare()


def test_parquet_float_ids_and_missing_ratings_are_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame({C.USER: [1.0, 2.0], C.ITEM: [3, 4], C.TIME: [1, 2], "stars": [5.0, None]})
    _parquet_log(tmp_path / "floats", frame, parts=1)
    with pytest.raises(DataError, match="id column 'user_id' is double"):
        ParquetSource(tmp_path / "floats").scan()
    _parquet_log(tmp_path / "ratings", frame.astype({C.USER: np.int64}), parts=1)
    source = ParquetSource(tmp_path / "ratings", rating_col="stars")
    for prepare in (
        lambda: Preprocessing(min_rating=3)(source.load()),
        lambda: Preprocessing(min_rating=3, engine="polars")(source.scan()),
    ):
        with pytest.raises(DataError, match="missing or non-numeric"):
            prepare()


def test_processes_sharing_a_cold_cache_prepare_it_once(tmp_path: Path) -> None:
    """DDP ranks start together on an empty cache: one prepares, the others wait for its entry and load it."""
    import threading
    import time

    class CountingSource(SyntheticSource):
        loads = 0

        def load(self) -> RawData:
            type(self).loads += 1
            time.sleep(0.3)  # long enough for the other callers to find no entry yet
            return super().load()

    source = CountingSource(num_users=100, num_items=50, seed=5)
    results: list[PreparedDataset] = []
    workers = [
        threading.Thread(target=lambda: results.append(load_or_prepare(source, Preprocessing(), tmp_path, "arrow")))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert CountingSource.loads == 1 and len(results) == 3
    for other in results[1:]:
        assert_same(results[0], other)
