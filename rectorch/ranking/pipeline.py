"""``TwoStage``: channels → merge → features → a learned ranker, fitted time-safely and evaluated on the full catalog.

Time-safe scheme (nothing derived from a test target touches a fitted component or a selection):
- the channels are saved runs trained as usual (fitted on the training rows, selected on validation);
- item statistics (popularity, co-visitation, first-seen times, hour profiles) come from the training rows only;
- the ranker learns from the validation queries (history = training rows, label = the validation target) of
  ``1 − valid_share`` of the users, and is early-stopped on the validation queries of the others;
- everything is tested on the test queries (history includes the validation item), where a target that no
  channel retrieved is a miss: the metrics are full-catalog ones, comparable with each channel's own.
"""

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rectorch.data.context import TrainContext
from rectorch.data.prepared import PreparedDataset
from rectorch.data.splits import SplitData
from rectorch.evaluation import EvaluationSettings
from rectorch.evaluation.candidates import CandidateEvaluator
from rectorch.ranking.channels import Candidates, Channel, RunChannel
from rectorch.ranking.data import RankingData
from rectorch.ranking.queries import ID_OFFSET, StageQueries
from rectorch.ranking.ranker import Ranker
from rectorch.serving.features import FeatureBuilder, ItemStats
from rectorch.serving.merge import Merged, merge_channels

FEATURE_GROUPS = ("channels", "item", "user", "context", "cross")


def feature_group(name: str, channels: Sequence[str]) -> str:
    """The group of a feature column (what the ablation drops together)."""
    if name == "channels_hit" or any(name in (f"{c}_score", f"{c}_rank") for c in channels):
        return "channels"
    if name.startswith("item_"):
        return "item"
    if name.startswith("user_"):
        return "user"
    if name in ("hour", "weekday", "category_hour_share") or name.startswith("ctx_"):
        return "context"  # the request's time and fields, alone or crossed with the item's category
    return "cross"


@dataclass
class StageData:
    """One stage's queries, each query's merged candidates, and the ranker's rows for them."""

    queries: StageQueries
    merged: list[Merged]
    data: RankingData

    def subset(self, positions: np.ndarray) -> "StageData":
        offsets = self.data.offsets
        rows = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in positions]) if len(positions) else []
        rows = np.asarray(rows, np.int64)
        data = RankingData(
            self.data.features[rows], self.data.labels[rows], self.data.groups[positions], list(self.data.names)
        )
        return StageData(self.queries.subset(positions), [self.merged[p] for p in positions], data)


@dataclass
class TwoStageResult:
    """A fitted two-stage pipeline: metrics, the fitted ranker, and what serving needs to rebuild its features."""

    metrics: dict[str, Any]
    ranker: Ranker
    stats: ItemStats
    builder: FeatureBuilder
    channels: list[dict[str, Any]]


class TwoStage:
    """Multi-channel candidates re-ranked by a learned ranker.

    Args:
        channels: name → channel (a saved run, popularity, co-visitation), in merge priority order.
        ranker: an unfitted ranker (``ranker=lightgbm`` / ``ranker=neural``).
        max_candidates: merged candidates per query (the union is cut there).
        recall_ns: cut-offs of the reported candidate recall (each ≤ ``max_candidates``).
        similarity_channel: the run channel whose item vectors the similarity features read
            (default: the first run channel; none → those features are NaN).
        user_fields: numeric user features the ranker reads.
        last_n: how many of the newest history items the recent-history features read.
        valid_share: share of the validation queries that early-stop the ranker instead of fitting it.
        split_seed: seed of that split.
        recent_days: the window of the recent-popularity feature.
        covisit_window: positions apart within which two items count as co-visited.
        covisit_top: neighbours kept per item.
        ablation: also refit the ranker without each feature group and report its test metrics.
    """

    def __init__(
        self,
        channels: Mapping[str, Channel],
        ranker: Ranker,
        max_candidates: int = 500,
        recall_ns: Sequence[int] = (200, 500),
        similarity_channel: str | None = None,
        user_fields: Sequence[str] = (),
        last_n: int = 5,
        valid_share: float = 0.5,
        split_seed: int = 0,
        recent_days: float = 30.0,
        covisit_window: int = 3,
        covisit_top: int = 50,
        ablation: bool = False,
    ) -> None:
        if not channels:
            raise ValueError("two_stage.channels is empty: give at least one candidate channel")
        if not 0.0 < valid_share < 1.0:
            raise ValueError(f"two_stage.valid_share must lie in (0, 1), got {valid_share}")
        self.channels = dict(channels)
        self.ranker = ranker
        self._unfitted = copy.deepcopy(ranker)  # the ablation refits start from it
        self.max_candidates = int(max_candidates)
        self.recall_ns = tuple(int(n) for n in recall_ns if int(n) <= self.max_candidates) or (self.max_candidates,)
        runs = [name for name, channel in self.channels.items() if isinstance(channel, RunChannel)]
        if similarity_channel is not None and similarity_channel not in runs:
            raise ValueError(
                f"two_stage.similarity_channel={similarity_channel!r} is not a run channel; run channels: {runs}"
            )
        self.similarity_channel = similarity_channel or (runs[0] if runs else None)
        self.user_fields = tuple(user_fields)
        self.last_n, self.valid_share, self.split_seed = int(last_n), float(valid_share), int(split_seed)
        self.recent_days, self.covisit_window, self.covisit_top = (
            float(recent_days),
            int(covisit_window),
            int(covisit_top),
        )
        self.ablation = bool(ablation)

    # --- building blocks ---------------------------------------------------------------------------
    def item_stats(self, dataset: PreparedDataset, context: TrainContext) -> ItemStats:
        """Per-item tables from the training rows only (the bundle ships the same tables)."""
        train = context.train
        vectors = None
        if self.similarity_channel is not None:
            vectors = self.channels[self.similarity_channel].item_vectors()
        numeric = {
            name: context.item_features.columns[name][ID_OFFSET:].astype(np.float32)
            for name, kind in context.item_features.kinds.items()
            if kind.kind == "numeric"
        }
        category = None if context.item_category is None else context.item_category[ID_OFFSET:]
        return ItemStats.from_interactions(
            train.indptr,
            train.items - ID_OFFSET,
            train.timestamps,
            dataset.num_items,
            category=category,
            vectors=vectors,
            numeric=numeric,
            recent_days=self.recent_days,
            covisit_window=self.covisit_window,
            covisit_top=self.covisit_top,
        )

    def builder(self, stats: ItemStats) -> FeatureBuilder:
        return FeatureBuilder(stats, list(self.channels), user_fields=self.user_fields, last_n=self.last_n)

    def stage_data(
        self, queries: StageQueries, context: TrainContext, stats: ItemStats, builder: FeatureBuilder
    ) -> tuple[StageData, dict[str, Candidates]]:
        """Every channel's lists, their merge, and one feature row per merged candidate (label = a target)."""
        lists = {name: channel.retrieve(queries, context, stats) for name, channel in self.channels.items()}
        merged, features, labels, groups = [], [], [], []
        for i in range(len(queries)):
            one = merge_channels([lists[name].lists(i) for name in self.channels], limit=self.max_candidates)
            merged.append(one)
            features.append(builder.build(queries.request(i, context.user_features, self.user_fields), one))
            targets = queries.targets.row(i) - ID_OFFSET
            labels.append(np.isin(one.rows, targets).astype(np.float32))
            groups.append(len(one.rows))
        keep = np.asarray(groups) > 0
        data = RankingData(
            np.concatenate(features) if features else np.zeros((0, len(builder.names)), np.float32),
            np.concatenate(labels) if labels else np.zeros(0, np.float32),
            np.asarray(groups, np.int64)[keep],
            list(builder.names),
        )
        if not keep.all():  # a query without any candidate has no rows; keep queries and rows aligned
            positions = np.flatnonzero(keep)
            queries, merged = queries.subset(positions), [merged[p] for p in positions]
            lists = {name: Candidates(c.rows[positions], c.scores[positions]) for name, c in lists.items()}
        return StageData(queries, merged, data), lists

    def validation_halves(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the validation queries the ranker fits on, and of those that early-stop it."""
        order = np.random.default_rng(self.split_seed).permutation(count)
        stop = round(count * self.valid_share)
        return np.sort(order[stop:]), np.sort(order[:stop])

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(
        self,
        stage: StageData,
        scores: np.ndarray | None,
        settings: EvaluationSettings,
        context: TrainContext,
        all_queries: StageQueries,
    ) -> dict[str, float]:
        """Full-catalog metrics of the merged candidates ordered by ``scores`` (None = union order),
        over every query of ``all_queries`` (a query without candidates counts, with no hits)."""
        width = self.max_candidates
        rows = np.full((len(all_queries), width), -1, np.int64)
        ranked = np.full((len(all_queries), width), -np.inf, np.float32)
        where = {int(u): p for p, u in enumerate(all_queries.users)}
        offsets = stage.data.offsets
        for i, one in enumerate(stage.merged):
            p = where[int(stage.queries.users[i])]
            rows[p, : len(one.rows)] = one.rows
            values = (
                -np.arange(len(one.rows), dtype=np.float32) if scores is None else scores[offsets[i] : offsets[i + 1]]
            )
            ranked[p, : len(one.rows)] = values
        return _candidate_metrics(rows, ranked, all_queries, settings, context, self.recall_ns)

    def channel_metrics(
        self, lists: Candidates, settings: EvaluationSettings, context: TrainContext, queries: StageQueries
    ) -> dict[str, float]:
        """A channel alone: its list in its own order (its full-catalog metrics whenever ``n`` ≥ the largest k)."""
        rows = np.where(lists.rows >= 0, lists.rows, -1)
        order = -np.tile(np.arange(rows.shape[1], dtype=np.float32), (rows.shape[0], 1))
        ns = tuple(n for n in self.recall_ns if n <= rows.shape[1]) or (rows.shape[1],)
        return _candidate_metrics(rows, np.where(rows >= 0, order, -np.inf), queries, settings, context, ns)

    # --- the whole fit ----------------------------------------------------------------------------
    def fit_evaluate(
        self, dataset: PreparedDataset, split: SplitData, context: TrainContext, settings: EvaluationSettings
    ) -> TwoStageResult:
        """Fit the ranker on validation queries and report validation and test metrics beside each channel's."""
        start = time.perf_counter()
        stats = self.item_stats(dataset, context)
        builder = self.builder(stats)
        val_queries = StageQueries.from_split(split, "val")
        test_queries = StageQueries.from_split(split, "test")
        val, val_lists = self.stage_data(val_queries, context, stats, builder)
        test, test_lists = self.stage_data(test_queries, context, stats, builder)
        features_seconds = time.perf_counter() - start

        fit_pos, stop_pos = self.validation_halves(len(val.queries))
        fit, stop = val.subset(fit_pos), val.subset(stop_pos)
        fit_start = time.perf_counter()
        report = self.ranker.fit(fit.data.with_positive(), stop.data.with_positive())
        fit_seconds = time.perf_counter() - fit_start

        test_scores = self.ranker.predict(test.data.features)
        stop_scores = self.ranker.predict(stop.data.features)
        metrics: dict[str, Any] = {
            "test": self.evaluate(test, test_scores, settings, context, test_queries),
            "val": self.evaluate(stop, stop_scores, settings, context, stop.queries),
            "candidates": {
                "test": self.evaluate(test, None, settings, context, test_queries),
                "val": self.evaluate(stop, None, settings, context, stop.queries),
            },
            "channels": {},
            "ranker": {**report, "fit_seconds": round(fit_seconds, 3), "rows": len(fit.data.labels)},
            "features": list(builder.names),
            "features_seconds": round(features_seconds, 3),
            "queries": {"fit": len(fit_pos), "early_stop": len(stop_pos), "test": len(test_queries)},
        }
        stop_users = stop.queries.users
        for name in self.channels:
            val_rows = _rows_for(val_lists[name], val.queries.users, stop_users)
            metrics["channels"][name] = {
                "test": self.channel_metrics(test_lists[name], settings, context, test_queries),
                "val": self.channel_metrics(val_rows, settings, context, stop.queries),
            }
        if self.ablation:
            metrics["ablation"] = self._ablation(fit, stop, test, settings, context, test_queries)
        described = [{"name": name, **channel.describe()} for name, channel in self.channels.items()]
        return TwoStageResult(metrics, self.ranker, stats, builder, described)

    def _ablation(self, fit, stop, test, settings, context, test_queries) -> dict[str, dict[str, float]]:
        """Test metrics of the ranker refitted without each feature group."""
        names = list(fit.data.names)
        groups = [feature_group(n, list(self.channels)) for n in names]
        results = {}
        for group in FEATURE_GROUPS:
            keep = np.asarray([g != group for g in groups])
            if keep.all() or not keep.any():
                continue
            ranker = copy.deepcopy(self._unfitted)
            kept = [n for n, k in zip(names, keep, strict=True) if k]
            if getattr(ranker, "base_rank", None) not in (None, *kept):  # its prior's column is dropped too
                ranker.base_rank = None
            ranker.fit(_columns(fit.data.with_positive(), keep, kept), _columns(stop.data.with_positive(), keep, kept))
            scores = ranker.predict(test.data.features[:, keep])
            results[f"without_{group}"] = self.evaluate(test, scores, settings, context, test_queries)
        return results


def _columns(data: RankingData, keep: np.ndarray, names: list[str]) -> RankingData:
    return RankingData(data.features[:, keep], data.labels, data.groups, names)


def _rows_for(lists: Candidates, users: np.ndarray, wanted: np.ndarray) -> Candidates:
    at = {int(u): p for p, u in enumerate(users)}
    positions = np.asarray([at[int(u)] for u in wanted], np.int64)
    return Candidates(lists.rows[positions], lists.scores[positions])


def _candidate_metrics(
    rows: np.ndarray,
    scores: np.ndarray,
    queries: StageQueries,
    settings: EvaluationSettings,
    context: TrainContext,
    recall_ns: Sequence[int],
) -> dict[str, float]:
    """Full-catalog metrics (a target outside ``rows`` is a miss) of ``rows`` ranked by ``scores``."""
    evaluator = CandidateEvaluator.from_context(settings, context, num_candidates=rows.shape[1], recall_ns=recall_ns)
    ids = torch.from_numpy(np.where(rows >= 0, rows + ID_OFFSET, 0))
    es = queries.eval_set()
    for start in range(0, len(queries), settings.batch_users):
        batch = np.arange(start, min(start + settings.batch_users, len(queries)))
        evaluator.update(
            torch.from_numpy(scores[batch]).float(),
            ids[batch],
            es.targets.padded(batch, None, align="left"),
            es.history.padded(batch, None, align="left"),
        )
    prefix = f"{evaluator.ranking}/"
    return {key.removeprefix(prefix): value for key, value in evaluator.compute().items()}
