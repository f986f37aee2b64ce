"""Cell parsing for interaction tables: ids, numbers and timestamps, with one-line errors naming the bad value.

Every check is vectorised and bounded: a timestamp cell longer than :data:`MAX_TIME_TEXT` characters is refused
before any date parsing, and free-form (``format="mixed"``) parsing is tried on a small sample first, so a column
of garbage fails in milliseconds instead of parsing every cell.
"""

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from rectorch.data.errors import DataError

#: longest text accepted as a timestamp ("2020-01-31T10:00:00.123456789+05:30" is 35)
MAX_TIME_TEXT = 64
#: leftover text timestamps parsed free-form (``format="mixed"``) as a sample before the whole column
MIXED_SAMPLE = 100
#: seconds representable as int64
INT64_LIMIT = 2.0**63
#: longest quoted value in a message
SHORT = 80
#: a whole number written as a float ("1.0"): the id "1" written another way
FLOAT_WHOLE = r"[+-]?\d+\.0+"


def short(value: Any, limit: int = SHORT) -> str:
    """``repr`` of a value (numpy scalars as Python ones), cut to ``limit`` characters for a message."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def one_line(text: Any) -> str:
    """``text`` with its line breaks (and the blanks around them) replaced by one space."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def clean_ids(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Ids as str; NaN or blank ids, or one id written both as ``1`` and ``1.0``, raise a DataError."""
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")
    text = values.astype(str).str.strip()
    bad = values.isna().to_numpy() | (text == "").to_numpy()
    if bad.any():
        raise DataError(
            f"{path}: column '{column}' has {int(bad.sum())} empty or missing id(s); "
            f"first at data row {int(np.argmax(bad)) + 1}"
        )
    _refuse_float_twins(text, path, column)
    return text


def _refuse_float_twins(text: pd.Series, path: Path, column: str) -> None:
    """Raise when an id appears both as a whole number and as that number with a ``.0`` (``1`` and ``1.0``)."""
    distinct = pd.Series(text.unique(), dtype=str)
    floats = distinct[distinct.str.fullmatch(FLOAT_WHOLE)]
    if floats.empty:
        return
    whole = floats.str.replace(r"\.0+$", "", regex=True).str.lstrip("+")
    twins = whole.isin(set(distinct))
    if twins.any():
        written, plain = floats[twins].iloc[0], whole[twins].iloc[0]
        row = int(np.argmax((text == written).to_numpy())) + 1
        raise DataError(
            f"{path}: column '{column}' writes one id two ways, {short(plain)} and {short(written)} "
            f"(first at data row {row}); write ids consistently, e.g. as integers"
        )


def parse_numbers(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """Float column; missing or non-numeric values raise a DataError showing the first one."""
    numbers = pd.to_numeric(values, errors="coerce")
    raise_on_bad(numbers.isna().to_numpy(), values, path, column, "missing or non-numeric value(s)")
    return numbers.to_numpy(np.float64)


def parse_timestamps(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """Integer seconds from numbers (seconds) or ISO/other datetime strings (naive = UTC).

    Raises:
        DataError: a missing, overlong, unparseable or out-of-range (beyond int64 seconds) value, naming the
            column, the first bad data row and its value.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        values = values.astype(str)
    if pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        lengths = values.astype(str).str.len().where(values.notna(), 0).to_numpy()
        raise_on_bad(lengths > MAX_TIME_TEXT, values, path, column, f"value(s) longer than {MAX_TIME_TEXT} characters")
    seconds = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_integer_dtype(seconds):  # exact, without a round trip through float64
        if pd.api.types.is_unsigned_integer_dtype(seconds):
            over = (seconds > np.iinfo(np.int64).max).to_numpy()
            raise_on_bad(over, values, path, column, "timestamp(s) beyond the int64 range of seconds")
        return seconds.to_numpy(np.int64)
    seconds = seconds.astype(np.float64)
    text = (seconds.isna() & values.notna()).to_numpy()
    if text.any():
        seconds[text] = _date_seconds(np.flatnonzero(text), values, path, column)
    raise_on_bad(seconds.isna().to_numpy(), values, path, column, "missing or unparseable timestamp(s)")
    numbers = seconds.to_numpy(np.float64)
    written, exact = _integer_cells(values)  # integers written out are checked and kept exactly, not as floats
    out = ~(np.abs(numbers) < INT64_LIMIT)
    out[written] = [not -INT64_LIMIT <= v < INT64_LIMIT for v in exact]
    raise_on_bad(out, values, path, column, "timestamp(s) beyond the int64 range of seconds")
    result = np.floor(np.where(written, 0.0, numbers)).astype(np.int64)
    result[written] = np.array(exact, dtype=np.int64)
    return result


def _integer_cells(values: pd.Series) -> tuple[np.ndarray, list[int]]:
    """Mask of the cells of a text or object column written as integers (``-12``), and their exact values."""
    if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
        return np.zeros(len(values), bool), []
    cells = values.astype(str).str.strip()
    written = cells.str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy(bool)
    return written, [int(cell) for cell in cells[written]]


def _date_seconds(rows: np.ndarray, values: pd.Series, path: Path, column: str) -> np.ndarray:
    """Seconds since the epoch of the date strings at ``rows`` (NaN where unparseable).

    Tried in turn: ISO 8601, the format of the first leftover cell, then free-form parsing, which runs on a
    sample of the leftovers first so that an unparseable cell there fails at once.
    """
    text = values.iloc[rows].astype(str).str.strip()
    dates = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    rest = dates.isna().to_numpy()
    if rest.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Parsing dates in %d/%m/%Y format when dayfirst=False"
            guessed = guess_datetime_format(text[rest].iloc[0])
        if guessed:
            dates[rest] = pd.to_datetime(text[rest], errors="coerce", utc=True, format=guessed)
            rest = dates.isna().to_numpy()
    if rest.any():
        sample = np.flatnonzero(rest)[:MIXED_SAMPLE]
        parsed = pd.to_datetime(text.iloc[sample], errors="coerce", utc=True, format="mixed")
        if parsed.isna().any():
            row = int(rows[sample[int(np.argmax(parsed.isna().to_numpy()))]])
            raise DataError(
                f"{path}: column '{column}' has unparseable timestamp(s); "
                f"first at data row {row + 1}: {short(values.iloc[row])}"
            )
        dates[rest] = pd.to_datetime(text[rest], errors="coerce", utc=True, format="mixed")
    # whole seconds (floored) in the parsed unit: subtracting a nanosecond epoch would overflow past 2262
    stamps = dates.dt.tz_convert(None).to_numpy()
    seconds = stamps.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    seconds[np.isnat(stamps)] = np.nan
    return seconds


def raise_on_bad(bad: np.ndarray, values: pd.Series, path: Path, column: str, what: str) -> None:
    """Raise a DataError with the count of ``bad`` cells and the first one's data row and (shortened) value."""
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{path}: column '{column}' has {int(bad.sum())} {what}; "
            f"first at data row {first + 1}: {short(values.iloc[first])}"
        )
