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
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STRATEGY_MODES = ("off", "uniform", "thompson")


@dataclass
class ArmSettings:
    """One arm of the strategy layer: a bundle (default: the served one) with stage-setting overrides.

    Args:
        name: the arm's name in answers, counters and logs (letters, digits, ``_.-``; at most 64).
        bundle: bundle directory; None = the served bundle (the arm is a settings variant of it).
        settings: :class:`RecommendSettings` overrides laid over that bundle's settings (``{"mmr_lambda": 0.8}``).
    """

    name: str = "???"
    bundle: str | None = None
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_types(self)
        if self.name == ArmSettings.name:
            raise ValueError("every arm needs a name (name: ...)")
        if not ARM_NAME.fullmatch(self.name):
            raise ValueError(f"arm name must be 1-64 letters, digits or _.- (not first), got {self.name!r}")
        recommend_settings(None, self.settings, f"arm {self.name!r}", "settings.")  # unknown keys fail here


@dataclass
class StrategySettings:
    """The strategy layer (:mod:`rectorch.serving.strategy`): arms, the bandit, segments, feedback, logs.

    Args:
        mode: ``off`` (plain answers), ``uniform`` (an A/B split: a user's arm is a hash of their id) or
            ``thompson`` (Beta-Bernoulli Thompson sampling on answer clicks, per segment).
        arms: :class:`ArmSettings` (or mappings of them); empty = one arm ``control``, the served bundle.
        control: the control arm; None = ``control`` when an arm has that name, else the first arm.
        name: namespace of the posterior counters in the session store (a new name starts from the prior).
        segment_by: ``history`` (``new`` below ``returning_min_history`` known history items, else
            ``returning``), ``none`` (one segment ``all``) or ``context.<field>`` (segment ``<field>=<value>``
            from the request's ``context``; an integer in ``[0, context_segments)``, ``<field>=missing`` when absent).
        returning_min_history: known history items that make a user ``returning``.
        context_segments: how many values a ``context.<field>`` segment may take.
        explore_share: share of each answer's ``k`` slots (rounded down) given to new or under-exposed items,
            set on every arm (an arm's own ``settings.explore_share`` wins); None = each arm keeps its own.
        draws: Monte Carlo draws from the posteriors that estimate Thompson sampling's arm probabilities.
        refresh_seconds: how long a segment's arm probabilities are reused before the counters are read again.
        feedback_ttl_seconds: how long after an answer ``POST /feedback`` is accepted for it.
        seed: seed of the draws and of the choices.
        log_dir: directory of the Parquet impression logs; None = no logs.
        log_rows_per_file: a log file is completed at this many rows.
        log_flush_seconds: buffered rows are written at the latest this long after the first of them.
    """

    mode: str = "off"
    arms: list = field(default_factory=list)
    control: str | None = None
    name: str = "default"
    segment_by: str = "history"
    returning_min_history: int = 5
    context_segments: int = 16
    explore_share: float | None = None
    draws: int = 2000
    refresh_seconds: float = 1.0
    feedback_ttl_seconds: float = 600.0
    seed: int = 0
    log_dir: str | None = None
    log_rows_per_file: int = 100_000
    log_flush_seconds: float = 60.0

    def __post_init__(self) -> None:
        _check_types(self)
        if self.mode not in STRATEGY_MODES:
            raise ValueError(f"strategy.mode must be one of {list(STRATEGY_MODES)}, got {self.mode!r}")
        if self.mode == "off" and self.arms:
            raise ValueError("strategy.arms are set but strategy.mode is off (set uniform or thompson)")
        arms = [
            arm if isinstance(arm, ArmSettings) else build(ArmSettings, arm, f"strategy.arms[{i}]")
            for i, arm in enumerate(self.arms)
        ]
        if self.mode != "off" and not arms:
            arms = [ArmSettings("control")]
        names = [arm.name for arm in arms]
        if len(set(names)) < len(names):
            raise ValueError(f"strategy.arms: arm names must be unique, got {names}")
        self.arms = arms
        if self.control is None and names:
            self.control = "control" if "control" in names else names[0]
        if self.control is not None and self.control not in names:
            raise ValueError(f"strategy.control {self.control!r} is not an arm; arms: {names}")
        if not ARM_NAME.fullmatch(self.name):
            raise ValueError(f"strategy.name must be 1-64 letters, digits or _.-, got {self.name!r}")
        if self.segment_by not in ("history", "none") and not re.fullmatch(r"context\.[^\s]{1,64}", self.segment_by):
            raise ValueError(f"strategy.segment_by must be history, none or context.<field>, got {self.segment_by!r}")
        if self.returning_min_history < 0 or not 0 < self.context_segments <= 1024:
            raise ValueError("strategy.returning_min_history must be >= 0 and context_segments in 1..1024")
        if self.explore_share is not None and not 0.0 <= self.explore_share <= 0.5:
            raise ValueError(f"strategy.explore_share must lie in [0, 0.5] (5-15 % is usual), got {self.explore_share}")
        if not 10 <= self.draws <= 1_000_000 or not 0 < self.refresh_seconds <= 3600:
            raise ValueError("strategy.draws must lie in 10..1000000 and refresh_seconds in (0, 3600]")
        if not 0 < self.feedback_ttl_seconds <= 30 * 86400:
            raise ValueError(f"strategy.feedback_ttl_seconds must lie in (0, 30 days], got {self.feedback_ttl_seconds}")
        if not 0 < self.log_rows_per_file <= 100_000_000 or not 0 < self.log_flush_seconds <= 86400:
            raise ValueError("strategy.log_rows_per_file must lie in 1..1e8 and log_flush_seconds in (0, 86400]")


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
        strategy: arms, Thompson sampling or a uniform split, feedback and impression logs (off by default).
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
    strategy: StrategySettings = field(default_factory=StrategySettings)

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
