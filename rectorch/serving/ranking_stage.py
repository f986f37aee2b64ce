"""The learned ranking stage at request time: channels → merge → filters → features → ranker scores.

It runs exactly the code the ranker was trained with (:mod:`rectorch.serving.item_channels`,
:func:`~rectorch.serving.merge.merge_channels`, :class:`~rectorch.serving.features.FeatureBuilder`), from
the bundle's ``ranking`` manifest section, its item statistics and its ONNX ranker.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rectorch.serving.features import FeatureBuilder, ItemStats, Request
from rectorch.serving.index import ItemIndex
from rectorch.serving.item_channels import covisit_list, popular_list
from rectorch.serving.manifest import BundleError
from rectorch.serving.merge import Merged, merge_channels
from rectorch.serving.ranker import RankBase, RankerModel


@dataclass
class Ranked:
    """Candidates after the ranker: rows, ranker scores, the channel each came from first, all channel scores."""

    rows: np.ndarray
    scores: np.ndarray
    sources: np.ndarray
    channel_scores: np.ndarray  # (K, C), NaN where a channel did not retrieve the row
    features: np.ndarray


class RankingStage:
    """The ranking section of one bundle.

    Args:
        section: the manifest's ``ranking`` section.
        stats: the item statistics (``features.npz``).
        ranker: the ONNX ranker.
        num_items: rows in the bundle's catalog (the statistics must have as many).
    """

    def __init__(self, section: Mapping[str, Any], stats: ItemStats, ranker: RankerModel, num_items: int) -> None:
        if stats.num_items != num_items:
            raise BundleError(f"{section['stats']} holds {stats.num_items} items, the catalog {num_items}")
        self.channels = [dict(c) for c in section["channels"]]
        self.names = [c["name"] for c in self.channels]
        self.builder = FeatureBuilder(stats, self.names, user_fields=section["user_fields"], last_n=section["last_n"])
        if self.builder.names != list(section["features"]):
            raise BundleError(
                f"the ranker reads the features {section['features'][:4]}…, but this version builds "
                f"{self.builder.names[:4]}…; the bundle was written by an incompatible rectorch"
            )
        self.stats, self.ranker, self.max_candidates = stats, ranker, int(section["max_candidates"])
        self.user_fields = frozenset(section["user_fields"])
        self.by_popularity = np.argsort(-stats.popularity, kind="stable")
        ann = [c for c in self.channels if c["kind"] == "ann"]
        self.ann_n = int(ann[0]["n"]) if ann else 0

    @classmethod
    def from_blobs(
        cls, section: Mapping[str, Any], blobs: Mapping[str, bytes], index: ItemIndex, threads: int
    ) -> "RankingStage":
        """The stage of a verified bundle: its statistics (with the index's item vectors when the section says
        ``similarity_vectors: index``) and its ranker."""
        num_items = index.size
        stats = ItemStats.from_bytes(blobs[section["stats"]], section["stats"])
        if section.get("similarity_vectors") == "index":
            stats = stats.with_vectors(index.vectors(np.arange(num_items)))
        names = list(section["features"])
        base = RankBase.from_dict(section["ranker_base"], names) if section.get("ranker_base") else None
        ranker = RankerModel(blobs[section["ranker"]], names, threads, section["ranker"], base)
        return cls(section, stats, ranker, num_items)

    def lists(self, history: np.ndarray, seen: np.ndarray, ann: tuple[np.ndarray, np.ndarray] | None) -> Merged:
        """Every channel's list (history excluded, as in training), merged in channel order.

        Args:
            history: rows, oldest first.
            seen: the sorted unique history rows.
            ann: the index's rows and scores for the query, best first (more than ``n`` when it may hold seen rows).
        """
        lists = []
        for channel in self.channels:
            n = int(channel["n"])
            if channel["kind"] == "ann":
                rows, scores = ann if ann is not None else (np.zeros(0, np.int64), np.zeros(0, np.float32))
                keep = (rows >= 0) & ~np.isin(rows, seen)
                lists.append((rows[keep][:n], scores[keep][:n]))
            elif channel["kind"] == "covisit":
                lists.append(covisit_list(self.stats, history, seen, n, int(channel["anchors"])))
            else:
                lists.append(popular_list(self.stats, self.by_popularity, seen, n))
        return merge_channels(lists, limit=self.max_candidates)

    def rank(self, request: Request, merged: Merged, keep: np.ndarray) -> Ranked:
        """Ranker scores of the merged candidates that pass the filters (``keep``)."""
        merged = Merged(merged.rows[keep], merged.scores[:, keep], merged.ranks[:, keep])
        features = self.builder.build(request, merged)
        scores = self.ranker.score(features)
        first = np.argmin(np.nan_to_num(merged.ranks, nan=np.inf), axis=0) if len(merged.rows) else np.zeros(0, int)
        sources = np.asarray(self.names, dtype=object)[first] if len(first) else np.zeros(0, object)
        return Ranked(merged.rows, scores, sources.astype(str), merged.scores, features)
