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
