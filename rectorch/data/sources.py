"""Source readers: each reads its files and returns :class:`RawData` with interactions in file order.

Every source is a small dataclass that Hydra instantiates with ``_target_``. Besides ``load()`` it exposes
``files()`` (the files ``load()`` reads) and ``config()`` (the arguments that change the data, file
locations excluded), so a cache can be keyed on content without reading the data.
"""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from rectorch.data import columns as C
from rectorch.data.errors import DataError
from rectorch.data.raw import RawData

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSIONS = ("", ".gz", ".bz2", ".xz", ".zip")
#: ``time_col`` value that keeps file order on purpose (Hydra reads ``none``/``None`` as this text)
FILE_ORDER = "none"
TIME_NAMES = {"timestamp", "time", "ts", "date", "datetime", "event_time", "created_at", "updated_at", "epoch"}
TIME_SUFFIXES = ("_time", "_ts", "_at", "_date", "_datetime", "_timestamp")
#: unix times from 1990-01-01 to 2100-01-01, in seconds and in milliseconds
UNIX_RANGES = ((631_152_000, 4_102_444_800), (631_152_000_000, 4_102_444_800_000))
#: dates as text: 2020-01-31[T10:00...], 2020/1/31, 31/01/2020, 1/31/2020 [10:00...]
DATE_TEXT = r"^\s*(\d{4}[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})([ T]\d{1,2}:\d{2}.*)?\s*$"


class Source(Protocol):
    """What ``load_or_prepare`` needs from a reader."""

    def load(self) -> RawData: ...

    def files(self) -> list[Path]: ...

    def config(self) -> dict[str, Any]: ...


def data_config(source: Any, *locations: str) -> dict[str, Any]:
    """A dataclass source's arguments minus its file locations (their content is hashed instead)."""
    return {k: v for k, v in dataclasses.asdict(source).items() if k not in locations}


def find_file(candidates: Sequence[Path], hint: str = "") -> Path:
    """Return the first existing path, or raise a DataError listing every path tried and how to get it."""
    for path in candidates:
        if path.is_file():
            return path
    tried = " or ".join(str(p) for p in candidates)
    raise DataError(f"file not found: {tried}. {hint}".strip())


def read_pairs(path: Path) -> pd.DataFrame:
    """Read a ``user item`` per line file (SASRec/BERT4Rec layout, optionally gzipped) in file order."""
    try:
        frame = pd.read_csv(path, sep=" ", header=None, names=[C.USER, C.ITEM], dtype=np.int64)
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: expected two integer ids per line ('user item'): {err}") from err
    if frame.empty:
        raise DataError(f"{path}: file has no interactions")
    return frame


def read_table(path: Path, sep: str | None = None, str_cols: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV/TSV/TXT (optionally compressed) or Parquet file; ``str_cols`` are read as text."""
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if name.endswith(".parquet"):
        frame = pd.read_parquet(path)
    elif any(name.endswith(s + z) for s in TEXT_SUFFIXES for z in COMPRESSIONS):
        sep = sep or ("\t" if ".tsv" in name else ",")
        try:
            frame = pd.read_csv(path, sep=sep, dtype=dict.fromkeys(str_cols, str))
        except pd.errors.EmptyDataError as err:
            raise DataError(f"{path}: file is empty") from err
        except pd.errors.ParserError as err:
            raise DataError(f"{path}: cannot parse with sep={sep!r}: {err}") from err
    else:
        raise DataError(f"{path}: unsupported file type; use .csv, .tsv, .txt (optionally .gz) or .parquet")
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def require_columns(frame: pd.DataFrame, wanted: Sequence[str], path: Path) -> None:
    """Raise a DataError naming the missing columns and the ones found."""
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        found = [str(c) for c in frame.columns]
        hint = " (one column only: is `sep` right?)" if len(found) == 1 else ""
        raise DataError(f"{path}: column(s) {missing} not found; columns found: {found}{hint}")


def clean_ids(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Ids as str; NaN or blank ids raise a DataError with the count and first bad row (1-based)."""
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")
    text = values.astype(str).str.strip()
    bad = values.isna().to_numpy() | (text == "").to_numpy()
    if bad.any():
        raise DataError(
            f"{path}: column '{column}' has {int(bad.sum())} empty or missing id(s); "
            f"first at data row {int(np.argmax(bad)) + 1}"
        )
    return text


def parse_numbers(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """Float column; missing or non-numeric values raise a DataError showing the first one."""
    numbers = pd.to_numeric(values, errors="coerce")
    _raise_on_bad(numbers.isna().to_numpy(), values, path, column, "missing or non-numeric value(s)")
    return numbers.to_numpy(np.float64)


def parse_timestamps(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """Integer seconds from numbers (seconds) or ISO/other datetime strings (naive = UTC)."""
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(np.int64)
    if pd.api.types.is_datetime64_any_dtype(values):
        values = values.astype(str)
    seconds = pd.to_numeric(values, errors="coerce")
    text = seconds.isna() & values.notna()
    if text.any():
        dates = pd.to_datetime(values[text], errors="coerce", utc=True, format="ISO8601")
        retry = dates.isna()
        if retry.any():
            dates[retry] = pd.to_datetime(values[text][retry], errors="coerce", utc=True, format="mixed")
        seconds[text] = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    _raise_on_bad(seconds.isna().to_numpy(), values, path, column, "missing or unparseable timestamp(s)")
    return np.floor(seconds.to_numpy(np.float64)).astype(np.int64)


def looks_like_time(values: pd.Series, name: str) -> bool:
    """Whether a column is probably a timestamp: by its name, a datetime type, ISO dates, or unix-time numbers."""
    lowered = str(name).strip().lower()
    if lowered in TIME_NAMES or lowered.endswith(TIME_SUFFIXES) or pd.api.types.is_datetime64_any_dtype(values):
        return True
    sample = values.dropna().head(1000)
    if sample.nunique() < 2:
        return False
    if pd.api.types.is_object_dtype(sample) or pd.api.types.is_string_dtype(sample):
        return bool(sample.astype(str).str.match(DATE_TEXT).all())
    if not pd.api.types.is_numeric_dtype(sample) or pd.api.types.is_bool_dtype(sample):
        return False
    numbers = sample.to_numpy(np.float64)
    whole = bool(np.all(numbers == np.floor(numbers)))
    return whole and any(bool(np.all((numbers >= lo) & (numbers < hi))) for lo, hi in UNIX_RANGES)


def refuse_unchosen_time(frame: pd.DataFrame, path: Path, used: Sequence[str]) -> None:
    """Raise when no ``time_col`` was chosen but a column looks like one: file order would silently apply."""
    for column in frame.columns:
        if column not in used and looks_like_time(frame[column], column):
            raise DataError(
                f"{path}: column '{column}' looks like a timestamp but no time column was chosen, so interactions "
                f"would be ordered by their position in the file; pass data.time_col={column} to order by it, "
                f"or data.time_col={FILE_ORDER} to keep file order"
            )


def _raise_on_bad(bad: np.ndarray, values: pd.Series, path: Path, column: str, what: str) -> None:
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{path}: column '{column}' has {int(bad.sum())} {what}; "
            f"first at data row {first + 1}: {values.iloc[first]!r}"
        )


@dataclasses.dataclass
class InteractionsFileSource:
    """Interactions from one CSV/TSV/Parquet file, with optional item features from a second file.

    Args:
        path: interactions file (.csv, .tsv, .txt, optionally .gz, or .parquet) with a header row.
        user_col, item_col: id columns (read as str).
        time_col: timestamp column: integer seconds or datetime strings (naive = UTC); ``"none"`` keeps
            file order on purpose. Left unset (None), loading fails when a column looks like a timestamp.
        rating_col: optional numeric rating column.
        sep: field separator for text files; default ``\\t`` for .tsv, ``,`` otherwise.
        name: dataset name recorded in protocols.
        item_features_path: optional item table; float columns become numeric features, the
            ``multi_value_cols`` lists, every other column categorical.
        item_id_col: item id column of the item table.
        multi_value_cols: item-table columns holding ``multi_value_sep``-joined values (tags, genres).
        category_feature: item feature used as the category by diversity metrics and filters.
    """

    path: str | Path
    user_col: str = C.USER
    item_col: str = C.ITEM
    time_col: str | None = None
    rating_col: str | None = None
    sep: str | None = None
    name: str = "csv"
    item_features_path: str | Path | None = None
    item_id_col: str = C.ITEM
    multi_value_cols: Sequence[str] = ()
    multi_value_sep: str = "|"
    category_feature: str | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.item_features_path = Path(self.item_features_path) if self.item_features_path else None
        self.multi_value_cols = list(self.multi_value_cols)

    def files(self) -> list[Path]:
        paths = [self.path] + ([self.item_features_path] if self.item_features_path else [])
        return [find_file([p]) for p in paths]

    @property
    def file_order(self) -> bool:
        """Whether the user chose file order explicitly (``time_col=none``)."""
        return isinstance(self.time_col, str) and self.time_col.strip().lower() == FILE_ORDER

    def config(self) -> dict[str, Any]:
        config = data_config(self, "path", "item_features_path")
        if self.file_order:
            config["time_col"] = None  # the same data as an unset time column on a file without one
        return config

    def load(self) -> RawData:
        time_col = None if self.file_order else self.time_col
        wanted = [c for c in (self.user_col, self.item_col, time_col, self.rating_col) if c]
        frame = read_table(self.path, self.sep, str_cols=[self.user_col, self.item_col])
        require_columns(frame, wanted, self.path)
        if self.time_col is None:
            refuse_unchosen_time(frame, self.path, wanted)
        interactions = pd.DataFrame(
            {
                C.USER: clean_ids(frame[self.user_col], self.path, self.user_col),
                C.ITEM: clean_ids(frame[self.item_col], self.path, self.item_col),
            }
        )
        if time_col:
            interactions[C.TIME] = parse_timestamps(frame[time_col], self.path, time_col)
        if self.rating_col:
            interactions[C.RATING] = parse_numbers(frame[self.rating_col], self.path, self.rating_col)
        return RawData(
            name=self.name,
            interactions=interactions,
            item_features=self._item_features(),
            files=self.files(),
            category_feature=self.category_feature,
        )

    def _item_features(self) -> pd.DataFrame | None:
        path = self.item_features_path
        if path is None:
            return None
        frame = read_table(path, self.sep, str_cols=[self.item_id_col])
        require_columns(frame, [self.item_id_col, *self.multi_value_cols], path)
        if self.category_feature:
            require_columns(frame, [self.category_feature], path)
        frame.index = pd.Index(clean_ids(frame.pop(self.item_id_col), path, self.item_id_col))
        for col in self.multi_value_cols:
            frame[col] = frame[col].astype(object).str.split(self.multi_value_sep)
        return frame[~frame.index.duplicated()]


@dataclasses.dataclass
class BeautySource:
    """Amazon Beauty as processed for BERT4Rec: ``<root>/beauty.txt[.gz]``, chronological, no features.

    Args:
        root: folder holding ``beauty.txt.gz`` or ``beauty.txt``.
    """

    root: str | Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def files(self) -> list[Path]:
        hint = "It is FeiSun/BERT4Rec's data/beauty.txt (gzip is fine)."
        return [find_file([self.root / "beauty.txt.gz", self.root / "beauty.txt"], hint)]

    def config(self) -> dict[str, Any]:
        return data_config(self, "root")

    def load(self) -> RawData:
        files = self.files()
        return RawData(name="beauty", interactions=read_pairs(files[0]), files=files)
