"""The strategy layer: arms, Thompson sampling per segment, impressions with propensities, and feedback.

**Arms** are named recommenders: other bundles, or settings variants of the served bundle
(:class:`~rectorch.serving.settings.ArmSettings`). **Segments** split the traffic so each learns its own
best arm: ``new`` / ``returning`` users by the number of known history items, or a request context field
(:func:`segment_of`).

**The bandit** (:class:`Bandit`) is Beta-Bernoulli Thompson sampling. The unit is an *answer*: each
answer adds 1 to its (segment, arm) impressions when it is served, and 1 to its clicks when feedback
reports any of its items clicked, so an arm's posterior is Beta(1 + clicks, 1 + impressions - clicks).
Counters live in the session store (``incr``), so every server process learns from every answer. Each
segment's arm probabilities are estimated from ``draws`` joint posterior draws (the share of draws each
arm wins) and reused for ``refresh_seconds``; the arm is then drawn with exactly those probabilities, so
the logged propensity is the true probability of the logged choice (within a refresh window the policy is
Thompson sampling with the posterior frozen at the last read). ``uniform`` is an A/B split: a user's arm
is a hash of their id (anonymous answers draw one), propensity exactly 1 / arms. Why not MABWiser: its
state is a Python object in one process, while these counters must be shared by processes through Redis,
and its Thompson sampling gives no propensity for the arm it picks.

**Impressions.** Every answer gets a random 128-bit ``impression_id`` and a record stored once
(``put_once``) for two feedback windows. ``POST /feedback`` takes it once (``take``): it must come within
``feedback_ttl_seconds``; a second feedback answers 409 (a short-lived ``done`` marker tells it from an
unknown or expired id, 404); clicked or converted items that were not shown answer 422 and leave the
record in place. Rows reach the impression log at feedback time; an answer without feedback is logged
unclicked when its window closes (:meth:`StrategyLayer.sweep`, run by the server every second) or when
its process shuts down (:meth:`StrategyLayer.close`; a later feedback for it answers 404). Each process
keeps the ids of its open answers in memory (about 100 bytes each, rate x window), and the store holds
each answer's record and marker for two windows: size ``memory://?max_records=`` above 2 x rate x 2 x
``feedback_ttl_seconds``, or the oldest records are evicted (their feedback answers 404). A store that
cannot answer raises ``StoreUnavailable`` (503) after undoing what this call wrote, so a retry counts once;
if even the undo fails, the feedback is written to the log without its posterior update.
"""

import hashlib
import heapq
import json
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rectorch.serving.impression_log import ImpressionLog, impression_rows
from rectorch.serving.manifest import show
from rectorch.serving.recommender import Recommendation, Recommender
from rectorch.serving.sessions import SessionStore, StoreUnavailable
from rectorch.serving.settings import StrategySettings, recommend_settings

MODES = ("uniform", "thompson")


def segment_of(settings: StrategySettings, known_history: int, context: Mapping[str, float] | None = None) -> str:
    """The segment of a request: ``new``/``returning``, ``all``, or ``<field>=<value>`` (see ``segment_by``)."""
    if settings.segment_by == "none":
        return "all"
    if settings.segment_by == "history":
        return "returning" if known_history >= settings.returning_min_history else "new"
    name = settings.segment_by.removeprefix("context.")
    value = (context or {}).get(name)
    if value is None:
        return f"{name}=missing"
    if value != int(value) or not 0 <= value < settings.context_segments:
        raise ValueError(
            f"context field {show(name)} segments the traffic: it must be an integer in "
            f"[0, {settings.context_segments}), got {show(value)}"
        )
    return f"{name}={int(value)}"


class Bandit:
    """Thompson sampling or a uniform split over named arms, per segment (see the module docstring).

    Args:
        arms: arm names (order fixes the probability vectors).
        store: holds the counters: key ``strategy:{name}:{segment}``, fields ``{arm}:impressions`` and ``{arm}:clicks``.
        mode: ``thompson`` or ``uniform``.
        name: the counters' namespace.
        draws: Monte Carlo draws per probability estimate.
        refresh_seconds: how long a segment's probabilities are reused.
        seed: seeds the draws and the choices.
        clock: unix seconds now (injectable for tests and replays).
    """

    def __init__(
        self,
        arms: Sequence[str],
        store: SessionStore,
        mode: str = "thompson",
        name: str = "default",
        draws: int = 2000,
        refresh_seconds: float = 1.0,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"bandit mode must be one of {list(MODES)}, got {mode!r}")
        if not arms or len(set(arms)) < len(arms):
            raise ValueError(f"a bandit needs distinct arm names, got {list(arms)}")
        self.arms, self.store, self.mode, self.name = list(arms), store, mode, name
        self.draws, self.refresh_seconds, self.seed, self.clock = draws, refresh_seconds, seed, clock
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, np.ndarray]] = {}

    def _key(self, segment: str) -> str:
        return f"strategy:{self.name}:{segment}"

    def counts(self, segment: str) -> dict[str, tuple[float, float]]:
        """Arm → (impressions, clicks) in ``segment``, read from the store."""
        counters = self.store.counts(self._key(segment))
        return {a: (counters.get(f"{a}:impressions", 0.0), counters.get(f"{a}:clicks", 0.0)) for a in self.arms}

    def probabilities(self, segment: str) -> np.ndarray:
        """Each arm's probability of being chosen in ``segment`` now (sums to 1; cached ``refresh_seconds``)."""
        if self.mode == "uniform":
            return np.full(len(self.arms), 1.0 / len(self.arms))
        now = self.clock()
        with self._lock:
            cached = self._cache.get(segment)
            if cached is not None and cached[0] > now:
                return cached[1]
        counts = np.asarray(list(self.counts(segment).values()), np.float64).reshape(-1, 2)
        clicks = np.clip(counts[:, 1], 0.0, None)
        misses = np.clip(counts[:, 0] - clicks, 0.0, None)
        with self._lock:
            samples = self._rng.beta(1.0 + clicks, 1.0 + misses, size=(self.draws, len(self.arms)))
            wins = np.bincount(samples.argmax(axis=1), minlength=len(self.arms))
            probabilities = wins / self.draws
            self._cache[segment] = (now + self.refresh_seconds, probabilities)
        return probabilities

    def choose(self, segment: str, user_id: str | None = None) -> tuple[str, float]:
        """An arm for one answer and its propensity (the probability this choice had)."""
        if self.mode == "uniform" and user_id is not None:
            digest = hashlib.sha256(f"{self.name}\0{self.seed}\0{user_id}".encode()).digest()
            return self.arms[int.from_bytes(digest[:8], "big") % len(self.arms)], 1.0 / len(self.arms)
        probabilities = self.probabilities(segment)
        with self._lock:
            index = int(self._rng.choice(len(self.arms), p=probabilities))
        return self.arms[index], float(probabilities[index])

    def record_impression(self, segment: str, arm: str) -> None:
        self.store.incr(self._key(segment), f"{arm}:impressions", 1.0)

    def record_click(self, segment: str, arm: str) -> None:
        self.store.incr(self._key(segment), f"{arm}:clicks", 1.0)


class FeedbackRefused(Exception):
    """A feedback the layer cannot take: ``status`` 404 (unknown or expired), 409 (given twice) or 422."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Impression:
    """What one answer through the strategy layer was: its id, arm, segment and propensity."""

    impression_id: str
    user_id: str
    arm: str
    segment: str
    propensity: float
    items: list[str]
    timestamp: float


ItemColumns = Callable[[str, list[str]], tuple[list[str], list[float]]]


class StrategyLayer:
    """Serves answers through a :class:`Bandit`, keeps their records, takes feedback, writes the log.

    Args:
        settings: segments, control and feedback window (the arms are the bandit's).
        bandit: chooses the arm and keeps the posteriors.
        store: holds the impression records and ``done`` markers (usually the bandit's store).
        log: the impression log; None = no log.
        clock: unix seconds now.
    """

    def __init__(
        self,
        settings: StrategySettings,
        bandit: Bandit,
        store: SessionStore,
        log: ImpressionLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.bandit, self.store, self.log, self.clock = settings, bandit, store, log, clock
        self.feedback_ttl = settings.feedback_ttl_seconds
        self._pending: list[tuple[float, str]] = []  # (deadline, impression id) of this process's answers
        self._lock = threading.Lock()

    @property
    def arms(self) -> list[str]:
        return self.bandit.arms

    def segment(self, known_history: int, context: Mapping[str, float] | None = None) -> str:
        """The segment of a request (:func:`segment_of` under this layer's settings)."""
        return segment_of(self.settings, known_history, context)

    def serve(
        self,
        answer: Callable[[str], Recommendation],
        segment: str,
        user_id: str | None = None,
        context: Mapping[str, float] | None = None,
        item_columns: ItemColumns | None = None,
    ) -> tuple[Impression, Recommendation]:
        """Choose an arm, get its answer (``answer(arm)``), store the impression record, count the impression.

        Args:
            answer: the arm's recommendation for this request.
            segment: the request's segment (:func:`segment_of`).
            user_id: the user (None = anonymous: logged as ``anon:<impression_id>``).
            context: the request context, kept in the log.
            item_columns: ``(arm, items) -> (categories, popularity)`` for the log; None = unknown.
        """
        arm, propensity = self.bandit.choose(segment, user_id)
        result = answer(arm)
        impression_id, now = secrets.token_hex(16), self.clock()
        categories, popularity = [""] * len(result.items), [math.nan] * len(result.items)
        if item_columns is not None:
            categories, popularity = item_columns(arm, result.items)
        record = {
            "user": user_id if user_id is not None else f"anon:{impression_id}",
            "arm": arm,
            "segment": segment,
            "propensity": propensity,
            "items": result.items,
            "scores": result.scores,
            "sources": result.sources,
            "categories": categories,
            "popularity": popularity,
            "time": now,
            "deadline": now + self.feedback_ttl,
            "context": dict(context or {}),
        }
        if not self.store.put_once(self._record_key(impression_id), json.dumps(record), 2 * self.feedback_ttl):
            raise RuntimeError("impression id collision")  # 128 random bits: never in practice
        try:
            self.bandit.record_impression(segment, arm)
        except StoreUnavailable:
            self._quietly(lambda: self.store.take(self._record_key(impression_id)))
            raise
        with self._lock:
            heapq.heappush(self._pending, (record["deadline"], impression_id))
        impression = Impression(impression_id, record["user"], arm, segment, propensity, result.items, now)
        return impression, result

    def feedback(self, impression_id: str, clicked: Sequence[str] = (), converted: Sequence[str] = ()) -> dict:
        """Take the impression once, count a click when any shown item was clicked, log its rows."""
        raw = self.store.take(self._record_key(impression_id))
        if raw is None:
            self._refuse_missing(impression_id)
        record, now = json.loads(raw), self.clock()
        shown = set(record["items"])
        unknown = list(dict.fromkeys(i for i in (*clicked, *converted) if i not in shown))
        if unknown:
            self._restore(impression_id, raw, record, now)
            raise FeedbackRefused(422, f"items {show(unknown[:5], 200)} were not shown in impression {impression_id}")
        if now > record["deadline"]:
            self._expire(impression_id, record)
            raise FeedbackRefused(404, f"impression {impression_id} has expired (feedback_ttl_seconds)")
        reward = bool(clicked)
        done = self._done_key(impression_id)
        try:
            self.store.put_once(done, "feedback", self._done_ttl)
            try:
                if reward:
                    self.bandit.record_click(record["segment"], record["arm"])
            except StoreUnavailable:
                self._quietly(lambda: self.store.take(done))
                raise
        except StoreUnavailable:
            if not self._restore(impression_id, raw, record, now):
                self._log(impression_id, record, clicked, converted, now)
            raise
        self._log(impression_id, record, clicked, converted, now)
        summary = {"impression_id": impression_id, "arm": record["arm"], "segment": record["segment"]}
        return {**summary, "clicked": len(set(clicked)), "converted": len(set(converted)), "reward": int(reward)}

    def sweep(self, everything: bool = False) -> int:
        """Log this process's answers whose window closed (all of them with ``everything``) unclicked; returns how many.

        Answers whose feedback came (here or in another process) are skipped; a store that cannot answer
        leaves the rest for the next sweep.
        """
        now, logged = self.clock(), 0
        while True:
            with self._lock:
                if not self._pending or (not everything and self._pending[0][0] > now):
                    break
                deadline, impression_id = heapq.heappop(self._pending)
            try:
                raw = self.store.take(self._record_key(impression_id))
                if raw is not None:
                    self._expire(impression_id, json.loads(raw))
                    logged += 1
            except StoreUnavailable:
                with self._lock:
                    heapq.heappush(self._pending, (deadline, impression_id))
                break
        if self.log is not None:
            self.log.flush_due()
        return logged

    def close(self) -> None:
        """Log every pending answer unclicked and write the log's buffer."""
        self.sweep(everything=True)
        if self.log is not None:
            self.log.close()

    def _record_key(self, impression_id: str) -> str:
        return f"impression:{impression_id}"

    def _done_key(self, impression_id: str) -> str:
        return f"impression-done:{impression_id}"

    @property
    def _done_ttl(self) -> float:
        """A ``done`` marker outlives the record it replaces (two feedback windows after the answer)."""
        return 2 * self.feedback_ttl

    def _refuse_missing(self, impression_id: str) -> None:
        marker = self.store.take(self._done_key(impression_id))
        if marker is None:
            raise FeedbackRefused(404, f"unknown or expired impression_id {impression_id}")
        self._quietly(lambda: self.store.put_once(self._done_key(impression_id), marker, self._done_ttl))
        if marker == "feedback":
            raise FeedbackRefused(409, f"impression {impression_id} already has its feedback")
        raise FeedbackRefused(404, f"impression {impression_id} has expired (feedback_ttl_seconds)")

    def _restore(self, impression_id: str, raw: str, record: dict, now: float) -> bool:
        """Put a taken record back for the rest of its life; False when the store refused."""
        left = max(record["time"] + 2 * self.feedback_ttl - now, 1.0)
        return self._quietly(lambda: self.store.put_once(self._record_key(impression_id), raw, left))

    def _expire(self, impression_id: str, record: dict) -> None:
        self._log(impression_id, record, (), (), None)
        self._quietly(lambda: self.store.put_once(self._done_key(impression_id), "expired", self._done_ttl))

    def _log(self, impression_id: str, record: dict, clicked, converted, feedback_time: float | None) -> None:
        if self.log is not None:
            self.log.append(impression_rows(impression_id, record, clicked, converted, feedback_time))

    @staticmethod
    def _quietly(work: Callable[[], Any]) -> bool:
        """Run a best-effort store call; False when the store could not answer."""
        try:
            work()
            return True
        except StoreUnavailable:
            return False


def build_arms(
    settings: StrategySettings,
    served: Recommender,
    precision: str | None = None,
    threads: int = 1,
) -> dict[str, Recommender]:
    """Arm name → recommender: settings variants share the served bundle's encoder, index and catalog.

    An arm's settings are its bundle's (the served bundle's: as served), then ``explore_share`` when
    set, then the arm's own overrides.
    """
    arms = {}
    for arm in settings.arms:
        overrides = dict(arm.settings)
        if settings.explore_share is not None:
            overrides = {"explore_share": settings.explore_share, **overrides}
        where = f"strategy arm {arm.name!r}"
        if arm.bundle is None:
            tuned = recommend_settings(asdict(served.settings), overrides, where, "settings.")
            arms[arm.name] = Recommender(
                served.manifest, served.encoder, served.index, served.catalog, tuned, served.ranking
            )
        else:
            arms[arm.name] = Recommender.from_bundle(arm.bundle, overrides, precision, threads)
    return arms


def item_columns(arms: Mapping[str, Recommender]) -> ItemColumns:
    """``(arm, items) -> (categories, training popularity)`` from each arm's catalog, for the impression log."""

    def columns(arm: str, items: list[str]) -> tuple[list[str], list[float]]:
        catalog = arms[arm].catalog
        rows = [catalog.row_of[item] for item in items]
        return [catalog.categories[catalog.category[r]] for r in rows], [float(catalog.popularity[r]) for r in rows]

    return columns


def build_layer(
    settings: StrategySettings, store: SessionStore, clock: Callable[[], float] = time.time
) -> StrategyLayer:
    """The layer ``settings`` describe, over ``store`` (its impression log when ``log_dir`` is set)."""
    if settings.mode == "off":
        raise ValueError("strategy.mode is off: there is no strategy layer to build")
    bandit = Bandit(
        [arm.name for arm in settings.arms],
        store,
        settings.mode,
        settings.name,
        settings.draws,
        settings.refresh_seconds,
        settings.seed,
        clock,
    )
    log = None
    if settings.log_dir is not None:
        log = ImpressionLog(settings.log_dir, settings.log_rows_per_file, settings.log_flush_seconds, clock)
    return StrategyLayer(settings, bandit, store, log, clock)
