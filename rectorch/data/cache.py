"""Content-keyed cache of prepared datasets: one ``<fingerprint>.npz`` per (source, preprocessing, files).

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
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rectorch.data.prepared import FeatureTable, PreparedDataset
from rectorch.data.spec import FeatureSpec
from rectorch.interprocess import file_lock

CACHE_VERSION = 1
TABLES = ("item", "user")

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


def save_prepared(dataset: PreparedDataset, path: Path) -> None:
    """Write ``dataset`` to ``path`` atomically (temporary file + ``os.replace``)."""
    arrays = {
        "user_ids": dataset.user_ids.astype(str),
        "item_ids": dataset.item_ids.astype(str),
        "indptr": dataset.indptr,
        "items": dataset.items,
    }
    if dataset.timestamps is not None:
        arrays["timestamps"] = dataset.timestamps
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.name}.lock"), remove=True):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # only the lock holder writes: these are dead
            stale.unlink(missing_ok=True)
        if _holds(path, dataset.fingerprint):  # another process wrote it while this one prepared
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is a plain shared file
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _holds(path: Path, fingerprint: str) -> bool:
    """Whether ``path`` is a complete entry for ``fingerprint``: every member's CRC checks, ``meta`` matches."""
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
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(str(arrays["meta"]))
        if meta["fingerprint"] != fingerprint:
            return None
        tables = {name: _table(arrays, name, meta["kinds"][name]) for name in TABLES}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
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
