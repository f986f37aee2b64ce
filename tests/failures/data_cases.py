"""The bad data files and data settings of the failure corpus, and how one attempt at each is observed.

Each case writes its files under ``<tmp>/data`` and reads them through the real source and ``load_or_prepare``
with a cache under ``<tmp>/cache`` (or, for CLI cases, through ``python -m rectorch.training.cli``). An
:class:`Outcome` records what happened: the error, the files left in the cache or run folders, and the input
files that changed. ``test_data_failures.py`` asserts on outcomes; the same functions can replay the corpus
against another checkout of the package (``PYTHONPATH``) to tally how it fared.
"""

import bz2
import gzip
import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rectorch.data.csr import Csr
from rectorch.data.graph_view import GraphView
from rectorch.data.movielens import MovieLens1MRatingsSource, MovieLens100KSource
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.prepared import FeatureTable
from rectorch.data.random_walks import RandomWalks
from rectorch.data.sources import BeautySource, InteractionsFileSource
from rectorch.data.synthetic import SyntheticSource
from rectorch.data.views import PairView, SequenceView

HEADER = "user_id,item_id,timestamp\n"
GOOD = HEADER + "1,10,100\n1,11,200\n2,10,300\n2,12,400\n"
MEGABYTE = 1 << 20
#: a clear message fits on one line of about this many characters (a tmp path takes ~100)
MAX_MESSAGE = 500


# ---------------------------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    """What one attempt did: the error (None = accepted), leftovers in cache/run folders, changed inputs."""

    error: BaseException | None = None
    message: str = ""
    returncode: int | None = None
    leftovers: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    target: str = ""  # the file the message must name


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (keyed by relative path)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(folder)}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _observe(tmp: Path, attempt: Callable[[Path], Any]) -> Outcome:
    data, cache = tmp / "data", tmp / "cache"
    before = digests(data)
    outcome = Outcome()
    try:
        attempt(cache)
    except Exception as error:  # the corpus observes every failure; the tests judge it
        outcome.error, outcome.message = error, str(error)
    outcome.leftovers = [str(p) for p in _files(cache)] if cache.exists() else []
    after = digests(data)
    outcome.changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return outcome


# ---------------------------------------------------------------------------------------------- writers


def text(name: str, body: str, encoding: str = "utf-8") -> Callable[[Path], Path]:
    def write(data: Path) -> Path:
        (data / name).write_bytes(body.encode(encoding))
        return data / name

    return write


def raw(name: str, content: bytes) -> Callable[[Path], Path]:
    def write(data: Path) -> Path:
        (data / name).write_bytes(content)
        return data / name

    return write


def compressed(name: str, body: str, keep: float = 1.0) -> Callable[[Path], Path]:
    """``body`` compressed by the suffix of ``name``, cut to the fraction ``keep`` of its bytes."""

    def write(data: Path) -> Path:
        packed = gzip.compress(body.encode()) if name.endswith(".gz") else bz2.compress(body.encode())
        (data / name).write_bytes(packed[: int(len(packed) * keep)])
        return data / name

    return write


def zipped(name: str, members: dict[str, str]) -> Callable[[Path], Path]:
    def write(data: Path) -> Path:
        with zipfile.ZipFile(data / name, "w") as archive:
            for member, body in members.items():
                archive.writestr(member, body)
        return data / name

    return write


def folder(name: str) -> Callable[[Path], Path]:
    def write(data: Path) -> Path:
        (data / name).mkdir()
        (data / name / "part-0.csv").write_text(GOOD)
        return data / name

    return write


def missing(name: str) -> Callable[[Path], Path]:
    return lambda data: data / name


def parquet(name: str, frame: dict[str, list]) -> Callable[[Path], Path]:
    def write(data: Path) -> Path:
        pd.DataFrame(frame).to_parquet(data / name)
        return data / name

    return write


def with_items(items: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """A good interactions file, plus the item table that ``items`` writes (passed as ``items_path``)."""

    def write(data: Path) -> Path:
        items(data)
        return text("log.csv", GOOD)(data)

    return write


def rows(*timestamps: str, header: str = HEADER) -> str:
    """A table whose i-th row has timestamp ``timestamps[i]`` (users and items vary)."""
    return header + "".join(f"{i % 3},{10 + i},{t}\n" for i, t in enumerate(timestamps))


# ---------------------------------------------------------------------------------------------- file cases


@dataclass(frozen=True)
class FileCase:
    """A bad file read by ``InteractionsFileSource(path, **options)`` (or ``reader(path)`` when given).

    ``expect`` are fragments of the one-line message beyond the file's own path (always required).
    """

    id: str
    write: Callable[[Path], Path]
    expect: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    reader: Callable[[Path], Any] | None = None
    names: str | None = None  # the file the message must name, when not the one ``write`` returns


def interactions(path: Path, options: dict[str, Any]) -> InteractionsFileSource:
    items = options.get("item_features_path")
    if items is not None:
        options = {**options, "item_features_path": path.parent / items}
    return InteractionsFileSource(path, **options)


def beauty(path: Path) -> BeautySource:
    return BeautySource(path.parent)


def movielens_1m(path: Path) -> MovieLens1MRatingsSource:
    root = path.parent
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (root / "movies.dat").write_text("10::Toy Story (1995)::Animation|Comedy\n11::Heat (1995)::Action\n")
    return MovieLens1MRatingsSource(root, filename=path.name)


def movielens_100k(path: Path) -> MovieLens100KSource:
    root = path.parent
    (root / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    genres = "|".join(["0"] * 19)
    (root / "u.item").write_text(f"10|Toy Story (1995)|01-Jan-1995||http://x|{genres}\n")
    return MovieLens100KSource(root)


TIME = {"time_col": "timestamp"}
FILE_ORDER = {"time_col": "none"}
LONG_JUNK = "2020-01-01 " + "1." * (MEGABYTE // 2)

FILE_CASES = [
    # files that are not readable text
    FileCase("empty file", text("log.csv", ""), ("empty",), TIME),
    FileCase("blank lines only", text("log.csv", "\n\n   \n\n"), ("empty",), TIME),
    FileCase("binary file", raw("log.csv", bytes(range(256)) * 8), ("binary",), TIME),
    FileCase("binary file without NUL bytes", raw("log.csv", bytes(range(1, 256)) * 8), ("not UTF-8",), TIME),
    FileCase("UTF-16 with byte-order mark", text("log.csv", GOOD, "utf-16"), ("UTF-16",), TIME),
    FileCase("UTF-16 without byte-order mark", text("log.csv", GOOD, "utf-16-le"), ("UTF-16",), TIME),
    FileCase("Latin-1 text", text("log.csv", HEADER + "café,1,100\n", "latin-1"), ("not UTF-8", "0xe9"), TIME),
    FileCase("header only", text("log.csv", HEADER), ("no rows",), TIME),
    FileCase("truncated .csv.gz", compressed("log.csv.gz", GOOD * 50, keep=0.5), ("truncated",), TIME),
    FileCase("plain text named .csv.gz", text("log.csv.gz", GOOD), ("truncated or corrupt",), TIME),
    FileCase("truncated .csv.bz2", compressed("log.csv.bz2", GOOD * 50, keep=0.5), ("truncated",), TIME),
    FileCase("zip with two files", zipped("log.csv.zip", {"a.csv": GOOD, "b.csv": GOOD}), ("exactly one",), TIME),
    FileCase("corrupt .csv.zip", raw("log.csv.zip", b"PK\x03\x04" + bytes(200)), ("corrupt",), TIME),
    FileCase("directory as path", folder("events.csv"), ("directory",), TIME),
    FileCase("missing file", missing("nope.csv"), ("file not found",), TIME),
    FileCase("unsupported suffix", text("log.json", '{"user_id": 1}'), ("unsupported file type",), TIME),
    FileCase("corrupt parquet", raw("log.parquet", b"PAR1" + bytes(100)), ("Parquet",), TIME),
    # columns
    FileCase("missing user column", text("log.csv", "user,item_id\n1,2\n"), ("['user_id']", "not found"), FILE_ORDER),
    FileCase("missing time column", text("log.csv", "user_id,item_id\n1,2\n"), ("['ts']",), {"time_col": "ts"}),
    FileCase(
        "duplicate column names", text("log.csv", HEADER[:-1] + ",item_id\n1,2,3,4\n"), ("duplicate", "'item_id'"), TIME
    ),
    FileCase("wrong separator", text("log.csv", GOOD.replace(",", ";")), ("is `sep` right?",), TIME),
    FileCase(
        "overlong header name",
        text("log.csv", "x" * MEGABYTE + ",item_id\n1,2\n"),
        ("['user_id']", "not found", "..."),
        FILE_ORDER,
    ),
    FileCase("timestamp column left unchosen", text("log.csv", GOOD), ("data.time_col=timestamp",)),
    # rows
    FileCase("a later row too long", text("log.csv", GOOD + "3,4,5,6\n"), ("Expected 3 fields",), TIME),
    FileCase(
        "first data row too long", text("log.csv", HEADER + "1,2,3,4\n" + GOOD[len(HEADER) :]), ("more fields",), TIME
    ),
    FileCase("unterminated quote", text("log.csv", HEADER + '1,"10,100\n2,11,200\n'), ("EOF inside string",), TIME),
    # ids
    FileCase("empty user id", text("log.csv", GOOD + ",12,500\n"), ("'user_id'", "empty or missing", "row 5"), TIME),
    FileCase("NA item id", text("log.csv", GOOD + "3,NA,500\n"), ("'item_id'", "empty or missing", "row 5"), TIME),
    FileCase(
        "NaN item id in parquet",
        parquet("log.parquet", {"user_id": [1, 2], "item_id": [1.0, np.nan], "timestamp": [5, 6]}),
        ("'item_id'", "missing"),
        TIME,
    ),
    FileCase("user ids 1 and 1.0", text("log.csv", GOOD + "1.0,13,500\n"), ("'user_id'", "'1'", "'1.0'"), TIME),
    FileCase("item ids 10 and 10.00", text("log.csv", GOOD + "3,10.00,500\n"), ("'item_id'", "'10.00'"), TIME),
    # timestamps
    FileCase(
        "timestamp above int64",
        text("log.csv", rows("100", "9223372036854775808")),
        ("'timestamp'", "int64", "row 2"),
        TIME,
    ),
    FileCase("timestamp far above int64", text("log.csv", rows("99999999999999999999", "1")), ("int64", "row 1"), TIME),
    FileCase("timestamp 1e30", text("log.csv", rows("5", "1e30")), ("int64", "1e+30"), TIME),
    FileCase("timestamp -1e30 among dates", text("log.csv", rows("2020-01-01", "-1e30")), ("int64", "row 2"), TIME),
    FileCase("timestamp inf", text("log.csv", rows("5", "inf")), ("int64", "inf"), TIME),
    FileCase("empty timestamp", text("log.csv", rows("5", "")), ("'timestamp'", "missing", "row 2"), TIME),
    FileCase("timestamp 'yesterday'", text("log.csv", rows("5", "yesterday")), ("'yesterday'", "row 2"), TIME),
    FileCase(
        "1 MB garbage timestamp", text("log.csv", rows("5", "x" * MEGABYTE)), ("'timestamp'", "row 2", "longer"), TIME
    ),
    FileCase("1 MB date-like timestamp", text("log.csv", rows(LONG_JUNK)), ("'timestamp'", "row 1", "longer"), TIME),
    FileCase("a column of garbage timestamps", text("log.csv", rows(*["soon"] * 200_000)), ("'soon'", "row 1"), TIME),
    FileCase(
        "garbage after ISO dates",
        text("log.csv", rows("2020-01-01", "2020-01-02T10:00Z", "later")),
        ("'later'", "row 3"),
        TIME,
    ),
    FileCase(
        "date beyond year 294247",
        text("log.csv", rows("2020-01-01", "300000-01-01")),
        ("'300000-01-01'", "row 2"),
        TIME,
    ),
    FileCase(
        "non-numeric rating",
        text("log.csv", "user_id,item_id,r\n1,2,good\n"),
        ("'r'", "'good'"),
        {"time_col": "none", "rating_col": "r"},
    ),
    # item features
    FileCase(
        "item table missing",
        text("log.csv", GOOD),
        ("file not found", "items.csv"),
        {**TIME, "item_features_path": "items.csv"},
        names="items.csv",
    ),
    FileCase(
        "item table empty",
        with_items(text("items.csv", "")),
        ("empty",),
        {**TIME, "item_features_path": "items.csv"},
        names="items.csv",
    ),
    FileCase(
        "item table binary",
        with_items(raw("items.csv", bytes(range(256)))),
        ("binary",),
        {**TIME, "item_features_path": "items.csv"},
        names="items.csv",
    ),
    FileCase(
        "item table without its id column",
        with_items(text("items.csv", "id,genre\n10,drama\n")),
        ("['item_id']", "not found"),
        {**TIME, "item_features_path": "items.csv"},
        names="items.csv",
    ),
    FileCase(
        "category feature not in item table",
        with_items(text("items.csv", "item_id,genre\n10,drama\n")),
        ("['kind']",),
        {**TIME, "item_features_path": "items.csv", "category_feature": "kind"},
        names="items.csv",
    ),
    FileCase(
        "multi-value column not in item table",
        with_items(text("items.csv", "item_id,genre\n10,drama\n")),
        ("['tags']",),
        {**TIME, "item_features_path": "items.csv", "multi_value_cols": ["tags"]},
        names="items.csv",
    ),
    # the fixed-layout readers
    FileCase("beauty.txt with a word", text("beauty.txt", "1 2\n1 x\n"), ("two integer ids",), reader=beauty),
    FileCase("beauty.txt empty", text("beauty.txt", ""), ("no interactions",), reader=beauty),
    FileCase(
        "beauty.txt.gz truncated", compressed("beauty.txt.gz", "1 2\n" * 5000, 0.5), ("truncated",), reader=beauty
    ),
    FileCase(
        "beauty.txt id above int64", text("beauty.txt", "1 2\n1 99999999999999999999\n"), ("integer",), reader=beauty
    ),
    FileCase(
        "ratings.dat garbage timestamp",
        text("ratings.dat", "1::10::5::978300760\n2::11::3::abc\n"),
        ("'timestamp'", "'abc'", "row 2"),
        reader=movielens_1m,
    ),
    FileCase(
        "ratings.dat.gz truncated",
        compressed("ratings.dat.gz", "1::10::5::978300760\n" * 5000, 0.5),
        ("truncated",),
        reader=movielens_1m,
    ),
    FileCase(
        "u.data timestamp above int64",
        text("u.data", "1\t10\t5\t874965758\n2\t10\t3\t99999999999999999999\n"),
        ("int64", "row 2"),
        reader=movielens_100k,
    ),
]


def attempt_file(case: FileCase, tmp: Path) -> Outcome:
    """Write ``case``'s files under ``tmp/data`` and prepare them with a cache under ``tmp/cache``."""
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = case.write(data)
    try:  # the fixed-layout readers write their side files here, before the inputs are fingerprinted
        source, early = (case.reader(path) if case.reader else interactions(path, dict(case.options))), None
    except Exception as error:
        source, early = None, error

    def attempt(cache: Path) -> None:
        if early is not None:
            raise early
        load_or_prepare(source, Preprocessing(), cache)

    outcome = _observe(tmp, attempt)
    outcome.target = str(data / case.names if case.names else path)
    return outcome


# ---------------------------------------------------------------------------------------------- setting cases

TINY_TRAIN = Csr(np.array([0, 0, 4, 7]), np.array([1, 2, 3, 4, 2, 3, 5]))


def exercise_view(view: Any) -> None:
    """One training batch from a tiny split, as a model would ask for it."""
    view.train_dataset(TINY_TRAIN, (FeatureTable(), FeatureTable())).collate([0, 1])


def graph_view(**options: Any) -> GraphView:
    walks = RandomWalks(num_walks=4, walk_length=2, top_k=2)
    defaults = {"num_negatives": 3, "num_hard": 1, "hard_ranks": (0, 2), "history_len": 3}
    return GraphView(walks, walks, walks, **{**defaults, **options})


def synthetic(cache: Path, **options: Any) -> None:
    load_or_prepare(SyntheticSource(**{"num_users": 30, "num_items": 40, **options}), Preprocessing(), cache)


def file_roles(cache: Path, **options: Any) -> None:
    path = cache.parent / "data" / "log.csv"
    load_or_prepare(InteractionsFileSource(path, **options), Preprocessing(), cache)


@dataclass(frozen=True)
class SettingCase:
    """A bad data setting: ``run(cache)`` builds (and uses) the component; ``expect`` names key and value."""

    id: str
    run: Callable[[Path], Any]
    expect: tuple[str, ...]


SETTING_CASES = [
    SettingCase("num_users=0", lambda c: synthetic(c, num_users=0), ("num_users", "0")),
    SettingCase("num_users=-5", lambda c: synthetic(c, num_users=-5), ("num_users", "-5")),
    SettingCase("num_users=abc", lambda c: synthetic(c, num_users="abc"), ("num_users", "'abc'")),
    SettingCase("num_users=1.5", lambda c: synthetic(c, num_users=1.5), ("num_users", "1.5")),
    SettingCase("num_users=true", lambda c: synthetic(c, num_users=True), ("num_users", "True")),
    SettingCase("num_items=0", lambda c: synthetic(c, num_items=0), ("num_items", "0")),
    SettingCase("num_categories=0", lambda c: synthetic(c, num_categories=0), ("num_categories", "0")),
    SettingCase("num_categories > num_items", lambda c: synthetic(c, num_categories=50), ("num_categories", "50")),
    SettingCase(
        "categories_per_segment > num_categories",
        lambda c: synthetic(c, categories_per_segment=30),
        ("categories_per_segment", "30"),
    ),
    SettingCase("follow_prob=1.5", lambda c: synthetic(c, follow_prob=1.5), ("follow_prob", "1.5")),
    SettingCase("follow_prob=abc", lambda c: synthetic(c, follow_prob="abc"), ("follow_prob", "'abc'")),
    SettingCase("seq_len_mean=0", lambda c: synthetic(c, seq_len_mean=0), ("seq_len_mean", "0")),
    SettingCase("synthetic seed=-1", lambda c: synthetic(c, seed=-1), ("seed", "-1")),
    SettingCase("synthetic seed=abc", lambda c: synthetic(c, seed="abc"), ("seed", "'abc'")),
    SettingCase("max_len=abc", lambda c: exercise_view(SequenceView(max_len="abc")), ("max_len", "'abc'")),
    SettingCase("max_len=0", lambda c: exercise_view(SequenceView(max_len=0)), ("max_len", "0")),
    SettingCase("max_len=2.5", lambda c: exercise_view(SequenceView(max_len=2.5)), ("max_len", "2.5")),
    SettingCase("max_len=true", lambda c: exercise_view(SequenceView(max_len=True)), ("max_len", "True")),
    SettingCase("history_len=abc", lambda c: exercise_view(PairView(history_len="abc")), ("history_len", "'abc'")),
    SettingCase("history_len=-3", lambda c: exercise_view(PairView(history_len=-3)), ("history_len", "-3")),
    SettingCase(
        "graph history_len=abc", lambda c: exercise_view(graph_view(history_len="abc")), ("history_len", "'abc'")
    ),
    SettingCase("graph num_layers=0", lambda c: exercise_view(graph_view(num_layers=0)), ("num_layers", "0")),
    SettingCase(
        "graph hard_ranks=[a, 5]", lambda c: exercise_view(graph_view(hard_ranks=("a", 5))), ("hard_ranks", "'a'")
    ),
    SettingCase("graph hard_ranks=[3]", lambda c: exercise_view(graph_view(hard_ranks=(3,))), ("hard_ranks", "(3,)")),
    SettingCase(
        "graph num_negatives=-1", lambda c: exercise_view(graph_view(num_negatives=-1)), ("num_negatives", "-1")
    ),
    SettingCase(
        "user_col == item_col",
        lambda c: file_roles(c, item_col="user_id", time_col="none"),
        ("data.user_col", "data.item_col", "'user_id'"),
    ),
    SettingCase(
        "time_col == rating_col",
        lambda c: file_roles(c, time_col="timestamp", rating_col="timestamp"),
        ("data.time_col", "data.rating_col"),
    ),
    SettingCase(
        "multi_value_sep empty",
        lambda c: file_roles(c, time_col="timestamp", multi_value_sep=""),
        ("multi_value_sep", "''"),
    ),
]


def attempt_setting(case: SettingCase, tmp: Path) -> Outcome:
    """Run ``case`` with a good ``tmp/data/log.csv`` at hand and a cache under ``tmp/cache``."""
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "log.csv").write_text(GOOD)
    return _observe(tmp, case.run)


# ---------------------------------------------------------------------------------------------- CLI cases

QUIET = ["logger=none", "callbacks=none", "model=popularity"]
SYNTHETIC = [*QUIET, "data.source.num_users=60", "data.source.num_items=40"]


@dataclass(frozen=True)
class CliCase:
    """A ``rectorch-train`` run: ``write`` puts files under the data folder and returns the overrides."""

    id: str
    write: Callable[[Path], list[str]]
    expect: tuple[str, ...]


def csv_run(writer: Callable[[Path], Path], *extra: str) -> Callable[[Path], list[str]]:
    def write(data: Path) -> list[str]:
        return ["data=csv", f"data.path={writer(data)}", *QUIET, *extra]

    return write


CSV_TIME = "data.time_col=timestamp"
#: 5 users with 5 items each, 25 items in all: enough for a run to finish, so an accepted bad row goes unnoticed
TRAINABLE = HEADER + "".join(f"{u},{5 * u + i},{1000 * u + i}\n" for u in range(1, 6) for i in range(5))
BAD_ROW = "data row 26"
#: TRAINABLE with a second ``item_id`` column
DUPLICATED = "".join(f"{line},{'item_id' if not n else 0}\n" for n, line in enumerate(TRAINABLE.splitlines()))
CLI_CASES = [
    CliCase("empty file", csv_run(text("log.csv", ""), CSV_TIME), ("log.csv", "empty")),
    CliCase("binary file", csv_run(raw("log.csv", bytes(range(256)) * 8), CSV_TIME), ("log.csv", "binary")),
    CliCase("UTF-16 file", csv_run(text("log.csv", TRAINABLE, "utf-16"), CSV_TIME), ("log.csv", "UTF-16")),
    CliCase("header only", csv_run(text("log.csv", HEADER), CSV_TIME), ("log.csv", "no rows")),
    CliCase(
        "truncated .csv.gz",
        csv_run(compressed("log.csv.gz", TRAINABLE * 20, 0.5), CSV_TIME),
        ("log.csv.gz", "truncated"),
    ),
    CliCase("directory as path", csv_run(folder("events.csv"), CSV_TIME), ("events.csv", "directory")),
    CliCase(
        "missing column",
        csv_run(text("log.csv", TRAINABLE.replace("user_id", "user")), CSV_TIME),
        ("log.csv", "['user_id']"),
    ),
    CliCase(
        "duplicate columns",
        csv_run(text("log.csv", DUPLICATED), CSV_TIME),
        ("log.csv", "duplicate", "'item_id'"),
    ),
    CliCase(
        "NaN ids", csv_run(text("log.csv", TRAINABLE + "NaN,12,5000\n"), CSV_TIME), ("log.csv", "'user_id'", BAD_ROW)
    ),
    CliCase("ids 1 and 1.0", csv_run(text("log.csv", TRAINABLE + "1.0,13,5000\n"), CSV_TIME), ("log.csv", "'1.0'")),
    CliCase(
        "timestamp above int64",
        csv_run(text("log.csv", TRAINABLE + "4,13,9223372036854775808\n"), CSV_TIME),
        ("log.csv", "'timestamp'", "int64", BAD_ROW),
    ),
    CliCase(
        "1 MB garbage timestamp",
        csv_run(text("log.csv", TRAINABLE + f"4,13,{LONG_JUNK}\n"), CSV_TIME),
        ("log.csv", "'timestamp'", BAD_ROW),
    ),
    CliCase("num_users=0", lambda d: [*SYNTHETIC, "data.source.num_users=0"], ("num_users", "0")),
    CliCase("num_users=abc", lambda d: [*SYNTHETIC, "data.source.num_users=abc"], ("num_users", "'abc'")),
    CliCase("max_len=abc", lambda d: [*SYNTHETIC, "model.view.max_len=abc"], ("max_len", "'abc'")),
]


def attempt_cli(case: CliCase, tmp: Path, pythonpath: str | None = None, timeout: float = 600) -> Outcome:
    """Run ``rectorch-train`` on ``case`` with every output under ``tmp/logs`` (which holds a user's file)."""
    data, logs = tmp / "data", tmp / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "notes.txt").write_text("a file of the user's, next to the runs")
    overrides = case.write(data)
    env = {**os.environ, "RECTORCH_HOME": str(tmp), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    before, inputs = digests(logs), digests(data)
    command = [sys.executable, "-m", "rectorch.training.cli", *overrides, f"paths.log_dir={logs}"]
    outcome = Outcome()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=env)
        outcome.returncode, outcome.message = done.returncode, done.stderr
    except subprocess.TimeoutExpired as error:
        outcome.error, outcome.message = error, f"still running after {timeout:.0f} s"
    after = digests(logs)
    outcome.leftovers = sorted(k for k in after.keys() - before.keys())
    outcome.changed = sorted(k for k in before if after.get(k) != before[k])
    outcome.changed += sorted(k for k, v in digests(data).items() if inputs.get(k) != v)
    return outcome


def error_lines(stderr: str) -> list[str]:
    """The ``rectorch-train: error:`` lines of a run's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("rectorch-train: error:")]
