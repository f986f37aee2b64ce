"""Content-keyed cache of prepared datasets: one entry per (source, preprocessing, files) fingerprint.

An entry is ``<fingerprint>.npz`` (read into memory) or ``<fingerprint>.arrow/`` (interaction arrays as Arrow
IPC files, memory-mapped at load: see :mod:`rectorch.data.arrow_cache`); both hold the same arrays.

The file holds plain arrays only (no pickle): ids and vocabularies as unicode arrays, feature columns under
``item.col.<name>`` / ``user.col.<name>``, and a JSON ``meta`` string with names, kinds and sizes. It is
written to a temporary file in the same folder and moved into place, so a crash never leaves half a cache
entry; writers of one entry take turns under a file lock (``.<entry>.lock``, removed when done), and each
removes the temporary files that a killed writer left behind.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from rectorch.data.arrow_cache import ArrowError, arrow_fingerprint, read_arrow, write_arrow
from rectorch.data.prepared import FeatureTable, PreparedDataset
from rectorch.data.spec import FeatureSpec
from rectorch.interprocess import file_lock

CACHE_VERSION = 1
TABLES = ("item", "user")
CacheFormat = Literal["npz", "arrow"]
SUFFIXES: dict[str, str] = {"npz": ".npz", "arrow": ".arrow"}

log = logging.getLogger(__name__)


class Configured(Protocol):
    def config(self) -> dict[str, Any]: ...


def file_digest(path: Path) -> str:
    """sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(source: Any, preprocessing: Configured) -> str:
    """sha256 over the source class, its data arguments, the preprocessing and its files' names and content.

    File folders are left out on purpose: the same files anywhere give the same fingerprint. File names are in,
    since a reader may parse by them (a ``.tsv`` suffix picks the tab separator, ``.gz`` the decompressor).
    """
    files = [Path(p) for p in source.files()]
    payload = {
        "version": CACHE_VERSION,
        "source": f"{type(source).__module__}.{type(source).__qualname__}",
        "config": source.config(),
        "preprocessing": preprocessing.config(),
        "files": [file_digest(p) for p in files],
        "names": [p.name for p in files],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_entries(cache_dir: Path, key: str, preferred: CacheFormat) -> list[Path]:
    """The paths an entry for ``key`` may have, the ``preferred`` format first (it is the one written)."""
    formats = [preferred, *(f for f in SUFFIXES if f != preferred)]
    return [cache_dir / f"{key}{SUFFIXES[f]}" for f in formats]


def side_arrays(dataset: PreparedDataset) -> dict[str, np.ndarray]:
    """Everything but the interaction arrays: feature columns, vocabularies and the ``meta`` JSON string."""
    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, dict[str, list]] = {}
    for table_name, table in zip(TABLES, (dataset.item_features, dataset.user_features), strict=True):
        kinds[table_name] = {n: [s.kind, s.cardinality, s.width] for n, s in table.kinds.items()}
        for name, column in table.columns.items():
            arrays[f"{table_name}.col.{name}"] = column
        for name, vocab in table.vocab.items():
            arrays[f"{table_name}.vocab.{name}"] = np.array(vocab, dtype=str)
    meta = {"name": dataset.name, "fingerprint": dataset.fingerprint, "kinds": kinds}
    meta["category_feature"] = dataset.category_feature
    arrays["meta"] = np.array(json.dumps(meta))
    return arrays


def _write_npz(dataset: PreparedDataset, tmp: Path) -> None:
    arrays = {
        "user_ids": dataset.user_ids.astype(str),
        "item_ids": dataset.item_ids.astype(str),
        "indptr": dataset.indptr,
        "items": dataset.items,
        **side_arrays(dataset),
    }
    if dataset.timestamps is not None:
        arrays["timestamps"] = dataset.timestamps
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is a plain shared file


def entry_lock(path: Path) -> AbstractContextManager[None]:
    """The lock that writers (and, in ``load_or_prepare``, preparers) of the entry at ``path`` take turns on."""
    return file_lock(path.with_name(f".{path.name}.lock"), remove=True)


def save_prepared(dataset: PreparedDataset, path: Path) -> None:
    """Write ``dataset`` to ``path`` (``.npz`` file or ``.arrow`` folder) atomically: temporary + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with entry_lock(path):
        write_locked(dataset, path)


def write_locked(dataset: PreparedDataset, path: Path) -> None:
    """``save_prepared`` for a caller that already holds :func:`entry_lock` of ``path``."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # only the lock holder writes: these are dead
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    if _holds(path, dataset.fingerprint):  # another process wrote it while this one prepared
        return
    arrow = path.suffix == SUFFIXES["arrow"]
    if arrow and path.exists():  # a damaged folder: os.replace cannot swap it, and it is not removed here
        log.warning("cache entry %s is unreadable; left in place and not rewritten", path)
        return
    if arrow:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        if arrow:
            write_arrow(dataset, side_arrays(dataset), tmp)
        else:
            _write_npz(dataset, tmp)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def _holds(path: Path, fingerprint: str) -> bool:
    """Whether ``path`` is a complete entry for ``fingerprint``: every member's CRC checks, ``meta`` matches."""
    if path.suffix == SUFFIXES["arrow"]:
        return arrow_fingerprint(path) == fingerprint
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None:
                return False
            with archive.open("meta.npy") as member:
                meta = np.lib.format.read_array(member, allow_pickle=False)
        return json.loads(str(meta))["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return False


def load_prepared(path: Path, fingerprint: str) -> PreparedDataset | None:
    """The cached dataset at ``path``, or None when absent, unreadable or for another fingerprint."""
    if not path.exists():
        return None
    try:
        if path.suffix == SUFFIXES["arrow"]:
            arrays = read_arrow(path)
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(str(arrays["meta"]))
        if meta["fingerprint"] != fingerprint:
            return None
        tables = {name: _table(arrays, name, meta["kinds"][name]) for name in TABLES}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, ArrowError) as err:
        log.warning("ignoring unreadable cache %s: %s", path, err)
        return None
    return PreparedDataset(
        name=meta["name"],
        fingerprint=meta["fingerprint"],
        user_ids=arrays["user_ids"],
        item_ids=arrays["item_ids"],
        indptr=arrays["indptr"],
        items=arrays["items"],
        timestamps=arrays.get("timestamps"),
        item_features=tables["item"],
        user_features=tables["user"],
        category_feature=meta["category_feature"],
    )


def _table(arrays: dict[str, np.ndarray], prefix: str, kinds: dict[str, list]) -> FeatureTable:
    table = FeatureTable()
    for name, (kind, cardinality, width) in kinds.items():
        table.kinds[name] = FeatureSpec(kind, cardinality, width)
        table.columns[name] = arrays[f"{prefix}.col.{name}"]
        if f"{prefix}.vocab.{name}" in arrays:
            table.vocab[name] = arrays[f"{prefix}.vocab.{name}"].tolist()
    return table
