"""Write a bundle from plain parts (ONNX bytes, a FAISS index, a catalog): used by export, tests and benchmarks."""

import dataclasses
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rectorch.serving.catalog import Catalog
from rectorch.serving.manifest import MANIFEST_FILE, InputSpec, Manifest, sha256_file
from rectorch.serving.settings import RecommendSettings

INDEX_FILE = "items.faiss"
ENCODER_FILES = {"fp32": "query_encoder.onnx", "int8": "query_encoder.int8.onnx"}
_VERSIONED = ("numpy", "onnx", "onnxruntime", "faiss-cpu", "torch", "rectorch")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a bundle depends on (absent ones are skipped)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def flat_index(vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product index over ``vectors`` (``(N, D)`` float32)."""
    index = faiss.index_factory(vectors.shape[1], "Flat", faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


def write_bundle(
    out_dir: str | Path,
    *,
    family: str,
    encoders: dict[str, bytes],
    inputs: list[InputSpec],
    index: faiss.Index,
    catalog: Catalog,
    metric: str = "ip",
    precision: str = "fp32",
    precision_reason: str = "",
    index_info: dict[str, Any] | None = None,
    reports: dict[str, dict[str, Any]] | None = None,
    serving: RecommendSettings | None = None,
) -> Manifest:
    """Write every file, hash it, and write ``manifest.json`` last (a bundle without one is incomplete).

    Args:
        out_dir: bundle directory (created; existing bundle files are overwritten).
        family: model class name.
        encoders: precision → serialized ONNX model.
        inputs: the encoders' input specs.
        index: FAISS index whose row ``r`` is ``catalog`` row ``r``.
        catalog: item ids and metadata.
        metric: ``ip`` or ``cosine``.
        precision: the encoder to serve by default; ``precision_reason`` says why.
        index_info: ``factory``, ``search_params``, ``recall`` of the index.
        reports: ``validation``, ``quantization`` and ``source`` sections.
        serving: the stage settings to serve with by default (recorded in full; None = the defaults).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    names = {precision_name: ENCODER_FILES[precision_name] for precision_name in encoders}
    for precision_name, model in encoders.items():
        (out / names[precision_name]).write_bytes(model)
    faiss.write_index(index, str(out / INDEX_FILE))
    item_ids_file, items_file = catalog.save(out)
    files = [*names.values(), INDEX_FILE, item_ids_file, items_file]
    reports = reports or {}
    manifest = Manifest(
        family=family,
        inputs=inputs,
        dim=index.d,
        metric=metric,
        files={name: sha256_file(out / name) for name in files},
        encoders=names,
        precision=precision,
        precision_reason=precision_reason,
        item_ids=item_ids_file,
        items=items_file,
        categories=catalog.categories,
        num_items=index.ntotal,
        index={"file": INDEX_FILE, "factory": "Flat", "search_params": "", "recall": {}, **(index_info or {})},
        validation=reports.get("validation", {}),
        quantization=reports.get("quantization", {}),
        source=reports.get("source", {}),
        versions=library_versions(),
        serving={"recommend": dataclasses.asdict(serving or RecommendSettings())},
    )
    manifest.check()
    (out / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest
