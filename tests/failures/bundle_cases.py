"""The bad bundles of the failure corpus: each a mutation of the tiny torch-free bundle and what its error names.

A case copies the tiny bundle of ``tests/serving/conftest.py``, applies ``mutate`` and expects loading it
to fail with one :class:`~rectorch.serving.BundleError` line holding every ``fragment`` (the file, the
key, the value). ``resigned`` cases also rewrite the file's sha256 in the manifest and the manifest's
sidecar, as a buggy writer would: they check parsing, not hashing. :func:`attempt` observes one load
(and, when the load succeeds, one request) so the same cases can be replayed against another checkout.
"""

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.serving.conftest import DIM, HISTORY, NUM_ITEMS, mean_encoder, tiny_catalog

MANIFEST, SIDECAR = "manifest.json", "manifest.sha256"
ONNX, INDEX, IDS, ITEMS = "query_encoder.onnx", "items.faiss", "item_ids.json", "items.npz"


@dataclass(frozen=True)
class BundleCase:
    """One bad bundle: ``mutate(bundle dir)`` and the fragments its one-line error must hold."""

    id: str
    mutate: Callable[[Path], None]
    fragments: tuple[str, ...]


@dataclass
class Outcome:
    """What one load did: the error (None = loaded), and whether a request then failed."""

    error: BaseException | None = None
    message: str = ""
    request_error: str = ""
    changed: list[str] = field(default_factory=list)


def snapshot(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry of ``folder``: kind and bytes (a link's target, a file's content)."""
    entries = {}
    for path in sorted(folder.iterdir()):
        if path.is_symlink():
            entries[path.name] = ("link", os.readlink(path).encode())
        elif path.is_file():
            entries[path.name] = ("file", path.read_bytes())
        else:
            entries[path.name] = ("other", b"")
    return entries


def attempt(bundle: Path, load: Callable[[Path], Any]) -> Outcome:
    """Load ``bundle`` with ``load``; if it loads, ask it for one recommendation; note what changed on disk."""
    before = snapshot(bundle)
    outcome = Outcome()
    try:
        recommender = load(bundle)
    except Exception as error:  # the corpus observes every failure; the tests judge it
        outcome.error, outcome.message = error, str(error)
    else:
        try:
            recommender.recommend(["i0", "i3"], k=5)
            recommender.similar_items("i3", k=3)
        except Exception as error:  # a bundle that loads but cannot answer
            outcome.request_error = f"{type(error).__name__}: {error}"
    after = snapshot(bundle)
    outcome.changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return outcome


# ---------------------------------------------------------------------------------------------- mutations


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sign(bundle: Path) -> None:
    data = (bundle / MANIFEST).read_bytes()
    (bundle / SIDECAR).write_text(f"{_sha(data)}  {MANIFEST}\n")


def manifest(edit: Callable[[dict], Any], resign: bool = True) -> Callable[[Path], None]:
    """Edit the manifest dict in place (or return a replacement); rewrite the sidecar unless ``resign=False``."""

    def mutate(bundle: Path) -> None:
        raw = json.loads((bundle / MANIFEST).read_text())
        replaced = edit(raw)
        (bundle / MANIFEST).write_text(json.dumps(raw if replaced is None else replaced))
        if resign:
            _sign(bundle)

    return mutate


def raw_manifest(data: bytes) -> Callable[[Path], None]:
    def mutate(bundle: Path) -> None:
        (bundle / MANIFEST).write_bytes(data)
        _sign(bundle)

    return mutate


def replace(name: str, make: Callable[[bytes], bytes], resigned: bool = True) -> Callable[[Path], None]:
    """Replace file ``name`` by ``make(old bytes)``; with ``resigned`` its sha256 and the sidecar follow."""

    def mutate(bundle: Path) -> None:
        data = make((bundle / name).read_bytes())
        (bundle / name).write_bytes(data)
        if resigned:
            raw = json.loads((bundle / MANIFEST).read_text())
            raw["files"][name] = _sha(data)
            (bundle / MANIFEST).write_text(json.dumps(raw))
            _sign(bundle)

    return mutate


def setter(path: str, value: Any) -> Callable[[dict], None]:
    """Set a dotted key (``index.search_params``, ``inputs.0.dtype``) of the manifest dict."""

    def edit(raw: dict) -> None:
        *parents, leaf = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return edit


def dropper(path: str) -> Callable[[dict], None]:
    def edit(raw: dict) -> None:
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        del node[leaf]

    return edit


def _npz(**changes: Any) -> Callable[[bytes], bytes]:
    """items.npz with arrays replaced (``None`` = removed)."""

    def make(old: bytes) -> bytes:
        with np.load(io.BytesIO(old)) as arrays:
            columns = {name: arrays[name] for name in arrays.files}
        for name, value in changes.items():
            if value is None:
                columns.pop(name, None)
            else:
                columns[name] = value
        buffer = io.BytesIO()
        np.savez(buffer, **columns)
        return buffer.getvalue()

    return make


def _index(index: faiss.Index) -> Callable[[bytes], bytes]:
    return lambda _: faiss.serialize_index(index).tobytes()


def _flat(vectors: np.ndarray, metric: int = faiss.METRIC_INNER_PRODUCT) -> faiss.Index:
    index = faiss.index_factory(vectors.shape[1], "Flat", metric)
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


def _vectors() -> np.ndarray:
    return tiny_catalog()[0]


def _table(rows: int = NUM_ITEMS + 1, dim: int = DIM, nan_row: int | None = None) -> np.ndarray:
    table = np.vstack([np.zeros((1, DIM), np.float32), _vectors()])[:rows, :dim].copy()
    if nan_row is not None:
        table[nan_row] = np.nan
    return table


def _encoder(table: np.ndarray, history: int = HISTORY) -> Callable[[bytes], bytes]:
    return lambda _: mean_encoder(table, history)


def _two_outputs(_: bytes) -> bytes:
    table = _table()
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "history"], ["embedded"], axis=0),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["query"], keepdims=0),
            helper.make_node("Identity", ["query"], ["copy"]),
        ],
        "two_outputs",
        [helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", HISTORY])],
        [
            helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", DIM]),
            helper.make_tensor_value_info("copy", TensorProto.FLOAT, ["batch", DIM]),
        ],
        initializer=[numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def _int32_input(_: bytes) -> bytes:
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["history"], ["ids"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "ids"], ["embedded"], axis=0),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["query"], keepdims=0),
        ],
        "int32_input",
        [helper.make_tensor_value_info("history", TensorProto.INT32, ["batch", HISTORY])],
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(_table(), "table"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def _renamed_input(_: bytes) -> bytes:
    return mean_encoder(_table(), HISTORY).replace(b"history", b"sequenc")


def link_out(name: str) -> Callable[[Path], None]:
    """``name`` becomes a link to an identical copy outside the bundle (same bytes, same sha256)."""

    def mutate(bundle: Path) -> None:
        outside = bundle.parent / f"outside-{name}"
        shutil.copyfile(bundle / name, outside)
        (bundle / name).unlink()
        (bundle / name).symlink_to(outside)

    return mutate


def link_in(name: str) -> Callable[[Path], None]:
    """``name`` becomes a link to an identical file inside the bundle."""

    def mutate(bundle: Path) -> None:
        (bundle / name).rename(bundle / f"real-{name}")
        (bundle / name).symlink_to(f"real-{name}")

    return mutate


def fifo(name: str) -> Callable[[Path], None]:
    def mutate(bundle: Path) -> None:
        (bundle / name).unlink()
        os.mkfifo(bundle / name)

    return mutate


def directory(name: str) -> Callable[[Path], None]:
    def mutate(bundle: Path) -> None:
        (bundle / name).unlink()
        (bundle / name).mkdir()

    return mutate


def remove(name: str) -> Callable[[Path], None]:
    return lambda bundle: (bundle / name).unlink()


def append(name: str) -> Callable[[Path], None]:
    def mutate(bundle: Path) -> None:
        with (bundle / name).open("ab") as handle:
            handle.write(b"\0")

    return mutate


def _traversal(raw: dict) -> None:
    raw["files"]["../outside.json"] = raw["files"].pop(IDS)
    raw["item_ids"] = "../outside.json"


def _absolute(raw: dict) -> None:
    raw["files"]["/etc/hostname"] = raw["files"].pop(IDS)
    raw["item_ids"] = "/etc/hostname"


def _ids(values: Any) -> Callable[[bytes], bytes]:
    return lambda _: json.dumps(values).encode()


def _popularity(value: float) -> np.ndarray:
    popularity = np.arange(NUM_ITEMS, 0, -1).astype(np.float32)
    popularity[3] = value
    return popularity


ID_LIST = [f"i{r}" for r in range(NUM_ITEMS)]


# ---------------------------------------------------------------------------------------------- the cases

S = BundleCase
CASES: list[BundleCase] = [
    # the manifest and its sidecar
    S("manifest-changed-id-offset", manifest(setter("id_offset", 2), resign=False), (MANIFEST, "changed", SIDECAR)),
    S("manifest-changed-whitespace", manifest(lambda raw: None, resign=False), (MANIFEST, "changed")),
    S("sidecar-missing", remove(SIDECAR), (SIDECAR, "not found")),
    S("sidecar-garbage", lambda b: (b / SIDECAR).write_text("not a hash\n"), (SIDECAR, "64 lowercase hex")),
    S("sidecar-link", link_in(SIDECAR), (SIDECAR, "symbolic link")),
    S("manifest-missing", remove(MANIFEST), ("not a bundle", MANIFEST)),
    S("manifest-link-outside", lambda b: (link_out(MANIFEST)(b), _sign(b)), (MANIFEST, "leaves the bundle")),
    S("manifest-directory", lambda b: directory(MANIFEST)(b), (MANIFEST, "not a regular file")),
    S("manifest-not-json", raw_manifest(b"{not json"), (MANIFEST, "not valid JSON")),
    S("manifest-not-utf8", raw_manifest(b'{"family": "\xff"}'), (MANIFEST, "not valid JSON")),
    S("manifest-array", raw_manifest(b"[1, 2]"), (MANIFEST, "JSON object", "list")),
    S("manifest-nan", manifest(setter("dim", float("nan"))), (MANIFEST, "not valid JSON", "NaN")),
    S("manifest-duplicate-key", raw_manifest(b'{"dim": 8, "dim": 9}'), (MANIFEST, "duplicate key 'dim'")),
    S("manifest-deep-nesting", raw_manifest(b"[" * 100_000 + b"]" * 100_000), (MANIFEST, "not valid JSON")),
    S("schema-version-99", manifest(setter("schema_version", 99)), (MANIFEST, "schema_version 99")),
    S("schema-version-true", manifest(setter("schema_version", True)), (MANIFEST, "schema_version True")),
    S("missing-files-key", manifest(dropper("files")), (MANIFEST, "missing the keys ['files']")),
    S("unknown-key", manifest(setter("id_ofset", 2)), (MANIFEST, "unknown key 'id_ofset'")),
    # bounds and types of every field
    S("id-offset-1e30", manifest(setter("id_offset", 1e30)), (MANIFEST, "'id_offset'", "1e+30")),
    S("id-offset-huge-int", manifest(setter("id_offset", 10**30)), (MANIFEST, "'id_offset'", str(10**30))),
    S("id-offset-negative", manifest(setter("id_offset", -1)), (MANIFEST, "'id_offset'", "-1")),
    S("id-offset-bool", manifest(setter("id_offset", True)), (MANIFEST, "'id_offset'", "True")),
    S("id-offset-string", manifest(setter("id_offset", "1")), (MANIFEST, "'id_offset'", "'1'")),
    S("id-offset-past-encoder", manifest(setter("id_offset", 5)), (ONNX, "model item ids [5, 64]", "id_offset")),
    S("dim-zero", manifest(setter("dim", 0)), (MANIFEST, "'dim'", "got 0")),
    S("dim-string", manifest(setter("dim", "8")), (MANIFEST, "'dim'", "'8'")),
    S("dim-mismatch", manifest(setter("dim", 9)), (ONNX, "dim=9")),
    S("num-items-negative", manifest(setter("num_items", -1)), (MANIFEST, "'num_items'", "-1")),
    S("num-items-float", manifest(setter("num_items", 60.0)), (MANIFEST, "'num_items'", "60.0")),
    S("num-items-mismatch", manifest(setter("num_items", 59)), (INDEX, "num_items=59")),
    S("metric-l2", manifest(setter("metric", "l2")), (MANIFEST, "'metric'", "'l2'")),
    S("precision-without-encoder", manifest(setter("precision", "int8")), (MANIFEST, "'precision'", "'int8'")),
    S("precision-list", manifest(setter("precision", ["fp32"])), (MANIFEST, "'precision'", "['fp32']")),
    S("encoder-unknown-precision", manifest(setter("encoders.fp16", ONNX)), (MANIFEST, "'encoders'", "'fp16'")),
    S("encoders-empty", manifest(setter("encoders", {})), (MANIFEST, "'encoders'")),
    S("family-not-string", manifest(setter("family", 5)), (MANIFEST, "'family'", "5")),
    S("file-traversal", manifest(_traversal), (MANIFEST, "'files'", "../outside.json")),
    S("file-absolute", manifest(_absolute), (MANIFEST, "'files'", "/etc/hostname")),
    S("file-in-subdirectory", manifest(setter("item_ids", "sub/item_ids.json")), (MANIFEST, "'item_ids'", "sub/")),
    S("file-named-manifest", manifest(setter("items", MANIFEST)), (MANIFEST, "'items'")),
    S("sha-not-hex", manifest(lambda raw: raw["files"].update({IDS: "xyz"})), (MANIFEST, f"files.{IDS}", "'xyz'")),
    S("referenced-file-unlisted", manifest(lambda raw: raw["files"].pop(ITEMS) and None), (MANIFEST, "'files'", ITEMS)),
    S("index-file-missing-key", manifest(dropper("index.file")), (MANIFEST, "'index.file'", "None")),
    S("search-params-syntax", manifest(setter("index.search_params", "nprobe=abc")), ("'index.search_params'", "abc")),
    S("search-params-int", manifest(setter("index.search_params", 5)), (MANIFEST, "'index.search_params'", "5")),
    S("search-params-unknown", manifest(setter("index.search_params", "bogus=3")), (INDEX, "search_params", "bogus")),
    S("search-params-wrong-index", manifest(setter("index.search_params", "nprobe=8")), (INDEX, "nprobe", "IndexFlat")),
    S("inputs-empty", manifest(setter("inputs", [])), (MANIFEST, "'inputs'", "[]")),
    S("input-dtype", manifest(setter("inputs.0.dtype", "complex128")), (MANIFEST, "inputs[0].dtype", "complex128")),
    S("input-shape-negative", manifest(setter("inputs.0.shape", ["batch", -5])), (MANIFEST, "inputs[0].shape", "-5")),
    S("input-shape-no-batch", manifest(setter("inputs.0.shape", [1, 5])), (MANIFEST, "inputs[0].shape")),
    S(
        "input-dynamic-without-max-len",
        manifest(setter("inputs.0.shape", ["batch", "length"])),
        (MANIFEST, "inputs[0].max_len", "None"),
    ),
    S("input-extra-key", manifest(setter("inputs.0.colour", "red")), (MANIFEST, "inputs[0]", "colour")),
    S("input-name-differs", manifest(setter("inputs.0.name", "other")), (ONNX, "'other'", "history")),
    S("input-dtype-differs", manifest(setter("inputs.0.dtype", "int32")), (ONNX, "int32", "tensor(int64)")),
    S("categories-not-list", manifest(setter("categories", "abc")), (MANIFEST, "'categories'", "'abc'")),
    S("categories-int-name", manifest(setter("categories.2", 7)), (MANIFEST, "categories[2]", "7")),
    S("categories-first-not-empty", manifest(setter("categories.0", "x")), (MANIFEST, "categories[0]", "'x'")),
    S("serving-bad-setting", manifest(setter("serving.recommend.mmr_lambda", 5)), (MANIFEST, "mmr_lambda", "5")),
    S("serving-unknown-key", manifest(setter("serving.ranking", {})), (MANIFEST, "'serving'", "ranking")),
    S("versions-not-strings", manifest(setter("versions.numpy", 2)), (MANIFEST, "versions.numpy", "2")),
    # the files: hashes, links, kinds
    *(S(f"tampered-{name}", append(name), (name, "corrupt or tampered")) for name in (ONNX, INDEX, IDS, ITEMS)),
    *(S(f"missing-{name}", remove(name), (name, "missing")) for name in (ONNX, INDEX)),
    *(S(f"link-outside-{name}", link_out(name), (name, "leaves the bundle")) for name in (ONNX, IDS)),
    *(S(f"link-inside-{name}", link_in(name), (name, "symbolic link")) for name in (INDEX, ITEMS)),
    S("fifo-items", fifo(ITEMS), (ITEMS, "not a regular file")),
    S("directory-index", directory(INDEX), (INDEX, "not a regular file")),
    # the files: well hashed but malformed
    S("onnx-truncated", replace(ONNX, lambda d: d[: len(d) // 2]), (ONNX, "not a loadable ONNX model")),
    S("onnx-garbage", replace(ONNX, lambda d: b"\x08\x07garbage" * 50), (ONNX, "not a loadable ONNX model")),
    S("onnx-empty", replace(ONNX, lambda d: b""), (ONNX, "not a loadable ONNX model")),
    S("onnx-wrong-width", replace(ONNX, _encoder(_table(dim=4))), (ONNX, "shape (4,)", "dim=8")),
    S("onnx-short-table", replace(ONNX, _encoder(_table(rows=10))), (ONNX, "model item ids [1, 60]")),
    S("onnx-nan-output", replace(ONNX, _encoder(_table(nan_row=60))), (ONNX, "non-finite")),
    S("onnx-two-outputs", replace(ONNX, _two_outputs), (ONNX, "2 outputs")),
    S("onnx-int32-input", replace(ONNX, _int32_input), (ONNX, "tensor(int32)", "int64")),
    S("onnx-renamed-input", replace(ONNX, _renamed_input), (ONNX, "sequenc", "history")),
    S("npz-without-popularity", replace(ITEMS, _npz(popularity=None)), (ITEMS, "missing", "popularity")),
    S("npz-without-category", replace(ITEMS, _npz(category=None)), (ITEMS, "missing", "category")),
    S("npz-short-popularity", replace(ITEMS, _npz(popularity=np.ones(59))), (ITEMS, "popularity", "(59,)")),
    S("npz-nan-popularity", replace(ITEMS, _npz(popularity=_popularity(np.nan))), (ITEMS, "popularity", "finite")),
    S("npz-negative-popularity", replace(ITEMS, _npz(popularity=_popularity(-1))), (ITEMS, "popularity")),
    S("npz-string-popularity", replace(ITEMS, _npz(popularity=np.array(["a"] * 60))), (ITEMS, "popularity", "<U1")),
    S("npz-object-array", replace(ITEMS, _npz(popularity=np.array([{}] * 60, dtype=object))), (ITEMS, "popularity")),
    S("npz-category-out-of-range", replace(ITEMS, _npz(category=np.full(60, 9))), (ITEMS, "category", "[0, 4)")),
    S("npz-category-float", replace(ITEMS, _npz(category=np.ones(60))), (ITEMS, "category", "float64")),
    S("npz-available-float", replace(ITEMS, _npz(available=np.ones(60))), (ITEMS, "available", "float64")),
    S("npz-unknown-array", replace(ITEMS, _npz(price=np.ones(60))), (ITEMS, "price.npy")),
    S("npz-not-zip", replace(ITEMS, lambda d: b"PK not really"), (ITEMS, "not a readable .npz")),
    S("npz-truncated", replace(ITEMS, lambda d: d[: len(d) // 2]), (ITEMS,)),
    S("ids-not-json", replace(IDS, lambda d: b"[i0, i1"), (IDS, "not valid JSON")),
    S("ids-object", replace(IDS, _ids({"a": 1})), (IDS, "JSON list of 60", "dict")),
    S("ids-too-few", replace(IDS, _ids(ID_LIST[:59])), (IDS, "59 entries")),
    S("ids-duplicate", replace(IDS, _ids([*ID_LIST[:59], "i0"])), (IDS, "not unique")),
    S("ids-int", replace(IDS, _ids([*ID_LIST[:59], 59])), (IDS, "item id 59", "59")),
    S("ids-empty-string", replace(IDS, _ids([*ID_LIST[:59], ""])), (IDS, "item id 59", "''")),
    S("ids-newline", replace(IDS, _ids([*ID_LIST[:59], "a\nb"])), (IDS, "item id 59", "'a\\nb'")),
    S("ids-surrogate", replace(IDS, lambda d: d.replace(b'"i59"', b'"\\ud800"')), (IDS, "item id 59", "\\ud800")),
    S("index-truncated", replace(INDEX, lambda d: d[: len(d) // 2]), (INDEX, "not a readable FAISS index")),
    S("index-garbage", replace(INDEX, lambda d: b"IxFI" + b"\xff" * 64), (INDEX, "not a readable FAISS index")),
    S("index-l2-metric", replace(INDEX, _index(_flat(_vectors(), faiss.METRIC_L2))), (INDEX, "inner-product")),
    S("index-too-few", replace(INDEX, _index(_flat(_vectors()[:59]))), (INDEX, "59 vectors", "num_items=60")),
    S("index-wrong-width", replace(INDEX, _index(_flat(_vectors()[:, :4]))), (INDEX, "width 4", "dim=8")),
    S(
        "index-nan-vector",
        replace(INDEX, _index(_flat(np.where(np.arange(60)[:, None] == 7, np.nan, _vectors())))),
        (INDEX, "row 7", "not finite"),
    ),
]
