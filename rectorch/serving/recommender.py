"""``Recommender``: retrieve → filter → (learned ranking) → re-rank → fallback, from one verified bundle."""

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
from rectorch.serving.features import Request
from rectorch.serving.index import ItemIndex
from rectorch.serving.manifest import BundleError, Manifest, open_manifest, read_files, show
from rectorch.serving.ranking_stage import Ranked, RankingStage
from rectorch.serving.settings import RecommendSettings


@dataclass
class Recommendation:
    """A ranked answer: ``items[i]`` scored ``scores[i]`` came from ``sources[i]`` (``ann``, ``popular``, ``explore``,
    or with a ranking stage the first channel that retrieved it).

    ``fallback`` names why popularity answered (``empty_history``), and ``unknown_items`` lists
    history ids the catalog does not know (ignored). With a ranking stage, ``stage_scores[i]`` holds the
    item's score in every channel that retrieved it and the ranker's (``{"sasrec": 3.1, "ranker": 0.7}``).
    """

    items: list[str]
    scores: list[float]
    sources: list[str]
    fallback: str | None = None
    unknown_items: list[str] = field(default_factory=list)
    stage_scores: list[dict[str, float]] = field(default_factory=list)


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
    times: np.ndarray | None = None
    context: Mapping[str, float] = field(default_factory=dict)


class Recommender:
    """Multi-stage recommender over one bundle; build it with :meth:`from_bundle`.

    Args:
        manifest: the verified manifest.
        encoder: the ONNX query encoder.
        index: the FAISS item index.
        catalog: item ids and metadata.
        settings: stage knobs.
        ranking: the learned ranking stage, when the bundle has one.
    """

    def __init__(
        self,
        manifest: Manifest,
        encoder: QueryEncoder,
        index: ItemIndex,
        catalog: Catalog,
        settings: RecommendSettings,
        ranking: RankingStage | None = None,
    ) -> None:
        if index.size != len(catalog) or index.dim != manifest.dim:
            raise BundleError(f"index holds {index.size}×{index.dim}, manifest says {len(catalog)}×{manifest.dim}")
        self.manifest, self.encoder, self.index, self.catalog = manifest, encoder, index, catalog
        self.settings, self.ranking = settings, ranking
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
        ranking = None
        if manifest.ranking:
            ranking = RankingStage.from_blobs(manifest.ranking, blobs, index, threads)
        return cls(manifest, encoder, index, catalog, settings, ranking)

    def recommend(
        self,
        history: Sequence[str] = (),
        user_features: Mapping[str, Any] | None = None,
        k: int = 10,
        exclude: Sequence[str] = (),
        filters: Mapping[str, Sequence[str]] | None = None,
        now: float | None = None,
        history_times: Sequence[float] | None = None,
        context: Mapping[str, float] | None = None,
    ) -> Recommendation:
        """Top-``k`` items for one user given the external ids of their history (oldest first).

        Args:
            history: external item ids, oldest first; unknown ids are ignored and reported.
            user_features: values for the encoder's non-history inputs (and the ranker's user fields), by name.
            k: number of items.
            exclude: external ids never to return.
            filters: ``{"category": [...]}`` keeps only items of those categories.
            now: unix seconds for freshness, new-item exploration and the ranker's time features (default: the clock).
            history_times: unix seconds of each history item (the ranker's recency features), aligned with ``history``.
            context: numeric request-context fields for the ranker (``{"device": 1}``).
        """
        request = {"history": history, "user_features": user_features, "k": k, "exclude": exclude}
        extra = {"filters": filters, "now": now, "history_times": history_times, "context": context}
        return self.recommend_many([{**request, **extra}])[0]

    def recommend_many(self, requests: Sequence[Mapping[str, Any]]) -> list[Recommendation]:
        """Batched :meth:`recommend`: one encoder call and one index search for all requests."""
        parsed = [self._parse(**request) for request in requests]
        todo = [i for i, r in enumerate(parsed) if r.encode]
        queries: dict[int, np.ndarray] = {}
        found: dict[int, np.ndarray] = {}
        scored: dict[int, np.ndarray] = {}
        if todo:
            offset = self.manifest.id_offset
            names = self.encoder.feature_names
            vectors = self.encoder.encode(
                [parsed[i].history + offset for i in todo],
                [{k: v for k, v in (parsed[i].features or {}).items() if k in names} for i in todo],
            )
            width = self.settings.candidates
            if self.ranking is not None:  # the ann channel's n unseen rows, as in training
                width = max(width, self.ranking.ann_n + max(len(np.unique(parsed[i].history)) for i in todo))
            scores, rows = self.index.search(vectors, width)
            queries, found = dict(zip(todo, vectors, strict=True)), dict(zip(todo, rows, strict=True))
            scored = dict(zip(todo, scores, strict=True))
        return [self._answer(r, queries.get(i), found.get(i), scored.get(i)) for i, r in enumerate(parsed)]

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

    def _parse(
        self, history=(), user_features=None, k=10, exclude=(), filters=None, now=None, history_times=None, context=None
    ) -> _Request:
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
        accepted = self.encoder.feature_names | (self.ranking.user_fields if self.ranking is not None else set())
        unknown_features = sorted(set(user_features or {}) - accepted)
        if unknown_features:
            takes = "the encoder takes" if self.ranking is None else "the encoder and the ranker take"
            raise ValueError(f"unknown user_features {show(unknown_features[:5])}; {takes} {sorted(accepted)}")
        has_features = bool(user_features) and bool(self.encoder.feature_names & set(user_features))
        encode = len(rows) > 0 or has_features
        now = time.time() if now is None else float(now)
        if not math.isfinite(now):
            raise ValueError(f"now must be finite unix seconds, got {now}")
        times = None
        if history_times is not None:
            if len(history_times) != len(history):
                raise ValueError(f"history_times holds {len(history_times)} values for {len(history)} history items")
            known = np.asarray([str(i) in self.catalog.row_of for i in history], bool)
            times = np.asarray(history_times, np.float64)[known]
            if not np.isfinite(times).all():
                raise ValueError("history_times must be finite unix seconds")
        context = dict(context or {})
        for name, value in context.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"context field {show(name)} must be a finite number, got {show(value)}")
        return _Request(rows, user_features, k, blocked, categories, now, unknown, encode, times, context)

    def _answer(
        self, request: _Request, query: np.ndarray | None, found: np.ndarray | None, scored: np.ndarray | None = None
    ) -> Recommendation:
        settings, catalog = self.settings, self.catalog
        ranked: Ranked | None = None
        if query is None:
            rows = stages.popular_rows(catalog, settings.candidates, request.blocked, request.categories)
            relevance, sources = stages.min_max(np.log1p(catalog.popularity[rows])), np.full(len(rows), "popular")
        elif self.ranking is not None:
            rows, relevance, sources, ranked = self._ranked(request, found, scored)
        else:
            rows, sources = self._candidates(request, found)
            relevance = stages.min_max(self.index.vectors(rows) @ query) if len(rows) else np.zeros(0)
        relevance = relevance + settings.freshness_weight * stages.freshness(
            catalog.created_at, rows, request.now, settings.freshness_half_life_days
        )
        order = self._diversify(rows, relevance, request.k - self._explore_slots(request.k))
        rows, scores, sources = rows[order], relevance[order], sources[order]
        picked = self._stage_scores(ranked, order) if ranked is not None else []
        shown = len(rows)
        rows, scores, sources = self._explore(request, rows, scores, sources)
        return Recommendation(
            items=[catalog.ids[r] for r in rows],
            scores=[float(s) for s in scores],
            sources=[str(s) for s in sources],
            fallback=None if query is not None else "empty_history",
            unknown_items=request.unknown,
            stage_scores=picked + [{}] * (len(rows) - shown) if ranked is not None else [],
        )

    def explain(self, **request: Any) -> Ranked:
        """What the ranking stage does for one request (same keys as :meth:`recommend`): every merged and
        filtered candidate with its channel scores, its feature row and its ranker score, before re-ranking."""
        if self.ranking is None:
            raise ValueError("this bundle has no ranking stage")
        parsed = self._parse(**request)
        if not parsed.encode:
            raise ValueError("an empty history is answered by the popularity fallback, not the ranking stage")
        vectors = self.encoder.encode(
            [parsed.history + self.manifest.id_offset],
            [{k: v for k, v in (parsed.features or {}).items() if k in self.encoder.feature_names}],
        )
        scores, rows = self.index.search(vectors, self.ranking.ann_n + len(np.unique(parsed.history)))
        return self._rank_request(parsed, rows[0], scores[0])

    def _rank_request(self, request: _Request, found: np.ndarray, scored: np.ndarray) -> Ranked:
        """Channels → merge → filters → features → ranker, for one parsed request."""
        seen = np.unique(request.history)
        merged = self.ranking.lists(request.history, seen, (found, scored))
        keep = stages.allowed(self.catalog, merged.rows, request.blocked, request.categories)
        user = {k: float(v) for k, v in (request.features or {}).items() if k in self.ranking.user_fields}
        features = Request(request.history, request.times, request.now, request.context, user)
        return self.ranking.rank(features, merged, keep)

    def _ranked(self, request: _Request, found: np.ndarray, scored: np.ndarray):
        """Ranker-ordered candidates (topped up with popular rows when short), their relevance, and the ranking."""
        ranked = self._rank_request(request, found, scored)
        rows, sources = ranked.rows, ranked.sources
        relevance = stages.min_max(ranked.scores.astype(np.float64)) if len(rows) else np.zeros(0)
        short = request.k - len(rows)
        if short > 0:
            popular = stages.popular_rows(self.catalog, short, np.union1d(request.blocked, rows), request.categories)
            rows = np.concatenate([rows, popular])
            sources = np.concatenate([sources, np.full(len(popular), "popular")])
            relevance = np.concatenate([relevance, np.full(len(popular), -1.0)])
        return rows, relevance, sources, ranked

    def _stage_scores(self, ranked: Ranked, positions: np.ndarray) -> list[dict[str, float]]:
        """Channel and ranker scores of the answered candidates (``positions`` past the ranked ones: top-ups)."""
        out = []
        for p in positions:
            if p >= len(ranked.rows):
                out.append({})
                continue
            channels = ranked.channel_scores[:, p]
            scores = {name: float(s) for name, s in zip(self.ranking.names, channels, strict=True) if s == s}
            out.append({**scores, "ranker": float(ranked.scores[p])})
        return out

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
