"""Reading one data file into a DataFrame, with one-line DataErrors for every way a file can be wrong.

Before pandas sees a text file, its first :data:`HEAD_BYTES` (decompressed) are checked: empty, binary, UTF-16
and non-UTF-8 files, and compressed files that are truncated or corrupt, each get a message that says so.
"""

import bz2
import gzip
import lzma
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from rectorch.data import columns as C
from rectorch.data.cells import one_line, short
from rectorch.data.errors import DataError

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
COMPRESSIONS = ("", ".gz", ".bz2", ".xz", ".zip")
#: decompressed bytes checked for binary content and encoding before parsing
HEAD_BYTES = 1 << 16
#: what reading a truncated or corrupt compressed file raises (gzip.BadGzipFile is an OSError)
DECOMPRESS_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)
#: pandas' warning when the first data row is longer than the header (the surplus would be dropped)
LONG_FIRST_ROW = "Length of header or names does not match"
#: columns named in a "not found" message
LISTED_COLUMNS = 20


def find_file(candidates: Sequence[Path], hint: str = "") -> Path:
    """Return the first existing file, or raise a DataError listing every path tried and how to get it."""
    for path in candidates:
        if path.is_file():
            return path
    folders = [p for p in candidates if p.is_dir()]
    if folders:
        raise DataError(f"{folders[0]}: is a directory, not a data file" + (f". {hint}" if hint else ""))
    tried = " or ".join(str(p) for p in candidates)
    raise DataError(f"file not found: {tried}. {hint}".strip())


def text_separator(path: Path, sep: str | None) -> str:
    """The field separator a text file is read with: ``sep``, else tab for ``.tsv`` and comma otherwise."""
    return sep or ("\t" if ".tsv" in path.name.lower() else ",")


def compression(path: Path) -> str:
    """The compression suffix of ``path`` (``.gz``, ``.bz2``, ``.xz``, ``.zip``), or ``""``."""
    name = path.name.lower()
    return next((z for z in COMPRESSIONS if z and name.endswith(z)), "")


def is_text_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s + z) for s in TEXT_SUFFIXES for z in COMPRESSIONS)


def open_decompressed(path: Path) -> IO[bytes]:
    """``path`` opened for reading bytes, decompressed by its suffix (a .zip must hold exactly one file)."""
    kind = compression(path)
    if kind == ".zip":
        archive = zipfile.ZipFile(path)
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if len(names) != 1:
            archive.close()
            raise DataError(f"{path}: a .zip must hold exactly one data file, found {len(names)}")
        return archive.open(names[0])
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(kind, open)
    return opener(path, "rb")


def check_text_head(path: Path) -> None:
    """Raise a DataError when the start of ``path`` is not UTF-8 text or cannot be decompressed."""
    try:
        with open_decompressed(path) as f:
            head = f.read(HEAD_BYTES)
    except DECOMPRESS_ERRORS as err:
        raise DataError(f"{path}: {_read_failure(path, err)}") from err
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: file is UTF-16 (or UTF-32) encoded; save it as UTF-8 text")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise DataError(
            f"{path}: file holds NUL bytes (first at byte {nul}): binary data (or UTF-16 without a "
            "byte-order mark), not CSV/TSV text"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut at the end of the sample
            raise DataError(f"{path}: {_not_utf8(err)}") from err


def _not_utf8(err: UnicodeDecodeError) -> str:
    byte = err.object[err.start : err.start + 1].hex()
    return f"file is not UTF-8 text (byte 0x{byte} at offset {err.start}: {err.reason}); save it as UTF-8"


def _read_failure(path: Path, err: BaseException) -> str:
    what = f"{type(err).__name__}: {one_line(err)}"
    if compression(path):
        return f"cannot decompress ({what}); the {compression(path)} file is truncated or corrupt"
    return f"cannot read ({what})"


def read_pairs(path: Path) -> pd.DataFrame:
    """Read a ``user item`` per line file (SASRec/BERT4Rec layout, optionally gzipped) in file order."""
    check_text_head(path)
    try:
        frame = pd.read_csv(path, sep=" ", header=None, names=[C.USER, C.ITEM], dtype=np.int64, index_col=False)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: file is empty") from err
    except (ValueError, OverflowError) as err:  # pandas' ParserError and failed int conversions
        raise DataError(f"{path}: expected two integer ids per line ('user item'): {_cut(err)}") from err
    except DECOMPRESS_ERRORS as err:
        raise DataError(f"{path}: {_read_failure(path, err)}") from err
    if frame.empty:
        raise DataError(f"{path}: file has no interactions")
    return frame


def read_table(path: Path, sep: str | None = None, str_cols: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV/TSV/TXT (optionally compressed) or Parquet file; ``str_cols`` are read as text.

    Raises:
        DataError: a missing path or a directory, an unsupported suffix, an empty, binary, non-UTF-8 or
            truncated file, rows with more fields than the header, duplicate column names, or no data rows.
    """
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.name.lower().endswith(".parquet"):
        frame = _read_parquet(path)
    elif is_text_file(path):
        frame = _read_text(path, text_separator(path, sep), str_cols)
    else:
        raise DataError(f"{path}: unsupported file type; use .csv, .tsv, .txt (optionally .gz) or .parquet")
    repeated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if repeated:
        raise DataError(f"{path}: duplicate column name(s) {_names(repeated)}; every column needs its own name")
    if frame.empty:
        raise DataError(f"{path}: file has a header but no rows")
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataError(f"{path}: cannot read as Parquet ({type(err).__name__}: {_cut(err)})") from err


def _read_text(path: Path, sep: str, str_cols: Sequence[str]) -> pd.DataFrame:
    check_text_head(path)
    dtype = dict.fromkeys(str_cols, str)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(path, sep=sep, dtype=dtype, index_col=False)
            header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, index_col=False, keep_default_na=False)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: file is empty") from err
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse with sep={sep!r}: {_cut(err)}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: {_not_utf8(err)}") from err
    except DECOMPRESS_ERRORS as err:
        raise DataError(f"{path}: {_read_failure(path, err)}") from err
    except ValueError as err:  # e.g. an empty separator
        raise DataError(f"{path}: cannot read with sep={sep!r}: {_cut(err)}") from err
    for warning in caught:
        if LONG_FIRST_ROW in str(warning.message):
            raise DataError(
                f"{path}: data row 1 has more fields than the header's {len(frame.columns)} (sep={sep!r}); "
                "quote values that hold the separator"
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    names = pd.Series(header.iloc[0].to_numpy(dtype=str))
    repeated = sorted(set(names[names.duplicated() & (names != "")]))
    if repeated:  # pandas renames them ("item_id.1"), so the check in read_table would not see them
        raise DataError(f"{path}: duplicate column name(s) {_names(repeated)}; every column needs its own name")
    return frame


def require_columns(frame: pd.DataFrame, wanted: Sequence[str], path: Path) -> None:
    """Raise a DataError naming the missing columns and the ones found."""
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        found = [str(c) for c in frame.columns]
        hint = " (one column only: is `sep` right?)" if len(found) == 1 else ""
        raise DataError(f"{path}: column(s) {_names(missing)} not found; columns found: {_names(found)}{hint}")


def _names(names: Sequence[object]) -> str:
    """A list of column names for a message: each shortened, at most :data:`LISTED_COLUMNS` of them."""
    listed = ", ".join(short(str(n)) for n in names[:LISTED_COLUMNS])
    more = f", ... ({len(names)} in all)" if len(names) > LISTED_COLUMNS else ""
    return f"[{listed}{more}]"


def _cut(err: BaseException, limit: int = 200) -> str:
    text = one_line(err)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
