"""The HTTP service: FastAPI over one :class:`Recommender` (OpenAPI docs at ``/docs``).

Limits: request bodies over ``max_body_bytes`` are answered 413 without being read; ids are strings of
1 to 1024 characters without lone UTF-16 surrogates; ``k`` is a JSON integer (not a bool) up to the
settings' ``max_k``; lists and feature maps are bounded. Handlers are plain functions, so the CPU work
runs in FastAPI's thread pool and one large request does not stall the event loop. Every bad request
is answered 4xx with ``{"error": one line naming the field, "detail": ...}``; an unexpected failure is
logged with its traceback on the server and answered 500 ``{"error": "internal error"}``.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from rectorch.serving.catalog import MAX_ID_LENGTH
from rectorch.serving.manifest import show
from rectorch.serving.recommender import Recommendation, Recommender

log = logging.getLogger(__name__)

# hard caps checked while parsing; the recommender's own limits (settings) are checked after
MAX_LIST = 100_000
MAX_FEATURES = 64
MAX_ERRORS = 20


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so no string (not even a lone surrogate) can fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# strict str: pydantic refuses a lone UTF-16 surrogate (a JSON "\ud800" escape) with type string_unicode
Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Number = Annotated[float, Field(allow_inf_nan=False)]
FeatureValue = Number | Annotated[list[Number], Field(max_length=MAX_LIST)]


class RecommendRequest(BaseModel):
    """``POST /recommend`` body (strict: no type coercion, no unknown keys)."""

    model_config = ConfigDict(extra="forbid", strict=True)

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
        default=None, ge=0, le=1e11, description="unix seconds for freshness (default: server clock)"
    )


class ScoredItem(BaseModel):
    id: str
    score: float
    source: str


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    fallback: str | None = None
    unknown_items: list[str] = []


def _payload(result: Recommendation) -> dict:
    items = [
        {"id": i, "score": s, "source": src}
        for i, s, src in zip(result.items, result.scores, result.sources, strict=True)
    ]
    return {"items": items, "fallback": result.fallback, "unknown_items": result.unknown_items}


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


def create_app(recommender: Recommender, max_body_bytes: int = 1_000_000) -> FastAPI:
    """Routes: ``POST /recommend``, ``GET /items/{id}/similar``, ``GET /healthz``, ``GET /metadata``.

    Bad input (invalid JSON, wrong types, ``k`` out of range, oversized body or history, unknown filter
    or category) is answered with 4xx and a one-line ``error``; unknown item ids in ``/similar`` with 404.
    """
    app = FastAPI(
        title="rectorch",
        summary=f"{recommender.manifest.family} recommendations",
        default_response_class=SafeJSONResponse,
    )
    manifest = recommender.manifest
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ValueError, _bad_request)  # BundleError is a ValueError
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(request: RecommendRequest) -> SafeJSONResponse:
        try:
            result = recommender.recommend(**request.model_dump())
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return SafeJSONResponse(_payload(result))

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
        return summary

    return app
