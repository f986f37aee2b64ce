"""The impression log schema (one row per shown item) and its Parquet reader.

Required columns: ``impression_id: str, user_id: str, arm: str, item_id: str, position: int,
propensity: float, clicked: bool, timestamp: float``. Optional context columns are kept as they are;
``category`` (str) feeds the diversity guardrail and ``popularity`` (number) the popularity-bias guardrail.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

_KINDS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "string": ("str", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    "int": ("int", pa.types.is_integer),
    "float": ("float", lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)),
    "bool": ("bool", pa.types.is_boolean),
}

#: column -> kind; every row of a log must have all of them, none null
REQUIRED_COLUMNS: dict[str, str] = {
    "impression_id": "string",
    "user_id": "string",
    "arm": "string",
    "item_id": "string",
    "position": "int",
    "propensity": "float",
    "clicked": "bool",
    "timestamp": "float",
}
OPTIONAL_COLUMNS: dict[str, str] = {"category": "string", "popularity": "float"}


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise ValueError(f"{path}: directory holds no .parquet files")
        return files
    if not path.is_file():
        raise ValueError(f"{path}: no such file or directory")
    return [path]


def _validate(table: pa.Table, file: Path) -> pa.Table:
    names = set(table.column_names)
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise ValueError(f"{file}: missing column(s) {', '.join(missing)}")
    for name, kind in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items():
        if name not in names:
            continue
        label, accepts = _KINDS[kind]
        column = table.column(name)
        if not accepts(column.type):
            raise ValueError(f"{file}: column {name!r} must be {label}, got {column.type}")
        if name in REQUIRED_COLUMNS and column.null_count:
            raise ValueError(f"{file}: column {name!r} has {column.null_count} null value(s)")
    propensity = table.column("propensity")
    if len(table) and (pc.min(propensity).as_py() <= 0 or pc.max(propensity).as_py() > 1):
        raise ValueError(f"{file}: column 'propensity' must lie in (0, 1]")
    casts = {"position": pa.int64(), "propensity": pa.float64(), "timestamp": pa.float64()}
    if "popularity" in names:
        casts["popularity"] = pa.float64()
    for name, dtype in casts.items():
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(dtype))
    return table


def read_impressions(path: str | Path) -> dict[str, np.ndarray]:
    """Read one Parquet file or a directory of them into column arrays, validating the schema per file."""
    path = Path(path)
    tables = []
    for file in _files(path):
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as error:
            raise ValueError(f"{file}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
        tables.append(_validate(table, file))
    common = set.intersection(*(set(t.column_names) for t in tables))
    keep = [n for n in tables[0].column_names if n in common]
    try:
        table = pa.concat_tables([t.select(keep) for t in tables], promote_options="permissive")
    except pa.ArrowException as error:
        raise ValueError(f"{path}: files disagree on column types ({str(error).splitlines()[0]})") from None
    if not len(table):
        raise ValueError(f"{path}: the log has no rows")
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in keep}
