"""Source readers: each reads its files and returns :class:`RawData` with interactions in file order.

Every source is a small dataclass that Hydra instantiates with ``_target_``. Besides ``load()`` it exposes
``files()`` (the files ``load()`` reads) and ``config()`` (the arguments that change the data, file
locations excluded), so a cache can be keyed on content without reading the data.
"""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from rectorch.data import columns as C
from rectorch.data.cells import clean_ids, parse_numbers, parse_timestamps, short
from rectorch.data.errors import DataError
from rectorch.data.raw import RawData
from rectorch.data.tables import find_file, is_text_file, read_pairs, read_table, require_columns, text_separator

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


@runtime_checkable
class ScanSource(Source, Protocol):
    """A reader that can also hand the Polars engine its interactions as a lazy scan (nothing read yet)."""

    def scan(self) -> RawData:
        """``RawData`` whose ``interactions`` is a ``polars.LazyFrame`` with the same columns ``load()`` gives."""
        ...


def data_config(source: Any, *locations: str) -> dict[str, Any]:
    """A dataclass source's arguments minus its file locations (their content is hashed instead)."""
    return {k: v for k, v in dataclasses.asdict(source).items() if k not in locations}


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
        roles = {"user_col": self.user_col, "item_col": self.item_col, "rating_col": self.rating_col}
        if not self.file_order:
            roles["time_col"] = self.time_col
        named = [(key, col) for key, col in roles.items() if col is not None]
        for i, (key, col) in enumerate(named):
            for other, other_col in named[i + 1 :]:
                if str(col) == str(other_col):
                    raise ValueError(f"data.{key} and data.{other} name the same column {short(col)}")
        if not isinstance(self.multi_value_sep, str) or not self.multi_value_sep:
            raise ValueError(f"data.multi_value_sep must be a non-empty string, got {short(self.multi_value_sep)}")

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
        # the separator a text file is actually read with (inferred from the file name when unset)
        config["sep"] = text_separator(self.path, self.sep) if is_text_file(self.path) else None
        if self.item_features_path is not None and is_text_file(self.item_features_path):
            config["item_features_sep"] = text_separator(self.item_features_path, self.sep)
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
