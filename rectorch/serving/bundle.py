"""Write a bundle from plain parts (ONNX bytes, a FAISS index, a catalog): used by export, tests and benchmarks.

The bundle is written into a hidden temporary sibling directory (``.NAME.tmp-PID-HEX``), completed with
``manifest.json`` and ``manifest.sha256``, synced, and only then renamed into place. A process killed
mid-write leaves that sibling, never a directory that loads as a bundle; the next write to the same
place removes siblings left by dead processes. An existing directory is replaced only when it is a
bundle (holds ``manifest.json``) or empty; anything else is refused and left untouched.
"""

import dataclasses
import os
import platform
import re
import secrets
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from rectorch.serving.catalog import Catalog
from rectorch.serving.manifest import (
    MANIFEST_FILE,
    MANIFEST_SHA256_FILE,
    BundleError,
    InputSpec,
    Manifest,
    sha256_bytes,
    sidecar_text,
)
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
    ranking: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Manifest:
    """Hash every file from its bytes, write them and the manifest next to ``out_dir``, then rename into place.

    Args:
        out_dir: bundle directory (replaced when it is a bundle or empty; any other existing path is refused).
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
        ranking: the manifest's ranking section (see :class:`Manifest`), or None.
        extra_files: further files by name (the ranker and its item statistics), hashed like the rest.

    Raises:
        BundleError: ``out_dir`` is not replaceable, or the parts do not make a valid manifest.
    """
    out = Path(out_dir)
    check_replaceable(out)
    unknown = sorted(set(encoders) - ENCODER_FILES.keys())
    if unknown:
        raise BundleError(f"encoders are keyed by {sorted(ENCODER_FILES)}, got {unknown}")
    blobs = {ENCODER_FILES[name]: model for name, model in encoders.items()}
    blobs[INDEX_FILE] = faiss.serialize_index(index).tobytes()
    catalog_files = catalog.to_files()
    blobs.update(catalog_files)
    item_ids_file, items_file = catalog_files
    clash = sorted(set(extra_files or {}) & set(blobs))
    if clash:
        raise BundleError(f"extra bundle files {clash} clash with the bundle's own files")
    blobs.update(extra_files or {})
    manifest = Manifest(
        family=family,
        inputs=inputs,
        dim=index.d,
        metric=metric,
        files={name: sha256_bytes(data) for name, data in blobs.items()},
        encoders={name: ENCODER_FILES[name] for name in encoders},
        precision=precision,
        precision_reason=precision_reason,
        item_ids=item_ids_file,
        items=items_file,
        categories=catalog.categories,
        num_items=index.ntotal,
        index={"file": INDEX_FILE, "factory": "Flat", "search_params": "", "recall": {}, **(index_info or {})},
        validation=reports.get("validation", {}) if reports else {},
        quantization=reports.get("quantization", {}) if reports else {},
        source=reports.get("source", {}) if reports else {},
        versions=library_versions(),
        serving={"recommend": dataclasses.asdict(serving or RecommendSettings())},
        ranking=ranking or {},
    )
    manifest.check(f"manifest for {out}")
    if len(catalog) != index.ntotal:
        raise BundleError(f"the catalog holds {len(catalog)} items, the index {index.ntotal} vectors")
    text = manifest.to_json().encode()
    blobs[MANIFEST_FILE] = text
    blobs[MANIFEST_SHA256_FILE] = sidecar_text(text).encode()  # last: its presence marks a complete bundle
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out)
    temporary = _sibling(out, "tmp")
    os.mkdir(temporary)
    try:
        for name, data in blobs.items():
            write_file(temporary / name, data)
        _sync_dir(temporary)
        _move_into_place(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return manifest


def check_replaceable(out: Path) -> None:
    """``out`` is absent, an empty directory or a bundle; else a ``BundleError`` and nothing is touched."""
    if out.is_symlink():
        raise BundleError(f"refusing to write a bundle to {out}: it is a symbolic link")
    if not out.exists():
        return
    if not out.is_dir():
        raise BundleError(f"refusing to write a bundle to {out}: it exists and is not a directory")
    if any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise BundleError(
            f"refusing to replace {out}: it exists and is not a bundle (no {MANIFEST_FILE}); "
            "choose another directory or empty it"
        )


def write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (a separate function so tests can interrupt a write between files)."""
    with path.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(temporary: Path, out: Path) -> None:
    """Rename ``temporary`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if not os.path.lexists(out):
        os.rename(temporary, out)
    else:
        check_replaceable(out)
        old = _sibling(out, "old")
        os.rename(out, old)
        try:
            os.rename(temporary, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _sync_dir(out.parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_siblings(out: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID-HEX`` / ``.NAME.old-PID-HEX`` directories next to ``out`` whose process is gone."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)-[0-9a-f]{{8}}")
    removed = []
    for path in out.parent.iterdir() if out.parent.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match and not path.is_symlink() and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
