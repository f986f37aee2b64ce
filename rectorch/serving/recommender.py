"""``Recommender``: retrieve → filter → re-rank → fallback, from one verified bundle."""

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rectorch.serving import stages
from rectorch.serving.catalog import Catalog
from rectorch.serving.encoder import QueryEncoder
from rectorch.serving.index import ItemIndex
from rectorch.serving.manifest import BundleError, Manifest, open_manifest, read_files, show
from rectorch.serving.settings import RecommendSettings


@dataclass
class Recommendation:
    """A ranked answer: ``items[i]`` scored ``scores[i]`` came from ``sources[i]`` (``ann``, ``popular``, ``explore``).

    ``fallback`` names why popularity answered (``empty_history``), and ``unknown_items`` lists
    history ids the catalog does not know (ignored).
    """

    items: list[str]
    scores: list[float]
    sources: list[str]
    fallback: str | None = None
    unknown_items: list[str] = field(default_factory=list)


@dataclass
class _Request:
    history: np.ndarray
    features: Mapping[str, Any] | None
    k: int
    blocked: np.ndarray
    categories: np.ndarray | None
    now: float
    unknown: list[str]
    encode: bool


class Recommender:
    """Multi-stage recommender over one bundle; build it with :meth:`from_bundle`.

    Args:
        manifest: the verified manifest.
        encoder: the ONNX query encoder.
        index: the FAISS item index.
        catalog: item ids and metadata.
        settings: stage knobs.
    """

    def __init__(
        self, manifest: Manifest, encoder: QueryEncoder, index: ItemIndex, catalog: Catalog, settings: RecommendSettings
    ) -> None:
        if index.size != len(catalog) or index.dim != manifest.dim:
            raise BundleError(f"index holds {index.size}×{index.dim}, manifest says {len(catalog)}×{manifest.dim}")
        self.manifest, self.encoder, self.index, self.catalog = manifest, encoder, index, catalog
        self.settings = settings
        self.pool = stages.ExplorationPool(catalog, settings.explore_quantile)
        self.rng = np.random.default_rng(settings.seed)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        settings: RecommendSettings | Mapping[str, Any] | None = None,
        precision: str | None = None,
        threads: int = 1,
        manifest_sha256: str | None = None,
    ) -> "Recommender":
        """Read every bundle file once, check its sha256, and build the encoder, index and catalog from those bytes.

        The manifest must match its ``manifest.sha256`` sidecar (and ``manifest_sha256`` when given);
        the encoder is run once on the first and last item so a bundle that loads can answer.

        Args:
            path: bundle directory.
            settings: None = the settings the bundle records (the defaults for bundles recording none);
                a mapping = those with these keys overridden (``{"mmr_lambda": 0.8}``); a
                :class:`RecommendSettings` = exactly these.
            precision: encoder to serve; None = the manifest's choice.
            threads: onnxruntime and FAISS threads.
            manifest_sha256: pin: refuse a bundle whose manifest has another sha256 (export logs it as the
                MLflow tag ``bundle.manifest_sha256``).

        Raises:
            BundleError: the bundle is missing, malformed, changed or tampered with (one line naming the file).
            ValueError: an override names an unknown setting or has a bad value.
        """
        root, manifest, _ = open_manifest(path, manifest_sha256)
        if not isinstance(settings, RecommendSettings):
            settings = manifest.recommend_settings(settings)
        precision = precision or manifest.precision
        if precision not in manifest.encoders:
            raise BundleError(f"bundle has no {precision!r} encoder; it has {sorted(manifest.encoders)}")
        blobs = read_files(root, manifest)
        name = manifest.encoders[precision]
        encoder = QueryEncoder(blobs[name], manifest.inputs, manifest.metric == "cosine", threads, name)
        last = manifest.id_offset + manifest.num_items - 1
        encoder.check([manifest.id_offset, last], manifest.dim)
        index_file = manifest.index["file"]
        index = ItemIndex.from_bytes(
            index_file,
            blobs.pop(index_file),
            manifest.index.get("search_params", ""),
            manifest.num_items,
            manifest.dim,
            threads,
        )
        ids, items = manifest.item_ids, manifest.items
        catalog = Catalog.from_bytes((ids, blobs[ids]), (items, blobs[items]), manifest.categories, manifest.num_items)
        return cls(manifest, encoder, index, catalog, settings)

    def recommend(
        self,
        history: Sequence[str] = (),
        user_features: Mapping[str, Any] | None = None,
        k: int = 10,
        exclude: Sequence[str] = (),
        filters: Mapping[str, Sequence[str]] | None = None,
        now: float | None = None,
    ) -> Recommendation:
        """Top-``k`` items for one user given the external ids of their history (oldest first).

        Args:
            history: external item ids, oldest first; unknown ids are ignored and reported.
            user_features: values for the encoder's non-history inputs, by input name.
            k: number of items.
            exclude: external ids never to return.
            filters: ``{"category": [...]}`` keeps only items of those categories.
            now: unix seconds for freshness and new-item exploration (default: the clock).
        """
        request = {"history": history, "user_features": user_features, "k": k}
        return self.recommend_many([{**request, "exclude": exclude, "filters": filters, "now": now}])[0]

    def recommend_many(self, requests: Sequence[Mapping[str, Any]]) -> list[Recommendation]:
        """Batched :meth:`recommend`: one encoder call and one index search for all requests."""
        parsed = [self._parse(**request) for request in requests]
        todo = [i for i, r in enumerate(parsed) if r.encode]
        queries: dict[int, np.ndarray] = {}
        found: dict[int, np.ndarray] = {}
        if todo:
            offset = self.manifest.id_offset
            vectors = self.encoder.encode(
                [parsed[i].history + offset for i in todo], [parsed[i].features for i in todo]
            )
            _, rows = self.index.search(vectors, self.settings.candidates)
            queries, found = dict(zip(todo, vectors, strict=True)), dict(zip(todo, rows, strict=True))
        return [self._answer(r, queries.get(i), found.get(i)) for i, r in enumerate(parsed)]

    def similar_items(self, item_id: str, k: int = 10) -> Recommendation:
        """Items closest to ``item_id`` by inner product of item vectors (itself and unavailable ones dropped)."""
        self._check_k(k)
        if item_id not in self.catalog.row_of:
            raise KeyError(f"unknown item id {item_id!r}")
        row = self.catalog.row_of[item_id]
        scores, rows = self.index.search(self.index.vectors(np.asarray([row])), k + 1)
        keep = stages.allowed(self.catalog, rows[0], np.asarray([row]), None)
        rows, scores = rows[0][keep][:k], scores[0][keep][:k]
        return Recommendation([self.catalog.ids[r] for r in rows], scores.tolist(), ["ann"] * len(rows))

    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 < k <= self.settings.max_k:
            raise ValueError(f"k must be between 1 and {self.settings.max_k}, got {show(k)}")

    def _parse(self, history=(), user_features=None, k=10, exclude=(), filters=None, now=None) -> _Request:
        self._check_k(k)
        if len(history) > self.settings.max_history:
            raise ValueError(f"history holds {len(history)} items, at most {self.settings.max_history} allowed")
        rows, unknown = self.catalog.rows([str(i) for i in history])
        excluded, _ = self.catalog.rows([str(i) for i in exclude])
        blocked = np.union1d(rows, excluded) if self.settings.exclude_seen else np.unique(excluded)
        unsupported = set(filters or {}) - {"category"}
        if unsupported:
            raise ValueError(f"unsupported filters {sorted(unsupported)}; supported: ['category']")
        categories = self.catalog.category_codes(list(filters["category"])) if filters else None
        unknown_features = sorted(set(user_features or {}) - self.encoder.feature_names)
        if unknown_features:
            known = sorted(self.encoder.feature_names)
            raise ValueError(f"unknown user_features {show(unknown_features[:5])}; the encoder takes {known}")
        has_features = bool(user_features) and bool(self.encoder.feature_names & set(user_features))
        encode = len(rows) > 0 or has_features
        now = time.time() if now is None else float(now)
        if not math.isfinite(now):
            raise ValueError(f"now must be finite unix seconds, got {now}")
        return _Request(rows, user_features, k, blocked, categories, now, unknown, encode)

    def _answer(self, request: _Request, query: np.ndarray | None, found: np.ndarray | None) -> Recommendation:
        settings, catalog = self.settings, self.catalog
        if query is None:
            rows = stages.popular_rows(catalog, settings.candidates, request.blocked, request.categories)
            relevance, sources = stages.min_max(np.log1p(catalog.popularity[rows])), np.full(len(rows), "popular")
        else:
            rows, sources = self._candidates(request, found)
            relevance = stages.min_max(self.index.vectors(rows) @ query) if len(rows) else np.zeros(0)
        relevance = relevance + settings.freshness_weight * stages.freshness(
            catalog.created_at, rows, request.now, settings.freshness_half_life_days
        )
        order = self._diversify(rows, relevance, request.k - self._explore_slots(request.k))
        rows, scores, sources = rows[order], relevance[order], sources[order]
        rows, scores, sources = self._explore(request, rows, scores, sources)
        return Recommendation(
            items=[catalog.ids[r] for r in rows],
            scores=[float(s) for s in scores],
            sources=[str(s) for s in sources],
            fallback=None if query is not None else "empty_history",
            unknown_items=request.unknown,
        )

    def _candidates(self, request: _Request, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ANN rows merged with the popularity channel, filtered, topped up with popular rows when short."""
        rows = found[stages.allowed(self.catalog, found, request.blocked, request.categories)]
        sources = np.full(len(rows), "ann")
        wanted = max(self.settings.popular_candidates, request.k - len(rows))
        if wanted > 0:
            blocked = np.union1d(request.blocked, rows)
            popular = stages.popular_rows(self.catalog, wanted, blocked, request.categories)
            rows, sources = np.concatenate([rows, popular]), np.concatenate([sources, np.full(len(popular), "popular")])
        return rows, sources

    def _diversify(self, rows: np.ndarray, relevance: np.ndarray, k: int) -> np.ndarray:
        lam = self.settings.mmr_lambda
        if lam >= 1.0 or len(rows) <= 1:
            return np.argsort(-relevance, kind="stable")[:k]
        if self.settings.diversity == "categories":
            return stages.mmr(relevance, None, self.catalog.category[rows], lam, k)
        vectors = self.index.vectors(rows)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return stages.mmr(relevance, vectors, None, lam, k)

    def _explore_slots(self, k: int) -> int:
        return int(k * self.settings.explore_share)

    def _explore(self, request: _Request, rows: np.ndarray, scores: np.ndarray, sources: np.ndarray):
        slots = self._explore_slots(request.k) + max(request.k - self._explore_slots(request.k) - len(rows), 0)
        if slots == 0 or request.k == len(rows):
            return rows, scores, sources
        blocked = np.union1d(request.blocked, rows)

        def usable(candidates: np.ndarray) -> np.ndarray:
            return stages.allowed(self.catalog, candidates, blocked, request.categories)

        picks = self.pool.draw(self.rng, slots, request.now, self.settings.new_item_days, usable)
        floor = float(scores.min()) if len(scores) else 0.0
        return (
            np.concatenate([rows, picks]),
            np.concatenate([scores, np.full(len(picks), floor)]),
            np.concatenate([sources, np.full(len(picks), "explore")]),
        )
