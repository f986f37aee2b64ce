"""MovieLens readers (ML-1M SASRec file, ML-1M official ratings, ML-100K) and their shared feature helpers.

Item features: ``genres`` (multi), ``decade`` (categorical, e.g. ``1990s``), ``title`` (multi: lowercase
word tokens shared by at least two titles). User features: ``gender``, ``age``, ``occupation``
(categorical; ML-100K ages bucketed like ML-1M's codes).
"""

import csv
import dataclasses
import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rectorch.data import columns as C
from rectorch.data.cells import one_line, parse_numbers, parse_timestamps
from rectorch.data.errors import DataError
from rectorch.data.raw import RawData
from rectorch.data.sources import data_config
from rectorch.data.tables import DECOMPRESS_ERRORS, find_file, read_pairs

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])
AGE_LABELS = np.array(["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"])
TITLE_YEAR = r"\s*\((\d{4})\)\s*$"


def download_hint(name: str, root: Path) -> str:
    return f"Download it with `python -m rectorch.data.download {name} --dest {root.parent}`."


def read_delimited(path: Path, names: list[str], sep: str = "::", encoding: str = "latin-1") -> pd.DataFrame:
    """Read a headerless MovieLens file (``::`` or ``|`` separated, optionally gzipped) as text columns."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding=encoding) as f:
            text = f.read()
    except DECOMPRESS_ERRORS as err:
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {one_line(err)}); truncated or corrupt?") from err
    text = text.replace(sep, "\x1f")  # the fast C parser takes one-character separators only
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep="\x1f", names=names, header=None, dtype=str,
            quoting=csv.QUOTE_NONE, keep_default_na=False, index_col=False,
        )  # fmt: skip
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: file is empty") from err
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: expected {len(names)} {sep!r}-separated fields per line: {one_line(err)}") from err
    if frame.empty:
        raise DataError(f"{path}: file is empty")
    return frame


def typed_ratings(ratings: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A ratings table with float ratings and int64 timestamps; a bad cell raises a DataError naming it."""
    return ratings.assign(
        **{
            C.RATING: parse_numbers(ratings[C.RATING], path, C.RATING),
            C.TIME: parse_timestamps(ratings[C.TIME], path, C.TIME),
        }
    )


def title_tokens(titles: pd.Series, min_count: int = 2) -> pd.Series:
    """Lowercase word tokens of each title (year removed), keeping tokens found in ``min_count`` titles."""
    tokens = titles.str.replace(TITLE_YEAR, "", regex=True).str.lower().str.findall(r"[a-z0-9]+")
    flat = tokens.explode().dropna()
    pairs = pd.DataFrame({"row": flat.index, "token": flat.to_numpy()}).drop_duplicates()
    titles_per_token = pairs.groupby("token")["row"].transform("size")
    kept = pairs[titles_per_token >= min_count]
    return kept.groupby("row", sort=False)["token"].agg(list).reindex(titles.index)


def movie_features(titles: pd.Series, genres: pd.Series, years: pd.Series) -> pd.DataFrame:
    """Genres (lists), decade (e.g. ``1990s``) and title tokens, indexed like ``titles``."""
    year = pd.to_numeric(years, errors="coerce")
    decade = (year // 10 * 10).astype("Int64").astype(str).where(year.notna()) + "s"
    return pd.DataFrame({"genres": genres, "decade": decade, "title": title_tokens(titles)})


def ml1m_movies(path: Path) -> pd.DataFrame:
    """``movies.dat`` -> item features indexed by original MovieID (str)."""
    movies = read_delimited(path, ["movie", "title", "genres"]).set_index("movie")
    years = movies["title"].str.extract(TITLE_YEAR, expand=False)
    return movie_features(movies["title"], movies["genres"].str.split("|"), years)


def ml1m_users(path: Path) -> pd.DataFrame:
    """``users.dat`` -> user features indexed by original UserID (str); age and occupation are codes."""
    users = read_delimited(path, ["user", "gender", "age", "occupation", "zip"]).set_index("user")
    codes = {col: parse_numbers(users[col], path, col).astype(np.int64) for col in ("age", "occupation")}
    return users[["gender"]].assign(**codes)


def ml100k_items(path: Path) -> pd.DataFrame:
    """``u.item`` -> item features indexed by item id (str); genres from the 19 flag columns."""
    names = ["item", "title", "release", "video_release", "url", *ML100K_GENRES]
    items = read_delimited(path, names, sep="|").set_index("item")
    flags = items[list(ML100K_GENRES)].eq("1").stack()
    flags = flags[flags]
    names = pd.Series(flags.index.get_level_values(1), index=flags.index.get_level_values(0))
    genres = names.groupby(level=0, sort=False).agg(list)
    years = items["release"].str.extract(r"(\d{4})$", expand=False)
    return movie_features(items["title"], genres.reindex(items.index), years)


def ml100k_users(path: Path) -> pd.DataFrame:
    """``u.user`` -> user features indexed by user id (str); ages bucketed like ML-1M."""
    users = read_delimited(path, ["user", "age", "gender", "occupation", "zip"], sep="|").set_index("user")
    age = AGE_LABELS[np.searchsorted(AGE_EDGES, parse_numbers(users["age"], path, "age"), side="right")]
    return pd.DataFrame({"gender": users["gender"], "age": age, "occupation": users["occupation"]})


def read_id_map(path: Path) -> pd.Series:
    """``sas_id original_id`` per line -> Series original id (str) indexed by SASRec id (str)."""
    frame = pd.read_csv(path, sep=" ", header=None, names=["sas", "original"], dtype=str)
    return frame.set_index("sas")["original"]


@dataclasses.dataclass
class MovieLens1MSasrecSource:
    """ML-1M as processed for SASRec (``ml-1m.txt[.gz]``): chronological per user, no timestamps.

    Ids are SASRec's 1..6040 / 1..3416; features join ``users.dat`` / ``movies.dat`` through
    ``sasrec_gsasrec_split/sas_to_original_{users,items}.txt``.

    Args:
        root: the ``ml-1m`` folder.
        with_features: also read user and item side features.
    """

    root: str | Path
    with_features: bool = True

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def files(self) -> list[Path]:
        hint = (
            "It is kang205/SASRec's data/ml-1m.txt. The official GroupLens files "
            f"(`python -m rectorch.data.download ml-1m --dest {self.root.parent}`) hold ratings.dat "
            "instead: read them with data=ml1m_raw."
        )
        files = [find_file([self.root / "ml-1m.txt.gz", self.root / "ml-1m.txt"], hint)]
        if self.with_features:
            maps = self.root / "sasrec_gsasrec_split"
            names = [maps / "sas_to_original_users.txt", maps / "sas_to_original_items.txt"]
            names += [self.root / "users.dat", self.root / "movies.dat"]
            files += [find_file([p], "Or set with_features=false.") for p in names]
        return files

    def config(self) -> dict[str, Any]:
        return data_config(self, "root")

    def load(self) -> RawData:
        files = self.files()
        raw = RawData(name="ml1m", interactions=read_pairs(files[0]), files=files)
        if self.with_features:
            user_map, item_map, users, movies = files[1:]
            raw.user_features = _join(read_id_map(user_map), ml1m_users(users))
            raw.item_features = _join(read_id_map(item_map), ml1m_movies(movies))
            raw.category_feature = "genres"
        return raw


def _join(id_map: pd.Series, features: pd.DataFrame) -> pd.DataFrame:
    """Features re-indexed from original ids to the ids of ``id_map``'s index."""
    return features.reindex(id_map.to_numpy()).set_axis(id_map.index)


@dataclasses.dataclass
class MovieLens1MRatingsSource:
    """ML-1M in the official ``ratings.dat`` layout ``UserID::MovieID::Rating::Timestamp``, with features.

    Args:
        root: the ``ml-1m`` folder (as extracted by ``rectorch.data.download``).
        filename: ratings file inside ``root``; a ``.gz`` twin is accepted.
    """

    root: str | Path
    filename: str = "ratings.dat"

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def files(self) -> list[Path]:
        ratings = self.root / self.filename
        twin = ratings.with_name(ratings.name[:-3]) if ratings.name.endswith(".gz") else Path(f"{ratings}.gz")
        hint = download_hint("ml-1m", self.root)
        return [find_file([ratings, twin], hint)] + [
            find_file([self.root / n], hint) for n in ("users.dat", "movies.dat")
        ]

    def config(self) -> dict[str, Any]:
        return data_config(self, "root")

    def load(self) -> RawData:
        files = self.files()
        ratings = read_delimited(files[0], [C.USER, C.ITEM, C.RATING, C.TIME])
        return RawData(
            name="ml1m_raw",
            interactions=typed_ratings(ratings, files[0]),
            user_features=ml1m_users(files[1]),
            item_features=ml1m_movies(files[2]),
            files=files,
            category_feature="genres",
        )


@dataclasses.dataclass
class MovieLens100KSource:
    """ML-100K official files: ``u.data`` (user, item, rating, timestamp), ``u.user``, ``u.item``.

    Args:
        root: the ``ml-100k`` folder.
    """

    root: str | Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def files(self) -> list[Path]:
        hint = download_hint("ml-100k", self.root)
        return [find_file([self.root / n], hint) for n in ("u.data", "u.user", "u.item")]

    def config(self) -> dict[str, Any]:
        return data_config(self, "root")

    def load(self) -> RawData:
        files = self.files()
        ratings = read_delimited(files[0], [C.USER, C.ITEM, C.RATING, C.TIME], sep="\t")
        return RawData(
            name="ml100k",
            interactions=typed_ratings(ratings, files[0]),
            user_features=ml100k_users(files[1]),
            item_features=ml100k_items(files[2]),
            files=files,
            category_feature="genres",
        )
