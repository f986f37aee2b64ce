"""``ParquetSource``: interactions in a folder of Parquet parts (a data lake's export), read lazily by Polars.

``load()`` reads the parts into pandas for the pandas engine; ``scan()`` hands the Polars engine a lazy scan
over the same parts (only the time column is read up front, for its missing-value check), and the preparation
reads only the columns it needs. Both clean ids the same way, so both engines give the same dataset.
"""

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rectorch.data import columns as C
from rectorch.data.cells import clean_ids, parse_numbers, parse_timestamps
from rectorch.data.errors import DataError
from rectorch.data.raw import RawData
from rectorch.data.sources import data_config


@dataclasses.dataclass
class ParquetSource:
    """Interactions from ``path`` (one ``.parquet`` file, or a folder whose ``*.parquet`` parts are read in name
    order), with optional item and user feature tables.

    Args:
        path: a Parquet file or a folder of Parquet parts.
        user_col, item_col: id columns (integers or text).
        time_col: integer seconds or an Arrow timestamp column.
        rating_col: optional numeric rating column.
        name: dataset name recorded in protocols.
        item_features_path, user_features_path: optional Parquet tables keyed by ``item_col`` / ``user_col``;
            float columns become numeric features, every other column categorical.
        category_feature: item feature used as the category by diversity metrics and filters.
    """

    path: str | Path
    user_col: str = C.USER
    item_col: str = C.ITEM
    time_col: str = C.TIME
    rating_col: str | None = None
    name: str = "parquet"
    item_features_path: str | Path | None = None
    user_features_path: str | Path | None = None
    category_feature: str | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.item_features_path = Path(self.item_features_path) if self.item_features_path else None
        self.user_features_path = Path(self.user_features_path) if self.user_features_path else None

    def parts(self) -> list[Path]:
        if self.path.is_dir():
            parts = sorted(self.path.glob("*.parquet"))
            if not parts:
                raise DataError(f"{self.path}: folder holds no *.parquet file")
            return parts
        if not self.path.is_file():
            raise DataError(f"file not found: {self.path}")
        return [self.path]

    def files(self) -> list[Path]:
        tables = [p for p in (self.item_features_path, self.user_features_path) if p is not None]
        for path in tables:
            if not path.is_file():
                raise DataError(f"file not found: {path}")
        return self.parts() + tables

    def config(self) -> dict[str, Any]:
        return data_config(self, "path", "item_features_path", "user_features_path")

    def _columns(self) -> dict[str, str]:
        """Canonical name -> the file's column name, for the columns read."""
        named = {C.USER: self.user_col, C.ITEM: self.item_col, C.TIME: self.time_col}
        return named | ({C.RATING: self.rating_col} if self.rating_col else {})

    def _schema(self) -> pa.Schema:
        """The first part's schema, after checking every part has the read columns with usable types."""
        schemas = []
        for part in self.parts():
            try:
                schemas.append(pq.read_schema(part))
            except (OSError, ValueError) as err:
                raise DataError(f"{part}: cannot read as Parquet ({type(err).__name__}: {err})") from err
            schema = schemas[-1]
            missing = [col for col in self._columns().values() if col not in schema.names]
            if missing:
                raise DataError(f"{part}: no column(s) {missing}; columns found: {schema.names}")
            time_type = schema.field(self.time_col).type
            if not (pa.types.is_integer(time_type) or pa.types.is_timestamp(time_type)):
                raise DataError(f"{part}: column '{self.time_col}' is {time_type}; use integer seconds or a timestamp")
            for col in (self.user_col, self.item_col):
                kind = schema.field(col).type
                if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                    raise DataError(f"{part}: id column '{col}' is {kind}; write ids as integers or text")
        return schemas[0]

    def scan(self) -> RawData:
        try:
            import polars as pl
        except ModuleNotFoundError as error:
            raise ValueError(
                f"data=parquet's lazy scan needs Polars (pip install 'rectorch[scale]'): {error}"
            ) from error

        schema, columns = self._schema(), self._columns()
        time = pl.col(self.time_col)
        if pa.types.is_timestamp(schema.field(self.time_col).type):
            time = time.dt.epoch("s")
        selected = [pl.col(col).alias(name) for name, col in columns.items() if name != C.TIME]
        lazy = pl.scan_parquet([str(p) for p in self.parts()]).select([*selected, time.alias(C.TIME)])
        null_times = lazy.select(pl.col(C.TIME).null_count()).collect().item()
        if null_times:
            raise DataError(f"{self.path}: column '{self.time_col}' has {null_times} missing timestamp(s)")
        return self._raw(lazy)

    def load(self) -> RawData:
        self._schema()
        columns = self._columns()
        parts = self.parts()
        frame = pq.read_table(parts, columns=list(columns.values())).to_pandas()
        interactions = pd.DataFrame(
            {
                C.USER: clean_ids(frame[self.user_col], self.path, self.user_col),
                C.ITEM: clean_ids(frame[self.item_col], self.path, self.item_col),
                C.TIME: parse_timestamps(frame[self.time_col], self.path, self.time_col),
            }
        )
        if self.rating_col:
            interactions[C.RATING] = parse_numbers(frame[self.rating_col], self.path, self.rating_col)
        return self._raw(interactions)

    def _raw(self, interactions: Any) -> RawData:
        return RawData(
            name=self.name,
            interactions=interactions,
            item_features=_features(self.item_features_path, self.item_col),
            user_features=_features(self.user_features_path, self.user_col),
            files=self.files(),
            category_feature=self.category_feature,
        )


def _features(path: Path | None, id_col: str) -> pd.DataFrame | None:
    if path is None:
        return None
    frame = pd.read_parquet(path)
    if id_col not in frame.columns:
        raise DataError(f"{path}: no column '{id_col}'; columns found: {[str(c) for c in frame.columns]}")
    frame.index = pd.Index(clean_ids(frame.pop(id_col), path, id_col))
    return frame[~frame.index.duplicated()]
