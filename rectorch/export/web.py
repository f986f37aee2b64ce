"""``export/target=web``: a static web bundle that recommends in the browser, the history never leaving it.

``write_web_bundle`` turns a verified bundle into ``<bundle>/web/``, a directory any static file server can
serve (``python -m http.server -d <bundle>/web``)::

    index.html, recommend.js          the page (rectorch/serving/web/): history in localStorage, top-k
    ort.wasm.min.js, ort-wasm-*       onnxruntime-web, vendored by scripts/build_web.py
    query_encoder.<precision>.onnx    the bundle's served encoder (int8 when it passed the quality bar)
    item_vectors.f16                  (num_items, dim) float16, little-endian, row r = catalog row r
      or item_vectors.i8 + item_scales.f32   int8 rows and one float32 scale per row (vector = q * scale)
    items.json                        item ids, popularity, category codes and names, availability
    manifest.json, manifest.sha256    what the page and :func:`read_web_bundle` check every file against

The page fetches nothing but these files and sends nothing anywhere (its Content-Security-Policy allows
only its own origin). It ranks like :class:`~rectorch.serving.Recommender` at ``mmr_lambda=1`` without
exploration or freshness: every available item not in the history, by inner product with the query (the
normalised query for cosine bundles), brute force over the catalog; an empty history gets the most popular.
"""

import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rectorch.serving.bundle import check_replaceable, write_file
from rectorch.serving.catalog import Catalog
from rectorch.serving.index import ItemIndex
from rectorch.serving.manifest import (
    MANIFEST_FILE,
    MANIFEST_SHA256_FILE,
    BundleError,
    InputSpec,
    Manifest,
    open_manifest,
    parse_json,
    read_files,
    read_member,
    sha256_bytes,
    show,
    sidecar_text,
)

log = logging.getLogger(__name__)

WEB_DIR = "web"
FORMAT = "rectorch-web"
SCHEMA_VERSION = 1
PAGE_FILES = ("index.html", "recommend.js")
RUNTIME_RECORD = "onnxruntime-web.json"
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")  # what the page loads
ITEMS_FILE = "items.json"
VECTOR_FILES = {"float16": "item_vectors.f16", "int8": "item_vectors.i8"}
SCALES_FILE = "item_scales.f32"
_UNSUPPORTED = {"mmr_lambda": 1.0, "explore_share": 0.0, "freshness_weight": 0.0}  # stages the page leaves out


@dataclass
class TargetSettings:
    """What ``rectorch-export`` writes (``conf/export/target/*.yaml``).

    Args:
        kind: ``server`` (the bundle ``rectorch-serve`` loads) or ``web`` (that bundle plus ``<bundle>/web/``).
        vectors: item vectors of the web bundle: ``float16``, or ``int8`` with one scale per item.
        precision: encoder of the web bundle: ``served`` (the bundle's choice), ``int8`` or ``fp32``.
        runtime_dir: vendored onnxruntime-web (``scripts/build_web.py --out``); None = the package's.
        agreement_queries: item vectors used as queries to report the top-10 agreement of the stored vectors.
    """

    kind: str = "server"
    vectors: str = "float16"
    precision: str = "served"
    runtime_dir: str | None = None
    agreement_queries: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in ("server", "web"):
            raise ValueError(f"export.target.kind must be 'server' or 'web', got {self.kind!r}")
        if self.vectors not in VECTOR_FILES:
            raise ValueError(f"export.target.vectors must be one of {sorted(VECTOR_FILES)}, got {self.vectors!r}")
        if self.precision not in ("served", "int8", "fp32"):
            raise ValueError(f"export.target.precision must be served, int8 or fp32, got {self.precision!r}")
        if self.agreement_queries < 0:
            raise ValueError(f"export.target.agreement_queries must be >= 0, got {self.agreement_queries}")


def page_dir() -> Any:
    """The page's files as shipped in the package (``rectorch/serving/web/``)."""
    return resources.files("rectorch.serving").joinpath("web")


def runtime_files(runtime_dir: str | None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The vendored onnxruntime-web record and its files' bytes, each checked against the recorded sha256."""
    where = Path(runtime_dir) if runtime_dir else Path(str(page_dir().joinpath("vendor")))
    if not (where / RUNTIME_RECORD).is_file():
        raise ValueError(
            f"onnxruntime-web is not vendored in {where} (no {RUNTIME_RECORD}): run `python scripts/build_web.py` "
            "or set export.target.runtime_dir"
        )
    record = parse_json((where / RUNTIME_RECORD).read_bytes(), str(where / RUNTIME_RECORD))
    listed = record.get("files") if isinstance(record, dict) else None
    if not isinstance(listed, dict) or set(listed) != set(RUNTIME_FILES):
        raise BundleError(f"{where / RUNTIME_RECORD}: key 'files' must list the sha256 of {list(RUNTIME_FILES)}")
    files = {}
    for name, expected in record["files"].items():
        data = read_member(where.resolve(), name)
        if sha256_bytes(data) != expected:
            raise BundleError(f"{where / name} does not match its sha256 in {RUNTIME_RECORD} (re-run build_web.py)")
        files[name] = data
    return record, files


def quantize_vectors(vectors: np.ndarray, dtype: str) -> tuple[dict[str, bytes], np.ndarray]:
    """The vector file(s) for ``dtype`` and the float32 vectors a reader decodes from them."""
    if dtype == "float16":
        with np.errstate(over="ignore"):
            stored = vectors.astype("<f2")
        if not np.isfinite(stored).all():
            raise ValueError("item vectors overflow float16 (|v| > 65504): use export.target.vectors=int8")
        return {VECTOR_FILES[dtype]: stored.tobytes()}, stored.astype(np.float32)
    scales = (np.abs(vectors).max(axis=1) / 127.0).astype("<f4")
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    files = {VECTOR_FILES[dtype]: codes.tobytes(), SCALES_FILE: scales.tobytes()}
    return files, codes.astype(np.float32) * scales[:, None]


def top10_agreement(exact: np.ndarray, stored: np.ndarray, queries: int) -> float | None:
    """Mean overlap of the top-10 items by inner product, exact vs stored vectors, for the first item queries."""
    count = min(queries, len(exact))
    if count == 0 or len(exact) <= 10:
        return None
    q = exact[:count].astype(np.float64)
    top = [np.argsort(-(q @ table.astype(np.float64).T), axis=1, kind="stable")[:, :10] for table in (exact, stored)]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*top, strict=True)]))


@dataclass
class _Source:
    """The parts of a verified bundle a web bundle is made of."""

    manifest: Manifest
    digest: str
    precision: str
    encoder_file: str
    encoder: bytes
    vectors: np.ndarray
    catalog: Catalog


def _read_source(bundle_dir: str | Path, precision: str) -> _Source:
    root, manifest, digest = open_manifest(bundle_dir)
    if manifest.ranking:
        raise BundleError(f"{root}: a web bundle serves retrieval only; this bundle has a ranking stage")
    precision = manifest.precision if precision == "served" else precision
    if precision not in manifest.encoders:
        raise BundleError(f"{root} has no {precision!r} encoder for the web bundle; it has {sorted(manifest.encoders)}")
    blobs = read_files(root, manifest)
    index_file, encoder_file = manifest.index["file"], manifest.encoders[precision]
    index = ItemIndex.from_bytes(index_file, blobs[index_file], "", manifest.num_items, manifest.dim)
    catalog = Catalog.from_bytes(
        (manifest.item_ids, blobs[manifest.item_ids]),
        (manifest.items, blobs[manifest.items]),
        manifest.categories,
        manifest.num_items,
    )
    vectors = index.vectors(np.arange(manifest.num_items))
    return _Source(manifest, digest, precision, encoder_file, blobs[encoder_file], vectors, catalog)


def write_web_bundle(bundle_dir: str | Path, out_dir: str | Path, settings: TargetSettings) -> Path:
    """Write the web bundle of the verified bundle ``bundle_dir`` into ``out_dir`` (replaced when a bundle or empty).

    The manifest's ``bytes`` counts the model files (encoder, vectors, items), the runtime and the page;
    the manifest itself adds a few KB.

    Raises:
        BundleError: the source bundle is not valid, has a ranking stage, or lacks the asked-for encoder.
        ValueError: the runtime is not vendored, or the vectors do not fit the asked-for type.
    """
    out = Path(out_dir)
    check_replaceable(out)
    source = _read_source(bundle_dir, settings.precision)
    manifest = source.manifest
    recorded = manifest.recommend_settings()
    ignored = [name for name, plain in _UNSUPPORTED.items() if getattr(recorded, name) != plain]
    if ignored:
        log.warning("the web page ranks by relevance only; it ignores the recorded serving settings %s", ignored)
    record, runtime = runtime_files(settings.runtime_dir)
    vector_files, decoded = quantize_vectors(source.vectors, settings.vectors)
    model = {source.encoder_file: source.encoder, **vector_files, ITEMS_FILE: items_json(source.catalog)}
    page = {name: page_dir().joinpath(name).read_bytes() for name in PAGE_FILES}
    files = {**model, **runtime, **page}
    web = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "family": manifest.family,
        "dim": manifest.dim,
        "metric": manifest.metric,
        "num_items": manifest.num_items,
        "id_offset": manifest.id_offset,
        "inputs": [vars(spec) for spec in manifest.inputs],
        "encoder": {
            "file": source.encoder_file,
            "precision": source.precision,
            "reason": manifest.precision_reason,
        },
        "vectors": {
            "file": VECTOR_FILES[settings.vectors],
            "dtype": settings.vectors,
            "scales": SCALES_FILE if settings.vectors == "int8" else None,
            "max_abs_error": float(np.abs(decoded - source.vectors).max()),
            "top10_agreement": top10_agreement(source.vectors, decoded, settings.agreement_queries),
        },
        "items": ITEMS_FILE,
        "serving": {
            "exclude_seen": recorded.exclude_seen,
            "max_k": recorded.max_k,
            "max_history": recorded.max_history,
            "ignored": ignored,
        },
        "runtime": {key: record[key] for key in ("package", "version", "license", "tarball_sha256", "integrity")},
        "page": list(PAGE_FILES),
        "bytes": {
            name: sum(map(len, part.values()))
            for name, part in (("model", model), ("runtime", runtime), ("page", page))
        },
        "files": {name: sha256_bytes(data) for name, data in sorted(files.items())},
        "source": {"manifest_sha256": source.digest, **manifest.source},
    }
    text = json.dumps(web, indent=2, sort_keys=True, allow_nan=False).encode()
    _write_dir(out, {**files, MANIFEST_FILE: text, MANIFEST_SHA256_FILE: sidecar_text(text).encode()})
    log.info("web bundle %s: %s bytes of model files, runtime %s", out, web["bytes"]["model"], record["version"])
    return out


def items_json(catalog: Catalog) -> bytes:
    """Row-aligned item ids and the metadata the page reads (availability: null = every item is available)."""
    items = {
        "ids": catalog.ids,
        "popularity": [float(p) for p in catalog.popularity],
        "category": catalog.category.tolist(),
        "categories": catalog.categories,
        "available": None if catalog.available is None else catalog.available.astype(bool).tolist(),
    }
    return json.dumps(items, separators=(",", ":")).encode()


def _write_dir(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a hidden sibling of ``out``, then put it in place of ``out`` (empty or a bundle)."""
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(temporary)
    try:
        for name, data in files.items():
            write_file(temporary / name, data)
        if out.exists():
            shutil.rmtree(out)
        os.rename(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


@dataclass
class WebBundle:
    """A web bundle read back: its manifest, encoder bytes, the decoded float32 item vectors and the catalog."""

    manifest: dict[str, Any]
    encoder: bytes
    vectors: np.ndarray
    catalog: Catalog

    @property
    def inputs(self) -> list[InputSpec]:
        return [InputSpec(**spec) for spec in self.manifest["inputs"]]


_REQUIRED = {
    "files": dict,
    "num_items": int,
    "dim": int,
    "inputs": list,
    "encoder": dict,
    "vectors": dict,
    "items": str,
}


def read_web_bundle(path: str | Path) -> WebBundle:
    """Read a web bundle as the page does: the manifest against its sidecar, every file against its sha256.

    Raises:
        BundleError: a missing, changed or malformed file (one line naming it and the key).
    """
    root = Path(os.path.realpath(path))
    where = str(root / MANIFEST_FILE)
    data = read_member(root, MANIFEST_FILE)
    if read_member(root, MANIFEST_SHA256_FILE).decode("ascii", "replace") != sidecar_text(data):
        raise BundleError(f"{where} does not match {MANIFEST_SHA256_FILE}")
    web = parse_json(data, where)
    if not isinstance(web, dict) or web.get("format") != FORMAT or web.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{where} is not a {FORMAT} manifest of schema version {SCHEMA_VERSION}")
    for key, kind in _REQUIRED.items():
        if not isinstance(web.get(key), kind):
            raise BundleError(f"{where}: key {key!r} must be a {kind.__name__}, got {show(web.get(key))}")
    blobs = {}
    for name, expected in web["files"].items():
        blob = read_member(root, name)
        if sha256_bytes(blob) != expected:
            raise BundleError(f"web bundle file {name!r} is corrupt or tampered: its sha256 differs from the manifest")
        blobs[name] = blob
    n, dim, spec = web["num_items"], web["dim"], web["vectors"]
    try:
        if spec["dtype"] == "float16":
            vectors = np.frombuffer(blobs[spec["file"]], "<f2").astype(np.float32).reshape(n, dim)
        else:
            scales = np.frombuffer(blobs[spec["scales"]], "<f4").reshape(n, 1)
            vectors = np.frombuffer(blobs[spec["file"]], np.int8).reshape(n, dim).astype(np.float32) * scales
        items = parse_json(blobs[web["items"]], web["items"])
        catalog = Catalog(
            ids=items["ids"],
            popularity=np.asarray(items["popularity"], np.float32),
            category=np.asarray(items["category"], np.int32),
            categories=items["categories"],
            available=None if items["available"] is None else np.asarray(items["available"], bool),
        )
        encoder = blobs[web["encoder"]["file"]]
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(
            f"{where}: the vectors, items or encoder do not fit the manifest: {show(str(error))}"
        ) from None
    return WebBundle(web, encoder, vectors, catalog)
