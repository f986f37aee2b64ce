"""The bundle contract: ``manifest.json`` schema, file hashing and verification.

A bundle directory holds the ONNX query encoder(s), the FAISS item index, the item id map, item
metadata, the serving settings it was exported with, and this manifest. Row ``r`` of the index is model
item id ``r + id_offset`` (the encoder's id 0 is padding) and external id ``item_ids[r]``. Nothing in a
bundle is pickled.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rectorch.serving.settings import RecommendSettings, recommend_settings

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
METRICS = ("ip", "cosine")


class BundleError(ValueError):
    """A bundle that is missing, malformed, tampered with or truncated."""


@dataclass(frozen=True)
class InputSpec:
    """One named encoder input; ``shape[0]`` is ``"batch"``, other dims are fixed sizes or ``"length"``.

    Args:
        name: ONNX input name (``history`` is the item sequence; others come from ``user_features``).
        dtype: numpy dtype name (``int64``, ``float32``).
        shape: e.g. ``["batch", 200]`` (fixed length) or ``["batch", "length"]`` (dynamic).
        max_len: longest dynamic length (the newest ``max_len`` items are kept); None when fixed.
    """

    name: str
    dtype: str
    shape: list[int | str]
    max_len: int | None = None


@dataclass
class Manifest:
    """Everything serving needs to trust and use a bundle.

    Args:
        family: model class name (``SASRecModule``).
        inputs: encoder inputs in ONNX order.
        dim: query / item vector width.
        metric: ``ip`` or ``cosine`` (vectors are L2-normalised; search is inner product either way).
        files: file name → sha256 of every other file in the bundle.
        encoders: precision (``fp32``/``int8``) → ONNX file name.
        precision: the encoder served by default, with ``precision_reason``.
        item_ids: file holding the row → external id list (JSON).
        items: file holding item metadata arrays (``.npz`` without object arrays).
        categories: category code → name (code 0 = unknown).
        num_items: rows in the index.
        index: ``factory``, ``search_params`` and measured ``recall`` of the FAISS index.
        validation / quantization: export reports.
        source: where the model came from (run dir, MLflow run id, dataset, protocol, test metrics).
        versions: library versions used to write the bundle.
        serving: the settings the bundle was exported with, ``{"recommend": {...}}`` (partial keys allowed;
            empty in bundles written before it existed, which then serve with the defaults).
        id_offset: model item id of row 0.
        schema_version: bumped on incompatible changes.
    """

    family: str
    inputs: list[InputSpec]
    dim: int
    metric: str
    files: dict[str, str]
    encoders: dict[str, str]
    precision: str
    precision_reason: str
    item_ids: str
    items: str
    categories: list[str]
    num_items: int
    index: dict[str, Any]
    validation: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)
    id_offset: int = 1
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Manifest":
        """Parse and check a manifest dict; raises :class:`BundleError` with the offending key."""
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(
                f"unsupported manifest schema_version {raw.get('schema_version')!r}, expected {SCHEMA_VERSION}"
            )
        known = {f.name for f in fields(cls)}
        missing = {name for name in known - raw.keys() if name in _REQUIRED}
        if missing:
            raise BundleError(f"manifest is missing {sorted(missing)}")
        try:
            values = {k: v for k, v in raw.items() if k in known}
            values["inputs"] = [InputSpec(**spec) for spec in raw["inputs"]]
            manifest = cls(**values)
        except TypeError as error:
            raise BundleError(f"malformed manifest: {error}") from error
        manifest.check()
        return manifest

    def check(self) -> None:
        """Internal consistency: metric, default precision and referenced files."""
        if self.metric not in METRICS:
            raise BundleError(f"manifest metric must be one of {METRICS}, got {self.metric!r}")
        if self.precision not in self.encoders:
            raise BundleError(f"served precision {self.precision!r} has no encoder in {sorted(self.encoders)}")
        referenced = {*self.encoders.values(), self.item_ids, self.items, self.index["file"]}
        unlisted = referenced - self.files.keys()
        if unlisted:
            raise BundleError(f"manifest references files without a sha256: {sorted(unlisted)}")
        self.recommend_settings()

    def recommend_settings(self, overrides: Mapping[str, Any] | None = None) -> RecommendSettings:
        """The recorded stage settings (the defaults where none are recorded), then ``overrides``.

        Raises:
            BundleError: the recorded settings are malformed (unknown key, bad value).
            ValueError: an override is (unknown key, bad value).
        """
        if not isinstance(self.serving, dict) or not set(self.serving) <= {"recommend"}:
            raise BundleError(f"manifest 'serving' must be a mapping with a 'recommend' key, got {self.serving!r}")
        recorded = self.serving.get("recommend") or {}
        try:
            recommend_settings(recorded)
        except ValueError as error:
            raise BundleError(f"manifest serving settings: {error}") from error
        return recommend_settings(recorded, overrides)


_OPTIONAL = {"validation", "quantization", "source", "versions", "serving"}
_REQUIRED = {f.name for f in fields(Manifest) if f.name not in _OPTIONAL}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Load ``manifest.json`` of ``bundle`` and (by default) check every listed file's sha256.

    Raises:
        BundleError: missing/unparsable manifest, unknown schema, missing file or hash mismatch.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{bundle} is not a bundle: {MANIFEST_FILE} not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise BundleError(f"{path} must hold a JSON object")
    manifest = Manifest.from_dict(raw)
    if verify:
        verify_files(bundle, manifest)
    return manifest


def verify_files(bundle: Path, manifest: Manifest) -> None:
    """Every file listed in the manifest exists and has the recorded sha256."""
    for name, expected in manifest.files.items():
        path = bundle / name
        if Path(name).name != name or not path.is_file():
            raise BundleError(f"bundle file {name!r} is missing from {bundle}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"bundle file {name!r} is corrupt or tampered: sha256 {actual[:12]}… != {expected[:12]}…")
