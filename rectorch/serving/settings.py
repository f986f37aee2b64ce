"""Typed serving settings, the one source of serving defaults, and the layering every entry point shares.

A bundle records the :class:`RecommendSettings` it was exported with (``manifest.serving``);
``Recommender.from_bundle`` and ``rectorch-serve`` both start from those (these defaults for bundles that
record none), then apply explicit overrides. Unknown keys and ill-typed values raise ``ValueError`` naming them.
"""

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class RecommendSettings:
    """Stage knobs of :class:`~rectorch.serving.recommender.Recommender`.

    Args:
        candidates: rows retrieved from the index per request (stage 1).
        popular_candidates: most popular rows merged into the candidates (0 = no popularity channel).
        exclude_seen: drop the request's history from the results (stage 2).
        mmr_lambda: MMR trade-off, 1.0 = pure relevance, lower = more diverse (stage 3).
        diversity: ``vectors`` (cosine of item vectors) or ``categories`` (same category = similar).
        freshness_weight: relevance bonus for a brand-new item, halving every ``freshness_half_life_days``.
        freshness_half_life_days: age at which the freshness bonus halves.
        explore_share: share of the ``k`` slots given to new or under-exposed items (rounded down).
        explore_quantile: items at or below this popularity quantile count as under-exposed.
        new_item_days: items created within this many days before ``now`` count as new.
        max_k: largest ``k`` a request may ask for.
        max_history: longest history a request may send.
        seed: seed of the exploration sampler.
    """

    candidates: int = 200
    popular_candidates: int = 0
    exclude_seen: bool = True
    mmr_lambda: float = 1.0
    diversity: str = "vectors"
    freshness_weight: float = 0.0
    freshness_half_life_days: float = 30.0
    explore_share: float = 0.0
    explore_quantile: float = 0.2
    new_item_days: float = 30.0
    max_k: int = 1000
    max_history: int = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        _check_types(self)
        if self.candidates <= 0 or self.popular_candidates < 0:
            raise ValueError("candidates must be positive and popular_candidates non-negative")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must lie in [0, 1], got {self.mmr_lambda}")
        if not 0.0 <= self.explore_share < 1.0:
            raise ValueError(f"explore_share must lie in [0, 1), got {self.explore_share}")
        if self.diversity not in ("vectors", "categories"):
            raise ValueError(f"diversity must be 'vectors' or 'categories', got {self.diversity!r}")
        if self.max_k <= 0 or self.max_history <= 0:
            raise ValueError("max_k and max_history must be positive")


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass
class ServeSettings:
    """``rectorch-serve`` settings.

    Args:
        bundle: bundle directory.
        host: interface to bind (loopback by default).
        port: TCP port.
        precision: encoder to serve (``fp32``/``int8``); ``None`` = the manifest's choice.
        threads: onnxruntime and FAISS threads per process.
        log_level: uvicorn log level.
        max_body_bytes: largest request body accepted; a longer one is answered 413 without being read.
        manifest_sha256: pin: refuse a bundle whose ``manifest.json`` has another sha256 (export logs the
            value as the MLflow tag ``bundle.manifest_sha256``); None = trust the bundle's own sidecar.
        session_store: where ``POST /events`` keeps per-user histories: ``memory://`` (in-process, bounded
            LRU; ``?max_users=N``), ``sqlite:///abs/path.db`` (survives restarts) or ``redis://host:port/db``
            (``?prefix=rectorch``); see :mod:`rectorch.serving.sessions`.
        session_ttl_seconds: a user's history is forgotten this long after their last event.
        session_max_events: events kept per user; None = the newest items the encoder reads (its history length).
        events_max_batch: most events one ``POST /events`` may carry.
        recommend: stage knobs (the bundle's recorded ones unless overridden).
    """

    bundle: str = "???"
    host: str = "127.0.0.1"
    port: int = 8000
    precision: str | None = None
    threads: int = 1
    log_level: str = "warning"
    max_body_bytes: int = 1_000_000
    manifest_sha256: str | None = None
    session_store: str = "memory://"
    session_ttl_seconds: float = 7 * 86400.0
    session_max_events: int | None = None
    events_max_batch: int = 1000
    recommend: RecommendSettings = field(default_factory=RecommendSettings)

    def __post_init__(self) -> None:
        _check_types(self)
        if not 0 < self.port < 65536 or not 0 < self.threads <= 256:
            raise ValueError(f"port must lie in 1..65535 and threads in 1..256, got {self.port} and {self.threads}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {list(LOG_LEVELS)}, got {self.log_level!r}")
        if not 1024 <= self.max_body_bytes <= 1 << 30:
            raise ValueError(f"max_body_bytes must lie in [1024, {1 << 30}], got {self.max_body_bytes}")
        if self.manifest_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.manifest_sha256):
            raise ValueError(f"manifest_sha256 must be 64 lowercase hex digits, got {self.manifest_sha256!r}")
        if not re.match(r"(memory|sqlite|redis|rediss)://", self.session_store):
            raise ValueError(
                f"session_store must be memory://, sqlite:///abs/path.db or redis://..., got {self.session_store!r}"
            )
        if not 0 < self.session_ttl_seconds <= 10 * 365 * 86400:
            raise ValueError(f"session_ttl_seconds must lie in (0, 10 years], got {self.session_ttl_seconds}")
        if self.session_max_events is not None and not 0 < self.session_max_events <= 100_000:
            raise ValueError(f"session_max_events must lie in 1..100000 (or null), got {self.session_max_events}")
        if not 0 < self.events_max_batch <= 100_000:
            raise ValueError(f"events_max_batch must lie in 1..100000, got {self.events_max_batch}")


def _accepts(kind: Any, value: Any) -> bool:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return any(_accepts(option, value) for option in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_types(settings: Any) -> None:
    """Each field holds its annotated type (an int is accepted for a float and stored as one)."""
    hints = typing.get_type_hints(type(settings))
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if not _accepts(hints[item.name], value):
            kind = getattr(hints[item.name], "__name__", str(hints[item.name]))
            raise ValueError(f"setting {item.name!r} must be {kind}, got {value!r}")
        if hints[item.name] is float:
            setattr(settings, item.name, float(value))


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = merge(merged[key], value)
        merged[key] = value
    return merged


def build(cls: type, tree: Mapping[str, Any], where: str, prefix: str = "") -> Any:
    """A settings dataclass from a plain tree; unknown keys or bad values raise ``ValueError`` naming them.

    Args:
        cls: ``RecommendSettings`` or ``ServeSettings``.
        tree: field name → value; nested dataclass fields take a mapping (or an instance).
        where: where the values came from, for messages (``overrides``, a file name).
        prefix: dotted path of ``tree`` inside the full settings (``recommend.``), for messages.
    """
    if not isinstance(tree, Mapping):
        raise ValueError(f"{where}: '{prefix.rstrip('.') or 'settings'}' must be a mapping of settings, got {tree!r}")
    known = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - known)
    if unknown:
        raise ValueError(f"{where}: unknown setting '{prefix}{unknown[0]}'; known: {', '.join(sorted(known))}")
    values = dict(tree)
    hints = typing.get_type_hints(cls)
    for name, value in tree.items():
        if dataclasses.is_dataclass(hints[name]) and not isinstance(value, hints[name]):
            values[name] = build(hints[name], value, where, f"{prefix}{name}.")
    try:
        return cls(**values)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error


def recommend_settings(
    recorded: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    where: str = "overrides",
    prefix: str = "",
) -> RecommendSettings:
    """The defaults, then a bundle's ``recorded`` settings, then explicit ``overrides`` (each may be partial)."""
    base = dataclasses.asdict(build(RecommendSettings, recorded or {}, "the bundle's recorded settings"))
    if not isinstance(overrides or {}, Mapping):
        raise ValueError(f"{where}: '{prefix.rstrip('.') or 'settings'}' must be a mapping of settings")
    return build(RecommendSettings, merge(base, overrides or {}), where, prefix)


def serve_settings(recorded: Mapping[str, Any] | None, tree: Mapping[str, Any], where: str) -> ServeSettings:
    """``ServeSettings`` from ``tree``; its ``recommend`` starts from the bundle's ``recorded`` settings."""
    tree = dict(tree)
    recommend = recommend_settings(recorded, tree.pop("recommend", None), where, "recommend.")
    return build(ServeSettings, {**tree, "recommend": recommend}, where)


def parse_overrides(arguments: Sequence[str]) -> dict[str, Any]:
    """``key=value`` / ``recommend.key=value`` arguments (YAML values, optional ``serve.`` prefix) → a tree."""
    tree: dict[str, Any] = {}
    for argument in arguments:
        key, sep, raw = argument.partition("=")
        if not sep or not key:
            raise ValueError(f"arguments are key=value overrides, got {argument!r}")
        *parents, leaf = key.removeprefix("serve.").split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {argument!r}: {parent!r} is not a group of settings")
        try:
            node[leaf] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as error:
            raise ValueError(f"override {argument!r}: value is not valid YAML ({error})") from error
    return tree


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A YAML file of settings laid out like :class:`ServeSettings` (``recommend:`` holds the stage knobs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"settings file {path} not found")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"settings file {path} is not valid YAML: {error}") from error
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ValueError(f"settings file {path} must hold a mapping of settings, got {type(tree).__name__}")
    return tree
