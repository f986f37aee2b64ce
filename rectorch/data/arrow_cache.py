"""The ``.arrow`` cache entry: a prepared dataset whose interaction arrays are memory-mapped, not read.

Layout of ``<fingerprint>.arrow/``: ``interactions.arrow`` (Arrow IPC file, one record batch: ``items`` and,
with times, ``timestamps``, int64, in CSR order), ``indptr.arrow``, ``user_ids.arrow`` and ``item_ids.arrow``
(one column each), ``side.npz`` (feature columns, vocabularies and the ``meta`` JSON, as in the ``.npz``
entry) and ``meta.json`` (written last: an entry without it is incomplete). At load the int64 columns become
read-only numpy views of the mapped files (zero copy): the prepared arrays are never read into a process's own
memory, and DDP ranks on one machine share their pages. (The split then copies the training and evaluation
rows it builds, in each process.)
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

ArrowError = pa.ArrowException
ID_FILES = ("indptr.arrow", "user_ids.arrow", "item_ids.arrow")


def _write_table(path: Path, columns: dict[str, np.ndarray]) -> None:
    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))


def write_arrow(dataset, side: dict[str, np.ndarray], folder: Path) -> None:
    """Write ``dataset`` (a ``PreparedDataset``) into ``folder``; ``side`` holds its feature arrays and meta."""
    interactions = {"items": dataset.items}
    if dataset.timestamps is not None:
        interactions["timestamps"] = dataset.timestamps
    _write_table(folder / "interactions.arrow", interactions)
    _write_table(folder / "indptr.arrow", {"indptr": dataset.indptr})
    _write_table(folder / "user_ids.arrow", {"user_ids": dataset.user_ids.astype(str)})
    _write_table(folder / "item_ids.arrow", {"item_ids": dataset.item_ids.astype(str)})
    with (folder / "side.npz").open("wb") as f:
        np.savez(f, **side)
    (folder / "meta.json").write_text(json.dumps({"fingerprint": dataset.fingerprint}))
    folder.chmod(0o755)  # mkdtemp creates 0700; the cache is a plain shared folder


def arrow_fingerprint(folder: Path) -> str | None:
    """The fingerprint of a complete entry, else None."""
    try:
        return json.loads((folder / "meta.json").read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mapped(path: Path) -> dict[str, np.ndarray]:
    """Columns of an Arrow IPC file: fixed-width ones as read-only views of the mapping, strings as numpy str."""
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_integer(column.type):
            columns[name] = column.to_numpy(zero_copy_only=True)
        else:
            columns[name] = np.asarray(column.to_numpy(zero_copy_only=False), dtype=str)
    return columns


def read_arrow(folder: Path) -> dict[str, np.ndarray]:
    """The same arrays an ``.npz`` entry holds (``meta`` included), the interaction arrays memory-mapped."""
    if arrow_fingerprint(folder) is None:
        raise ValueError(f"{folder}: incomplete cache entry (no meta.json)")
    arrays = _mapped(folder / "interactions.arrow")
    for name in ID_FILES:
        arrays.update(_mapped(folder / name))
    with np.load(folder / "side.npz", allow_pickle=False) as npz:
        arrays.update({key: npz[key] for key in npz.files})
    return arrays
