"""The bundle contract: ``manifest.json`` schema and bounds, its sidecar hash, and reading bundle files safely.

A bundle directory holds the ONNX query encoder(s), the FAISS item index, the item id map, item
metadata, the serving settings it was exported with, this manifest and ``manifest.sha256`` (the
manifest's own sha256). Row ``r`` of the index is model item id ``r + id_offset`` (the encoder's id 0 is
padding) and external id ``item_ids[r]``. Nothing in a bundle is pickled, and nothing in it is a link:
every file is a plain regular file inside the directory, read once into memory, checked against its
sha256 and parsed from those same bytes.
"""

import errno
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from rectorch.serving.settings import RecommendSettings, recommend_settings

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
MANIFEST_SHA256_FILE = "manifest.sha256"
METRICS = ("ip", "cosine")
PRECISIONS = ("fp32", "int8")
DTYPES = ("int64", "int32", "float32", "float64", "bool")
MAX_ITEMS = 2**31 - 1  # FAISS row ids and model ids stay inside int32
MAX_DIM = 65_536
MAX_ID_OFFSET = 1_000_000
MAX_INPUT_SIZE = 1 << 20  # values per row of one encoder input
MAX_MANIFEST_BYTES = 16 << 20
MAX_FILE_BYTES = 64 << 30
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIDECAR = re.compile(rf"([0-9a-f]{{64}})(?:  {re.escape(MANIFEST_FILE)})?\n?")
_SEARCH_PARAMS = re.compile(r"(?:[A-Za-z_]\w{0,63}=\d{1,7}(?:\.\d{1,6})?(?:,(?=.)|$))*")


class BundleError(ValueError):
    """A bundle that is missing, malformed, tampered with or truncated (one line naming the file and key)."""


def show(value: Any, limit: int = 80) -> str:
    """A one-line, length-bounded ``repr`` of ``value`` for messages."""
    try:
        text = repr(value).encode("ascii", "backslashreplace").decode()
    except ValueError:  # an int too long to print
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


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
        categories: category code → name (code 0 = unknown, named ``""``).
        num_items: rows in the index.
        index: ``file``, ``factory``, ``search_params`` and measured ``recall`` of the FAISS index.
        validation / quantization: export reports.
        source: where the model came from (run dir, MLflow run id, dataset, protocol, test metrics).
        versions: library versions used to write the bundle.
        serving: the settings the bundle was exported with, ``{"recommend": {...}}`` (partial keys allowed;
            empty in bundles written before it existed, which then serve with the defaults).
        ranking: the ranking stage, empty without one: ``channels`` (merge order; each ``name``, ``kind``
            ``ann``/``covisit``/``popular``, ``n`` and, for co-visitation, ``anchors``), ``features`` (the
            ranker's input columns, in order), ``ranker`` and ``stats`` (the ONNX ranker and the item
            statistics the features read), ``last_n``, ``user_fields``, ``max_candidates``, ``validation``,
            ``similarity_vectors`` (``index`` when the similarity features read the index's item vectors) and
            ``ranker_base`` (the :class:`~rectorch.serving.ranker.RankBase` prior added to the ranker's output).
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
    ranking: dict[str, Any] = field(default_factory=dict)
    id_offset: int = 1
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Strict JSON (non-finite report values become ``null``), keys sorted."""
        return json.dumps(_finite(asdict(self)), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: Any, where: str = MANIFEST_FILE) -> "Manifest":
        """Parse and check a manifest dict; raises :class:`BundleError` naming ``where`` and the offending key."""
        _validate(raw, where)
        values = dict(raw)
        values["inputs"] = [InputSpec(**spec) for spec in raw["inputs"]]
        return cls(**values)

    def check(self, where: str = MANIFEST_FILE) -> None:
        """Types, bounds and consistency of every field, as a reader would check them."""
        _validate(json.loads(self.to_json()), where)

    def recommend_settings(self, overrides: Mapping[str, Any] | None = None) -> RecommendSettings:
        """The recorded stage settings (the defaults where none are recorded), then ``overrides``.

        Raises:
            BundleError: the recorded settings are malformed (unknown key, bad value).
            ValueError: an override is (unknown key, bad value).
        """
        recorded = _recorded_settings(self.serving, MANIFEST_FILE)
        return recommend_settings(recorded, overrides)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


_OPTIONAL = {"validation", "quantization", "source", "versions", "serving", "ranking", "id_offset"}
_REQUIRED = {f.name for f in fields(Manifest) if f.name not in _OPTIONAL}
_KNOWN = {f.name for f in fields(Manifest)}
_SPEC_KEYS = {f.name for f in fields(InputSpec)}


def _fail(where: str, key: str, rule: str, value: Any) -> NoReturn:
    raise BundleError(f"{where}: key {key!r} must be {rule}, got {show(value)}")


def _int(where: str, key: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        _fail(where, key, f"an integer in [{low}, {high}]", value)
    return value


def _str(where: str, key: str, value: Any, limit: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > limit:
        _fail(where, key, f"a string of at most {limit} characters", value)
    return value


def _file_name(where: str, key: str, value: Any) -> str:
    """A plain file name inside the bundle: no directory part, no leading dot, not the manifest itself."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (MANIFEST_FILE, MANIFEST_SHA256_FILE):
        _fail(where, key, "a plain file name inside the bundle ([A-Za-z0-9._-], no path)", value)
    return value


def _mapping(where: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        _fail(where, key, "a JSON object", value)
    return value


def _validate(raw: Any, where: str) -> None:
    """Every manifest key: present, of its type and inside its bounds; cross-references consistent."""
    if not isinstance(raw, dict):
        raise BundleError(f"{where} must hold a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BundleError(f"{where}: unsupported schema_version {show(version)}, expected {SCHEMA_VERSION}")
    missing = sorted(_REQUIRED - raw.keys())
    if missing:
        raise BundleError(f"{where} is missing the keys {missing}")
    unknown = sorted(raw.keys() - _KNOWN)
    if unknown:
        raise BundleError(f"{where}: unknown key {show(unknown[0])}; known: {', '.join(sorted(_KNOWN))}")
    _str(where, "family", raw["family"], 256)
    _str(where, "precision_reason", raw["precision_reason"])
    num_items = _int(where, "num_items", raw["num_items"], 1, MAX_ITEMS)
    _int(where, "dim", raw["dim"], 1, MAX_DIM)
    _int(where, "id_offset", raw.get("id_offset", 1), 0, min(MAX_ID_OFFSET, MAX_ITEMS - num_items))
    if raw["metric"] not in METRICS:
        _fail(where, "metric", f"one of {list(METRICS)}", raw["metric"])
    files = _mapping(where, "files", raw["files"])
    for name, digest in files.items():
        _file_name(where, "files", name)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            _fail(where, f"files.{name}", "a lowercase hex sha256", digest)
    encoders = _mapping(where, "encoders", raw["encoders"])
    if not encoders:
        _fail(where, "encoders", "a non-empty mapping of precision → ONNX file", encoders)
    for precision, name in encoders.items():
        if precision not in PRECISIONS:
            _fail(where, "encoders", f"keyed by precisions {list(PRECISIONS)}", precision)
        _file_name(where, f"encoders.{precision}", name)
    if not isinstance(raw["precision"], str) or raw["precision"] not in encoders:
        _fail(where, "precision", f"one of its encoders {sorted(encoders)}", raw["precision"])
    _file_name(where, "item_ids", raw["item_ids"])
    _file_name(where, "items", raw["items"])
    _check_categories(where, raw["categories"])
    _check_index(where, _mapping(where, "index", raw["index"]))
    _check_inputs(where, raw["inputs"])
    for key in ("validation", "quantization", "source", "versions", "serving"):
        _mapping(where, key, raw.get(key, {}))
    for library, version in raw.get("versions", {}).items():
        _str(where, f"versions.{library}", version, 256)
    referenced = {*encoders.values(), raw["item_ids"], raw["items"], raw["index"]["file"]}
    ranking = _mapping(where, "ranking", raw.get("ranking", {}))
    if ranking:
        referenced |= _check_ranking(where, ranking)
    unlisted = sorted(referenced - files.keys())
    if unlisted:
        raise BundleError(f"{where}: key 'files' has no sha256 for the referenced files {unlisted}")
    _recorded_settings(raw.get("serving", {}), where)


CHANNEL_KINDS = ("ann", "covisit", "popular")
_RANKING_KEYS = {"channels", "features", "ranker", "stats", "last_n", "user_fields", "max_candidates"}
_RANKING_OPTIONAL = {"validation", "similarity_vectors", "ranker_base"}
_CHANNEL_KEYS = {"name", "kind", "n", "anchors"}


def _check_ranking(where: str, ranking: dict) -> set[str]:
    """The ranking section's keys and bounds; returns the files it references."""
    unknown = sorted(ranking.keys() - _RANKING_KEYS - _RANKING_OPTIONAL)
    missing = sorted(_RANKING_KEYS - ranking.keys())
    if unknown or missing:
        keys = f"{sorted(_RANKING_KEYS)} and optional {sorted(_RANKING_OPTIONAL)}"
        _fail(where, "ranking", f"an object with the keys {keys}", unknown or missing)
    if ranking.get("similarity_vectors", "none") not in ("index", "none"):
        _fail(
            where,
            "ranking.similarity_vectors",
            "'index' (the index's item vectors) or 'none'",
            ranking["similarity_vectors"],
        )
    channels = ranking["channels"]
    if not isinstance(channels, list) or not 1 <= len(channels) <= 16:
        _fail(where, "ranking.channels", "a list of 1 to 16 channels", channels)
    names = set()
    for position, channel in enumerate(channels):
        key = f"ranking.channels[{position}]"
        if not isinstance(channel, dict) or not {"name", "kind", "n"} <= channel.keys() <= _CHANNEL_KEYS:
            _fail(where, key, "an object with name, kind, n and optional anchors", channel)
        name = _str(where, f"{key}.name", channel["name"], 64)
        if not _INPUT_NAME.fullmatch(name) or name in names:
            _fail(where, f"{key}.name", "a unique channel name", name)
        names.add(name)
        if channel["kind"] not in CHANNEL_KINDS:
            _fail(where, f"{key}.kind", f"one of {list(CHANNEL_KINDS)}", channel["kind"])
        _int(where, f"{key}.n", channel["n"], 1, 100_000)
        if channel["kind"] == "covisit":
            _int(where, f"{key}.anchors", channel.get("anchors"), 1, 1000)
    if sum(c["kind"] == "ann" for c in channels) > 1:
        _fail(where, "ranking.channels", "at most one ann channel (the bundle's index)", [c["name"] for c in channels])
    features = ranking["features"]
    if not isinstance(features, list) or not 1 <= len(features) <= 4096 or len(set(features)) != len(features):
        _fail(where, "ranking.features", "a list of 1 to 4096 distinct feature names", features)
    for name in features:
        _str(where, "ranking.features", name, 256)
    fields_ = ranking["user_fields"]
    if not isinstance(fields_, list) or not all(isinstance(f, str) for f in fields_):
        _fail(where, "ranking.user_fields", "a list of user feature names", fields_)
    _int(where, "ranking.last_n", ranking["last_n"], 1, 10_000)
    _int(where, "ranking.max_candidates", ranking["max_candidates"], 1, 100_000)
    _mapping(where, "ranking.validation", ranking.get("validation", {}))
    ranker = _file_name(where, "ranking.ranker", ranking["ranker"])
    return {ranker, _file_name(where, "ranking.stats", ranking["stats"])}


def _check_categories(where: str, categories: Any) -> None:
    if not isinstance(categories, list) or not 1 <= len(categories) <= MAX_ITEMS:
        _fail(where, "categories", 'a non-empty list of names starting with "" (code 0 = unknown)', categories)
    if categories[0] != "":
        _fail(where, "categories[0]", '"" (code 0 = unknown)', categories[0])
    for code, name in enumerate(categories):
        _str(where, f"categories[{code}]", name, 1024)


def _check_index(where: str, index: dict) -> None:
    _file_name(where, "index.file", index.get("file"))
    _str(where, "index.factory", index.get("factory", ""), 256)
    params = index.get("search_params", "")
    if not isinstance(params, str) or len(params) > 256 or not _SEARCH_PARAMS.fullmatch(params):
        _fail(where, "index.search_params", "'' or comma-separated name=number pairs (nprobe=16)", params)
    _mapping(where, "index.recall", index.get("recall", {}))


def _check_inputs(where: str, inputs: Any) -> None:
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= 64:
        _fail(where, "inputs", "a list of 1 to 64 input specs", inputs)
    names = set()
    for position, spec in enumerate(inputs):
        key = f"inputs[{position}]"
        if not isinstance(spec, dict) or not {"name", "dtype", "shape"} <= spec.keys():
            _fail(where, key, "an object with name, dtype, shape and optional max_len", spec)
        if spec.keys() - _SPEC_KEYS:
            _fail(
                where, key, "an object with name, dtype, shape and optional max_len", sorted(spec.keys() - _SPEC_KEYS)
            )
        name = spec["name"]
        if not isinstance(name, str) or not _INPUT_NAME.fullmatch(name) or name in names:
            _fail(where, f"{key}.name", "a unique input name", name)
        names.add(name)
        if spec["dtype"] not in DTYPES:
            _fail(where, f"{key}.dtype", f"one of {list(DTYPES)}", spec["dtype"])
        _check_shape(where, key, name, spec["shape"], spec.get("max_len"))


def _check_shape(where: str, key: str, name: str, shape: Any, max_len: Any) -> None:
    if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or shape[0] != "batch":
        _fail(where, f"{key}.shape", 'a list starting with "batch"', shape)
    dynamic = name == "history" and len(shape) == 2 and shape[1] == "length"
    if name == "history" and len(shape) != 2:
        _fail(where, f"{key}.shape", '["batch", length or "length"] for the history', shape)
    size = 1
    for dim in shape[1:] if not dynamic else ():
        size *= _int(where, f"{key}.shape", dim, 1, MAX_INPUT_SIZE)
    if size > MAX_INPUT_SIZE:
        _fail(where, f"{key}.shape", f"at most {MAX_INPUT_SIZE} values per row", shape)
    if dynamic:
        _int(where, f"{key}.max_len", max_len, 1, MAX_INPUT_SIZE)
    elif max_len is not None:
        _fail(where, f"{key}.max_len", 'null unless the shape is ["batch", "length"]', max_len)


def _recorded_settings(serving: Any, where: str) -> dict[str, Any]:
    if not isinstance(serving, dict):
        _fail(where, "serving", "a mapping with a 'recommend' key", serving)
    if set(serving) - {"recommend"}:
        _fail(where, "serving", "a mapping with only a 'recommend' key", sorted(set(serving) - {"recommend"}))
    recorded = serving.get("recommend") or {}
    try:
        recommend_settings(recorded)
    except ValueError as error:
        raise BundleError(f"{where}: key 'serving.recommend': {error}") from error
    return recorded


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar_text(manifest_bytes: bytes) -> str:
    """``manifest.sha256`` content: ``sha256sum`` format, so ``sha256sum -c manifest.sha256`` checks it too."""
    return f"{sha256_bytes(manifest_bytes)}  {MANIFEST_FILE}\n"


def bundle_root(bundle: str | Path) -> Path:
    """The bundle directory's real path (it may be reached through a link; its files may not)."""
    root = Path(os.path.realpath(bundle))
    if not root.is_dir():
        raise BundleError(f"{bundle} is not a bundle: {MANIFEST_FILE} not found")
    return root


def read_member(root: Path, name: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of bundle file ``name``: a regular file directly inside ``root``, never a link, at most ``limit``."""
    path = root / name
    if Path(name).name != name or name in ("", ".", "..") or Path(os.path.realpath(path)).parent != root:
        raise BundleError(f"bundle file {show(name)} leaves the bundle {root}")
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise BundleError(f"bundle file {show(name)} in {root} is a symbolic link; links are refused")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BundleError(f"bundle file {show(name)} is missing from {root}") from None
    except OSError as error:
        reason = "is a symbolic link; links are refused" if error.errno == errno.ELOOP else f"cannot be read: {error}"
        raise BundleError(f"bundle file {show(name)} in {root} {reason}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BundleError(f"bundle file {show(name)} in {root} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise BundleError(f"bundle file {show(name)} in {root} holds {info.st_size} bytes, at most {limit} allowed")
        try:
            data = handle.read(info.st_size + 1)
        except OSError as error:
            raise BundleError(f"bundle file {show(name)} in {root} cannot be read: {error}") from None
    if len(data) != info.st_size:
        raise BundleError(f"bundle file {show(name)} in {root} changed size while being read")
    return data


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"duplicate key {show(duplicate)}")
    return dict(pairs)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, where: str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity; any failure is one ``BundleError`` line."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_json_object, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise BundleError(f"{where} is not valid JSON: {show(str(error), 160)}") from None


def open_manifest(bundle: str | Path, expected_sha256: str | None = None) -> tuple[Path, Manifest, str]:
    """Read ``manifest.json`` once, check it against ``manifest.sha256`` (and ``expected_sha256``), parse it.

    Returns:
        the bundle's real directory, the manifest and the manifest's sha256.
    """
    root = bundle_root(bundle)
    if not os.path.lexists(root / MANIFEST_FILE):
        raise BundleError(f"{bundle} is not a bundle: {MANIFEST_FILE} not found")
    data = read_member(root, MANIFEST_FILE, MAX_MANIFEST_BYTES)
    digest = sha256_bytes(data)
    if not os.path.lexists(root / MANIFEST_SHA256_FILE):
        raise BundleError(f"{root / MANIFEST_SHA256_FILE} not found: the manifest's hash is unknown (re-export)")
    recorded = _SIDECAR.fullmatch(read_member(root, MANIFEST_SHA256_FILE, 4096).decode("ascii", "replace"))
    if recorded is None:
        raise BundleError(f"{root / MANIFEST_SHA256_FILE} must hold the manifest's sha256 as 64 lowercase hex digits")
    if recorded.group(1) != digest:
        raise BundleError(
            f"{root / MANIFEST_FILE} was changed after export: sha256 {digest[:12]}… != "
            f"{recorded.group(1)[:12]}… recorded in {MANIFEST_SHA256_FILE}"
        )
    if expected_sha256 is not None and digest != expected_sha256:
        raise BundleError(
            f"{root / MANIFEST_FILE} has sha256 {digest[:12]}…, not the pinned manifest_sha256 {expected_sha256[:12]}…"
        )
    where = str(root / MANIFEST_FILE)
    return root, Manifest.from_dict(parse_json(data, where), where), digest


def read_files(root: Path, manifest: Manifest) -> dict[str, bytes]:
    """Every file the manifest lists, read once and checked against its sha256: name → bytes."""
    blobs = {}
    for name, expected in manifest.files.items():
        data = read_member(root, name)
        actual = sha256_bytes(data)
        if actual != expected:
            raise BundleError(f"bundle file {name!r} is corrupt or tampered: sha256 {actual[:12]}… != {expected[:12]}…")
        blobs[name] = data
    return blobs


def read_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Load the checked ``manifest.json`` of ``bundle``; with ``verify``, also check every listed file's sha256.

    Raises:
        BundleError: missing/unparsable/changed manifest, unknown schema, bad field, missing file or hash mismatch.
    """
    root, manifest, _ = open_manifest(bundle)
    if verify:
        read_files(root, manifest)
    return manifest


def manifest_sha256(bundle: str | Path) -> str:
    """The sha256 of the bundle's checked ``manifest.json`` (what export records in MLflow and serving can pin)."""
    return open_manifest(bundle)[2]
