"""Source readers: the generic file reader on tiny inline files, bad-input messages, and the real datasets."""

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rectorch.data import columns as C
from rectorch.data.errors import DataError
from rectorch.data.movielens import MovieLens1MRatingsSource, MovieLens1MSasrecSource, MovieLens100KSource
from rectorch.data.prepare import Preprocessing
from rectorch.data.prepared import PreparedDataset
from rectorch.data.sources import BeautySource, InteractionsFileSource

DATA_ROOT = Path(os.environ.get("RECTORCH_DATA_DIR", Path(__file__).parents[3] / "shared" / "data"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_with_datetime_strings_and_ratings(tmp_path):
    path = write(tmp_path / "log.csv", "u,i,t,r\nb,007,2020-01-01T00:00:10Z,4\na,x,1577836800,3.5\n")
    raw = InteractionsFileSource(path, user_col="u", item_col="i", time_col="t", rating_col="r").load()
    frame = raw.interactions
    assert frame[C.ITEM].tolist() == ["007", "x"]
    assert frame[C.TIME].tolist() == [1577836810, 1577836800]
    assert frame[C.RATING].tolist() == [4.0, 3.5]
    assert raw.files == [path] and raw.name == "csv"


def test_tsv_gz_default_separator(tmp_path):
    path = tmp_path / "log.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("user_id\titem_id\n1\t2\n1\t3\n")
    assert InteractionsFileSource(path).load().interactions[C.ITEM].tolist() == ["2", "3"]


def test_parquet_with_item_features(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "timestamp": [5, 6]}).to_parquet(path)
    items = write(tmp_path / "items.csv", "item_id,genre,tags,price\n10,drama,a|b,1.5\n11,comedy,b,2.0\n")
    source = InteractionsFileSource(
        path, time_col="timestamp", item_features_path=items, multi_value_cols=["tags"],
        category_feature="genre",
    )  # fmt: skip
    raw = source.load()
    assert raw.interactions[C.USER].tolist() == ["1", "2"]
    assert raw.item_features.loc["10", "tags"] == ["a", "b"]
    kinds = Preprocessing()(raw).item_features.kinds
    assert {n: k.kind for n, k in kinds.items()} == {
        "genre": "categorical",
        "tags": "multi",
        "price": "numeric",
    }
    assert source.files() == [path, items] and "path" not in source.config()


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("user,item\n1,2\n", {}, ["log.csv", "['user_id', 'item_id']", "columns found: ['user', 'item']"]),
        ("user_id;item_id\n1;2\n", {}, ["log.csv", "is `sep` right?"]),
        ("user_id,item_id\n1,2\n,3\n4,\n", {}, ["log.csv", "'user_id'", "1 empty", "data row 2"]),
        ("user_id,item_id\n1,2\n ,3\n", {}, ["'user_id'", "1 empty", "data row 2"]),
        (
            "user_id,item_id,ts\n1,2,100\n1,3,yesterday\n",
            {"time_col": "ts"},
            ["'ts'", "row 2", "'yesterday'"],
        ),
        ("user_id,item_id,r\n1,2,good\n", {"rating_col": "r"}, ["'r'", "row 1", "'good'"]),
        ("", {}, ["log.csv", "empty"]),
        ("user_id,item_id\n", {}, ["log.csv", "no rows"]),
    ],
)
def test_bad_input_names_file_column_and_value(tmp_path, text, kwargs, expected):
    path = write(tmp_path / "log.csv", text)
    with pytest.raises(DataError) as err:
        InteractionsFileSource(path, **kwargs).load()
    for fragment in expected:
        assert fragment in str(err.value)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match=r"file not found: .*nope\.csv"):
        InteractionsFileSource(tmp_path / "nope.csv").load()
    with pytest.raises(DataError, match="unsupported file type"):
        InteractionsFileSource(write(tmp_path / "log.json", "{}")).load()


@pytest.mark.parametrize(
    ("source", "command"),
    [
        (MovieLens1MSasrecSource, "python -m rectorch.data.download ml-1m --dest"),
        (MovieLens1MRatingsSource, "python -m rectorch.data.download ml-1m --dest"),
        (MovieLens100KSource, "python -m rectorch.data.download ml-100k --dest"),
        (BeautySource, "BERT4Rec"),
    ],
)
def test_missing_dataset_says_how_to_get_it(tmp_path, source, command):
    with pytest.raises(DataError) as err:
        source(tmp_path / "here").load()
    assert str(tmp_path / "here") in str(err.value) and command in str(err.value)


def real(folder: str) -> Path:
    root = DATA_ROOT / folder
    if not root.is_dir():
        pytest.skip(f"{folder} not found at {root}")
    return root


@pytest.fixture(scope="module")
def ml1m():
    source = MovieLens1MSasrecSource(real("ml-1m"))
    raw = source.load()
    return raw, Preprocessing()(raw)


@pytest.mark.slow
def test_ml1m_sasrec_counts_ids_and_features(ml1m):
    raw, data = ml1m
    assert (data.num_users, data.num_items, data.num_interactions) == (6040, 3416, 999_611)
    assert np.array_equal(data.items, raw.interactions[C.ITEM].to_numpy())  # internal id == file id
    assert data.timestamps is None and data.category_feature == "genres"
    # SASRec user 1 is original user 5988 (M, age 25 in users.dat)
    users = data.user_features
    gender = users.vocab["gender"][users.columns["gender"][1]]
    assert (gender, users.vocab["age"][users.columns["age"][1]]) == ("M", "25")
    assert set(data.item_features.kinds) == {"genres", "decade", "title"}


@pytest.mark.slow
def test_ml1m_ratings_file_users_1_to_2999():
    source = MovieLens1MRatingsSource(real("ml-1m"), filename="ratings.users0001-2999.dat.gz")
    data = Preprocessing()(source.load())
    assert (data.num_users, data.num_interactions) == (2999, 487_650)
    assert data.timestamps.min() == 970_620_734
    assert np.all(np.diff(data.timestamps)[np.diff(np.repeat(np.arange(2999), data.lengths()[1:])) == 0] >= 0)


@pytest.mark.slow
def test_ml100k_counts_and_features():
    data = Preprocessing()(MovieLens100KSource(real("ml-100k")).load())
    assert (data.num_users, data.num_items, data.num_interactions) == (943, 1682, 100_000)
    genres = data.item_features
    toy_story = [genres.vocab["genres"][c] for c in genres.columns["genres"][1] if c]
    assert toy_story == ["Animation", "Children's", "Comedy"]
    assert genres.vocab["decade"][genres.columns["decade"][1]] == "1990s"
    assert data.user_features.vocab["age"][data.user_features.columns["age"][1]] == "18-24"


@pytest.mark.slow
def test_beauty_counts():
    data = Preprocessing()(BeautySource(real("amazon-beauty-bert4rec")).load())
    assert (data.num_users, data.num_items, data.num_interactions) == (40_226, 54_542, 353_962)


def history(data: PreparedDataset, user: str) -> list[str]:
    """External item ids of ``user``'s prepared sequence."""
    u = data.user_ids.tolist().index(user)
    return data.item_ids[data.items[data.indptr[u] : data.indptr[u + 1]]].tolist()


REVIEWS = "user_id,item_id,{col}\n" + "".join(
    f"u{u},i{i},{t}\n" for u, i, t in [(1, 1, 1577836830), (2, 1, 1577836810), (1, 2, 1577836820), (2, 3, 1577836800)]
)  # a review file sorted by item: file order is not time order


@pytest.mark.parametrize("column", ["timestamp", "Time", "ts", "date", "event_time", "created_at", "when"])
def test_timestamp_like_column_without_time_col_is_refused(tmp_path, column):
    path = write(tmp_path / "reviews.csv", REVIEWS.format(col=column))
    with pytest.raises(DataError) as err:
        InteractionsFileSource(path).load()
    message = str(err.value)
    for fragment in (str(path), f"'{column}'", f"data.time_col={column}", "data.time_col=none"):
        assert fragment in message


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("published", ["2020-01-01", "2020-01-03", "2019-12-30", "2020-02-01"]),
        ("reviewed", ["01/31/2020", "1/2/2020", "12/30/2019 10:00", "02/01/2020"]),
        ("moment", ["2020-01-01T10:00:00Z", "2020-01-01 11:00", "2020-01-02", "2020-01-03"]),
        ("clock", [1577836800123, 1577836800456, 1577836801000, 1577836900000]),  # milliseconds
    ],
)
def test_datetime_or_unix_valued_column_without_time_col_is_refused(tmp_path, column, values):
    frame = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 3], column: values})
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=f"'{column}'.*data.time_col={column}"):
        InteractionsFileSource(path).load()


def test_parquet_datetime_column_without_time_col_is_refused(tmp_path):
    path = tmp_path / "log.parquet"
    stamps = pd.to_datetime(["2020-01-02", "2020-01-01", "2020-01-03"])
    pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 3], "moment": stamps}).to_parquet(path)
    with pytest.raises(DataError, match=r"log\.parquet.*'moment'"):
        InteractionsFileSource(path).load()


def test_explicit_choice_orders_by_time_or_by_file(tmp_path):
    path = write(tmp_path / "reviews.csv", REVIEWS.format(col="timestamp"))
    by_time = Preprocessing()(InteractionsFileSource(path, time_col="timestamp").load())
    by_file = Preprocessing()(InteractionsFileSource(path, time_col="none").load())
    as_none = Preprocessing()(InteractionsFileSource(path, time_col="None").load())  # Hydra reads `None` as text
    assert history(by_time, "u1") == ["i2", "i1"] and history(by_time, "u2") == ["i3", "i1"]
    assert history(by_file, "u1") == ["i1", "i2"] and history(by_file, "u2") == ["i1", "i3"]
    assert by_file.timestamps is None and np.array_equal(as_none.items, by_file.items)


@pytest.mark.parametrize(
    "text",
    [
        "user_id,item_id,rating,price\n1,2,5,19.99\n1,3,4,5.0\n2,2,3,7.5\n",  # small numbers are not times
        "user_id,item_id,position\n1,2,1\n1,3,2\n2,2,1\n",  # small counters are not unix times
        "user_id,item_id,title\n1,2,Dune\n1,3,2001: A Space Odyssey\n",
    ],
)
def test_files_without_a_time_like_column_keep_file_order_silently(tmp_path, text):
    path = write(tmp_path / "log.csv", text)
    source = InteractionsFileSource(path, rating_col="rating" if "rating" in text else None)
    assert C.TIME not in source.load().interactions.columns


def test_file_order_choice_shares_the_cache_key_of_no_choice(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id\n1,2\n")
    assert InteractionsFileSource(path, time_col="none").config() == InteractionsFileSource(path).config()
