"""The HTTP service: FastAPI over one :class:`Recommender` (OpenAPI docs at ``/docs``)."""

from dataclasses import asdict
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rectorch.serving.recommender import Recommendation, Recommender

# hard caps before any parsing work; the recommender's own limits (settings) are checked after
MAX_LIST = 100_000


class RecommendRequest(BaseModel):
    """``POST /recommend`` body."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    history: list[str] = Field(default_factory=list, max_length=MAX_LIST, description="item ids, oldest first")
    user_features: dict[str, float | int | list[float] | list[int]] | None = Field(
        default=None, description="values of the encoder's non-history inputs"
    )
    k: int = Field(default=10, gt=0, description="number of items")
    exclude: list[str] = Field(default_factory=list, max_length=MAX_LIST, description="item ids never to return")
    filters: dict[str, list[str]] | None = Field(default=None, description='e.g. {"category": ["Comedy"]}')
    now: float | None = Field(default=None, description="unix seconds for freshness (default: server clock)")


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


def create_app(recommender: Recommender) -> FastAPI:
    """Routes: ``POST /recommend``, ``GET /items/{id}/similar``, ``GET /healthz``, ``GET /metadata``.

    Bad input (invalid JSON, wrong types, ``k`` out of range, oversized history, unknown filter or
    category) is answered with 4xx and a message; unknown item ids in ``/similar`` with 404.
    """
    app = FastAPI(title="rectorch", summary=f"{recommender.manifest.family} recommendations")
    manifest = recommender.manifest

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(request: RecommendRequest) -> JSONResponse:
        try:
            result = recommender.recommend(**request.model_dump())
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return JSONResponse(_payload(result))

    @app.get("/items/{item_id:path}/similar", response_model=RecommendResponse)
    async def similar(item_id: str, k: Annotated[int, Query(gt=0)] = 10) -> JSONResponse:
        try:
            result = recommender.similar_items(item_id, k)
        except KeyError as error:
            raise HTTPException(status_code=404, detail=f"unknown item id {item_id!r}") from error
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from error
        return JSONResponse(_payload(result))

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "items": manifest.num_items}

    @app.get("/metadata")
    async def metadata() -> dict:
        keys = ("family", "dim", "metric", "precision", "precision_reason", "num_items", "index", "source")
        summary = {key: getattr(manifest, key) for key in keys}
        summary["inputs"] = [asdict(spec) for spec in manifest.inputs]
        summary.update(quantization=manifest.quantization, versions=manifest.versions)
        summary["settings"] = asdict(recommender.settings)
        return summary

    return app
