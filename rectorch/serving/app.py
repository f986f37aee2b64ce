"""The HTTP service: FastAPI over one :class:`Recommender` (OpenAPI docs at ``/docs``).

Limits: request bodies over ``max_body_bytes`` are answered 413 without being read; ids are strings of
1 to 1024 characters without lone UTF-16 surrogates; ``k`` is a JSON integer (not a bool) up to the
settings' ``max_k``; lists and feature maps are bounded. Handlers are plain functions, so the CPU work
runs in FastAPI's thread pool and one large request does not stall the event loop. Every bad request
is answered 4xx with ``{"error": one line naming the field, "detail": ...}``; an unexpected failure is
logged with its traceback on the server and answered 500 ``{"error": "internal error"}``.

Sessions: ``POST /events`` appends a batch of ``{user_id, item_id, type, timestamp}`` to the session store
in one atomic write. A batch naming any item the catalog does not know is refused whole with 422 (the
unknown ids in ``detail.unknown_items``; nothing stored), as is a timestamp that is not finite unix
seconds between 1990 and one day past the server clock (milliseconds are refused); a batch longer than
``events_max_batch`` is answered 400. ``POST /recommend`` with a ``user_id`` ranks for the stored history
followed by the request's ``history`` (each item once, at its latest position; the newest
``session_max_events`` items). A store that cannot answer makes any endpoint that needs it answer 503
``{"error": "session store unavailable: ..."}``; ``/recommend`` without a ``user_id`` never touches it
unless a strategy layer is on.

Strategy layer (when given, see :mod:`rectorch.serving.strategy`): ``/recommend`` answers through an arm
chosen per segment and adds ``impression_id`` (32 hex digits), ``arm``, ``segment`` and each item's
``propensity``; it needs the store (503 when down). ``POST /feedback {"impression_id", "clicked": [item
ids], "converted": [...]}`` is taken once: 404 for an unknown or expired impression, 409 for a second
feedback, 422 for items the impression did not show (nothing counted), 503 when the store is down (nothing
counted; retry). ``GET /strategy/{segment}`` shows each arm's counters and current probability.
"""

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from rectorch.serving.catalog import MAX_ID_LENGTH
from rectorch.serving.manifest import show
from rectorch.serving.recommender import Recommendation, Recommender
from rectorch.serving.sessions import (
    Event,
    MemoryStore,
    SessionStore,
    StoreUnavailable,
    history_length,
    merge_histories,
)
from rectorch.serving.strategy import FeedbackRefused, StrategyLayer, build_arms, item_columns

log = logging.getLogger(__name__)

# hard caps checked while parsing; the recommender's own limits (settings) are checked after
MAX_LIST = 100_000
MAX_FEATURES = 64
MAX_ERRORS = 20
MAX_EVENTS = 100_000
MIN_TIMESTAMP = 631_152_000.0  # 1990-01-01
MAX_FEEDBACK = 1000
SWEEP_SECONDS = 1.0
MAX_CLOCK_SKEW = 86400.0


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so no string (not even a lone surrogate) can fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# strict str: pydantic refuses a lone UTF-16 surrogate (a JSON "\ud800" escape) with type string_unicode
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Number = Annotated[float, Field(allow_inf_nan=False)]
FeatureValue = Number | Annotated[list[Number], Field(max_length=MAX_LIST)]


def _not_ahead(timestamp: float) -> float:
    if timestamp > time.time() + MAX_CLOCK_SKEW:
        raise ValueError(
            f"timestamp lies more than {MAX_CLOCK_SKEW:.0f} s ahead of the server clock (send unix seconds)"
        )
    return timestamp


Timestamp = Annotated[float, Field(allow_inf_nan=False, ge=MIN_TIMESTAMP), AfterValidator(_not_ahead)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class EventIn(BaseModel):
    """One event of ``POST /events``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Text
    item_id: Text = Field(description="external item id (the catalog must know it)")
    type: EventType = Field(description="view, click, cart, purchase, ... (lowercase letters, digits, _)")
    timestamp: Timestamp | None = Field(default=None, description="unix seconds (default: the server clock)")


class EventsRequest(BaseModel):
    """``POST /events`` body: a batch, stored whole or not at all."""

    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class RecommendRequest(BaseModel):
    """``POST /recommend`` body (strict: no type coercion, no unknown keys)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Text | None = Field(default=None, description="rank for this user's stored events, then `history`")
    history: list[Text] = Field(default_factory=list, max_length=MAX_LIST, description="item ids, oldest first")
    user_features: dict[Text, FeatureValue] | None = Field(
        default=None, max_length=MAX_FEATURES, description="values of the encoder's non-history inputs"
    )
    k: int = Field(default=10, gt=0, description="number of items (a JSON integer, at most the server's max_k)")
    exclude: list[Text] = Field(default_factory=list, max_length=MAX_LIST, description="item ids never to return")
    filters: dict[Text, Annotated[list[Text], Field(min_length=1, max_length=MAX_LIST)]] | None = Field(
        default=None, max_length=8, description='e.g. {"category": ["Comedy"]}; a filter lists at least one value'
    )
    now: Number | None = Field(
        default=None, ge=0, le=1e11, description="unix seconds for freshness and the ranker (default: server clock)"
    )
    history_times: list[Annotated[float, Field(allow_inf_nan=False, ge=0, le=1e11)]] | None = Field(
        default=None, max_length=MAX_LIST, description="unix seconds of each history item (ranker features)"
    )
    context: dict[Text, Number] | None = Field(
        default=None, max_length=MAX_FEATURES, description='numeric request context for the ranker, e.g. {"device": 1}'
    )


class FeedbackRequest(BaseModel):
    """``POST /feedback`` body: what the user did with one answer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    impression_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] = Field(
        description="the answer's impression_id"
    )
    clicked: list[Text] = Field(default_factory=list, max_length=MAX_FEEDBACK, description="clicked item ids")
    converted: list[Text] = Field(default_factory=list, max_length=MAX_FEEDBACK, description="converted item ids")


class ScoredItem(BaseModel):
    id: str
    score: float
    source: str
    stages: dict[str, float] | None = Field(default=None, description="channel and ranker scores (ranking bundles)")
    propensity: float | None = Field(default=None, description="probability of this answer's arm (strategy layer)")


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    fallback: str | None = None
    unknown_items: list[str] = []
    impression_id: str | None = Field(default=None, description="send it back with POST /feedback")
    arm: str | None = None
    segment: str | None = None


def _payload(result: Recommendation) -> dict:
    items = [
        {"id": i, "score": s, "source": src}
        for i, s, src in zip(result.items, result.scores, result.sources, strict=True)
    ]
    for item, stages in zip(items, result.stage_scores, strict=False):
        item["stages"] = stages
    return {"items": items, "fallback": result.fallback, "unknown_items": result.unknown_items}


def _answer(recommender: Recommender, body: dict) -> Recommendation:
    try:
        return recommender.recommend(**body)
    except ValueError as error:
        raise HTTPException(status_code=400, detail=str(error)) from error


def _error(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> SafeJSONResponse:
    line = " ".join(message.split())[:500]
    return SafeJSONResponse({"error": line, "detail": line if detail is None else detail}, status, headers)


def _message(problem: dict) -> str:
    if problem["type"] == "string_unicode":
        return "Input should be a valid string: it holds a lone UTF-16 surrogate (not valid Unicode)"
    return str(problem["msg"])[:300]


def _validation_error(request: Request, error: Exception) -> SafeJSONResponse:
    """422 naming the first bad field; the client's input is never echoed back."""
    problems = [
        {"loc": [str(part)[:100] for part in problem["loc"]], "msg": _message(problem), "type": problem["type"]}
        for problem in error.errors()[:MAX_ERRORS]
    ]
    first = problems[0] if problems else {"loc": ["body"], "msg": "invalid request"}
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if (
        first["loc"] == ["body"]
        and request.method == "POST"
        and not (media == "application/json" or media.endswith("+json"))
    ):
        first = {"loc": ["body"], "msg": f"send JSON with Content-Type: application/json (got {show(media or None)})"}
    where = ".".join(first["loc"])
    return _error(422, show(where, 200).strip("'\"") + ": " + first["msg"], problems)


def _http_error(_: Request, error: Exception) -> SafeJSONResponse:
    return _error(error.status_code, str(error.detail), headers=getattr(error, "headers", None))


def _bad_request(_: Request, error: Exception) -> SafeJSONResponse:
    return _error(400, str(error))


def _store_down(_: Request, error: Exception) -> SafeJSONResponse:
    return _error(503, f"session store unavailable: {error}", headers={"Retry-After": "1"})


def _internal_error(request: Request, error: Exception) -> SafeJSONResponse:
    """500 without details; the server logs this line, and uvicorn the traceback (Starlette re-raises after)."""
    log.error("unexpected %s on %s %s", type(error).__name__, request.method, request.url.path)
    return SafeJSONResponse({"error": "internal error", "detail": "internal error"}, 500)


class BodyLimit:
    """ASGI middleware: bodies over ``limit`` bytes get 413 (a declared length before any byte is read).

    The body is buffered (at most ``limit`` bytes) and replayed to the app, so a handler never sees a
    partial body and a client streaming an endless chunked body is cut off at the limit.
    """

    def __init__(self, app: Callable, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._reject(scope, send, declared.isdigit())
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._reject(scope, send, True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: dict, send: Callable, too_large: bool) -> None:
        if too_large:
            response = _error(413, f"request body exceeds {self.limit} bytes (max_body_bytes)")
        else:
            response = _error(400, "Content-Length header is not a non-negative integer")
        await response(scope, None, send)


@asynccontextmanager
async def _sweeping(layer: StrategyLayer | None) -> AsyncIterator[None]:
    """While serving, sweep the layer's closed feedback windows every second; at shutdown, close the layer."""
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(SWEEP_SECONDS):
            try:
                layer.sweep()
            except Exception:  # the sweeper must outlive any one failure
                log.exception("strategy layer sweep failed")

    thread = threading.Thread(target=sweep, name="strategy-sweeper", daemon=True) if layer else None
    if thread is not None:
        thread.start()
    try:
        yield
    finally:
        if thread is not None:
            stop.set()
            thread.join()
            layer.close()


def create_app(
    recommender: Recommender,
    max_body_bytes: int = 1_000_000,
    store: SessionStore | None = None,
    events_max_batch: int = 1000,
    layer: StrategyLayer | None = None,
    arms: Mapping[str, Recommender] | None = None,
) -> FastAPI:
    """Routes: ``POST /recommend``, ``POST /events``, ``GET|DELETE /users/{id}/history``, ``POST /feedback``,
    ``GET /strategy/{segment}``, ``GET /items/{id}/similar``, ``GET /healthz``, ``GET /metadata``.

    Bad input (invalid JSON, wrong types, ``k`` out of range, oversized body or history, unknown filter
    or category, events for unknown items) is answered with 4xx and a one-line ``error``; unknown item ids
    in ``/similar`` with 404; a session store that is down with 503.

    Args:
        recommender: the stages over one bundle.
        max_body_bytes: larger request bodies are answered 413 unread.
        store: the session store; None = an in-process one keeping the newest items the encoder reads.
        events_max_batch: most events one ``POST /events`` may carry.
        layer: the strategy layer (its store should be ``store``); None = plain answers, no ``/feedback``.
        arms: arm name → recommender for the layer's arms; None = :func:`build_arms` over ``recommender``.
    """
    app = FastAPI(
        title="rectorch",
        summary=f"{recommender.manifest.family} recommendations",
        default_response_class=SafeJSONResponse,
        lifespan=lambda _: _sweeping(layer),
    )
    manifest = recommender.manifest
    store = store if store is not None else MemoryStore(history_length(manifest.inputs))
    if layer is not None:
        arms = dict(arms) if arms is not None else build_arms(layer.settings, recommender)
        if sorted(arms) != sorted(layer.arms):
            raise ValueError(f"create_app: arms {sorted(arms)} do not match the strategy layer's {sorted(layer.arms)}")
        columns = item_columns(arms)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ValueError, _bad_request)  # BundleError is a ValueError
    app.add_exception_handler(StoreUnavailable, _store_down)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(request: RecommendRequest) -> SafeJSONResponse:
        body = request.model_dump()
        user_id = body.pop("user_id")
        if user_id is not None:
            if body["history_times"] is not None:
                message = "history_times cannot be combined with user_id: the session store keeps the event times"
                raise HTTPException(status_code=400, detail=message)
            events = store.history(user_id)
            cap = min(store.max_events, recommender.settings.max_history)
            body["history"] = merge_histories([event.item_id for event in events], body["history"], cap)
            when = {event.item_id: event.timestamp for event in events}  # the latest event per item
            asked = time.time() if body["now"] is None else body["now"]
            body["history_times"] = [when.get(item, asked) for item in body["history"]]
        if layer is None:
            return SafeJSONResponse(_payload(_answer(recommender, body)))
        try:
            segment = layer.segment(sum(i in recommender.catalog.row_of for i in body["history"]), body["context"])
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error

        def answer(arm: str) -> Recommendation:
            return _answer(arms[arm], body)

        impression, result = layer.serve(answer, segment, user_id, body["context"], columns)
        payload = _payload(result)
        for item in payload["items"]:
            item["propensity"] = impression.propensity
        payload.update(impression_id=impression.impression_id, arm=impression.arm, segment=impression.segment)
        return SafeJSONResponse(payload)

    @app.post("/feedback")
    def feedback(request: FeedbackRequest) -> SafeJSONResponse:
        if layer is None:
            return _error(404, "no strategy layer: /feedback needs strategy.mode uniform or thompson")
        try:
            return SafeJSONResponse(layer.feedback(request.impression_id, request.clicked, request.converted))
        except FeedbackRefused as refused:
            return _error(refused.status, str(refused))

    @app.get("/strategy/{segment}")
    def strategy(segment: Annotated[Text, Path(description="new, returning, all or <field>=<value>")]) -> dict:
        if layer is None:
            raise HTTPException(status_code=404, detail="no strategy layer (strategy.mode is off)")
        counts = layer.bandit.counts(segment)
        chance = layer.bandit.probabilities(segment)
        listed = {
            arm: {"impressions": n, "clicks": c, "probability": float(p)}
            for (arm, (n, c)), p in zip(counts.items(), chance, strict=True)
        }
        return {"segment": segment, "mode": layer.bandit.mode, "control": layer.settings.control, "arms": listed}

    @app.post("/events")
    def events(request: EventsRequest) -> SafeJSONResponse:
        if len(request.events) > events_max_batch:
            message = (
                f"events holds {len(request.events)} events, at most {events_max_batch} allowed (events_max_batch)"
            )
            raise HTTPException(status_code=400, detail=message)
        unknown = list(dict.fromkeys(e.item_id for e in request.events if e.item_id not in recommender.catalog.row_of))
        if unknown:
            message = f"events: unknown item ids {show(unknown[:5], 200)}; nothing of this batch was stored"
            return _error(422, message, {"unknown_items": unknown[:100]})
        now = time.time()
        batch: dict[str, list[Event]] = {}
        for event in request.events:
            stamp = now if event.timestamp is None else event.timestamp
            batch.setdefault(event.user_id, []).append(Event(event.item_id, event.type, stamp))
        store.append_many(batch)
        return SafeJSONResponse({"stored": len(request.events), "users": len(batch)})

    @app.get("/users/{user_id:path}/history")
    def user_history(
        user_id: Annotated[Text, Path(description="user id")],
        limit: Annotated[int | None, Query(gt=0, description="newest events to return")] = None,
    ) -> SafeJSONResponse:
        listed = [asdict(event) for event in store.history(user_id, limit)]
        return SafeJSONResponse({"user_id": user_id, "events": listed})

    @app.delete("/users/{user_id:path}/history")
    def forget_user(user_id: Annotated[Text, Path(description="user id")]) -> SafeJSONResponse:
        store.forget(user_id)
        return SafeJSONResponse({"user_id": user_id, "events": []})

    @app.get("/items/{item_id:path}/similar", response_model=RecommendResponse)
    def similar(
        item_id: Annotated[Text, Path(description="external item id")],
        k: Annotated[int, Query(gt=0, description="number of items")] = 10,
    ) -> SafeJSONResponse:
        try:
            result = recommender.similar_items(item_id, k)
        except KeyError as error:
            raise HTTPException(status_code=404, detail=f"unknown item id {show(item_id)}") from error
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return SafeJSONResponse(_payload(result))

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "items": manifest.num_items}

    @app.get("/metadata")
    def metadata() -> dict:
        keys = ("family", "dim", "metric", "precision", "precision_reason", "num_items", "index", "source")
        summary = {key: getattr(manifest, key) for key in keys}
        summary["inputs"] = [asdict(spec) for spec in manifest.inputs]
        summary.update(quantization=manifest.quantization, versions=manifest.versions)
        summary["settings"] = asdict(recommender.settings)
        summary["sessions"] = {"store": store.name, "max_events": store.max_events, "ttl_seconds": store.ttl_seconds}
        if layer is not None:
            summary["strategy"] = {"mode": layer.bandit.mode, "arms": layer.arms, "control": layer.settings.control}
            summary["strategy"]["segment_by"] = layer.settings.segment_by
        return summary

    return app
