"""The embedded default dataset: seeded, fast, and with structure that sequence models can learn.

Planted structure:
- items belong to categories and have Zipf-like popularity;
- users belong to taste segments (a user feature, correlated with an age bucket) that prefer a few
  categories;
- each item has one fixed successor in its own category (a random cycle per category, unrelated to
  popularity); with probability ``follow_prob`` a user's next item is the successor of the last one, so
  the next item is predictable from the last item, which neither popularity nor an order-free
  item-item model captures;
- timestamps increase per user and users start at different times, so a global temporal split is
  meaningful. Rows come out in global time order, like a log.

No user sees an item twice.
"""

import dataclasses
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rectorch.data import columns as C
from rectorch.data.arguments import positive_int
from rectorch.data.cells import short
from rectorch.data.raw import RawData

AGE_BUCKETS = np.array(["18-24", "25-34", "35-44", "45-54", "55+"])
DAY = 86_400
EPOCH = 1_600_000_000


@dataclasses.dataclass
class SyntheticSource:
    """Seeded synthetic interactions with item/user features and planted sequential transitions.

    Args:
        num_users: users generated (all appear in the output).
        num_items: catalogue size (rarely chosen tail items may not appear).
        num_categories: item categories; ``num_items`` are spread evenly over them.
        num_segments: user taste segments; each prefers ``categories_per_segment`` categories.
        categories_per_segment: preferred categories per segment.
        seq_len_mean: mean interactions per user (at least 5 each).
        follow_prob: probability that the next item is the last item's successor.
        zipf_exponent: popularity of the item of rank r is proportional to ``r ** -zipf_exponent``.
        seed: seed of the numpy Generator; equal seeds give identical data.
    """

    num_users: int = 2000
    num_items: int = 1000
    num_categories: int = 20
    num_segments: int = 8
    categories_per_segment: int = 3
    seq_len_mean: int = 40
    follow_prob: float = 0.5
    zipf_exponent: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("num_users", "num_items", "num_categories", "num_segments", "categories_per_segment"):
            positive_int(key, getattr(self, key))
        positive_int("seq_len_mean", self.seq_len_mean)
        positive_int("seed", self.seed, low=0)
        if self.num_categories > self.num_items:
            raise ValueError(f"num_categories ({self.num_categories}) must not exceed num_items ({self.num_items})")
        if self.categories_per_segment > self.num_categories:
            raise ValueError(
                f"categories_per_segment ({self.categories_per_segment}) must not exceed "
                f"num_categories ({self.num_categories})"
            )
        for key, low, high in (("follow_prob", 0.0, 1.0), ("zipf_exponent", 0.0, math.inf)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
                bounds = f"in [{low}, {high}]" if high < math.inf else f">= {low}"
                raise ValueError(f"{key} must be a number {bounds}, got {short(value)}")
            if not math.isfinite(value):
                raise ValueError(f"{key} must be finite, got {short(value)}")

    def files(self) -> list[Path]:
        return []

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load(self) -> RawData:
        rng = np.random.default_rng(self.seed)
        catalog = _Catalog.generate(rng, self.num_items, self.num_categories, self.zipf_exponent)
        segment, taste_cdf = self._tastes(rng)
        sequences, lengths = self._sequences(rng, catalog, taste_cdf)
        active = np.arange(sequences.shape[1]) < lengths[:, None]
        gaps = 1 + np.floor(rng.exponential(DAY, size=sequences.shape)).astype(np.int64)
        starts = EPOCH + rng.integers(0, 180 * DAY, size=self.num_users)
        times = starts[:, None] + np.cumsum(gaps, axis=1)
        users = np.broadcast_to(np.arange(1, self.num_users + 1)[:, None], sequences.shape)[active]
        log_order = np.argsort(times[active], kind="stable")
        interactions = pd.DataFrame({C.USER: users, C.ITEM: sequences[active] + 1, C.TIME: times[active]}).iloc[
            log_order
        ]
        typical = rng.random(self.num_users) < 0.7
        age = np.where(typical, segment % len(AGE_BUCKETS), rng.integers(0, len(AGE_BUCKETS), self.num_users))
        user_features = pd.DataFrame(
            {"segment": np.char.add("s", segment.astype(str)), "age": AGE_BUCKETS[age]},
            index=np.arange(1, self.num_users + 1),
        )
        return RawData(
            name="synthetic",
            interactions=interactions.reset_index(drop=True),
            item_features=catalog.features(rng),
            user_features=user_features,
            category_feature="category",
        )

    def _tastes(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Segment per user and the cumulative distribution of each user's taste over categories."""
        liked = np.argsort(rng.random((self.num_segments, self.num_categories)), axis=1)
        liked = liked[:, : self.categories_per_segment]
        segment = rng.integers(0, self.num_segments, self.num_users)
        taste = np.full((self.num_users, self.num_categories), 0.02)
        rows = np.repeat(np.arange(self.num_users), self.categories_per_segment)
        taste[rows, liked[segment].ravel()] += rng.gamma(2.0, size=rows.size)
        return segment, np.cumsum(taste / taste.sum(axis=1, keepdims=True), axis=1)

    def _sequences(
        self, rng: np.random.Generator, catalog: "_Catalog", taste_cdf: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item matrix (users, max length) of 0-based item ids, and each user's length."""
        lengths = 5 + rng.geometric(1 / max(self.seq_len_mean - 4, 1), self.num_users)
        lengths = np.minimum(lengths, min(5 * self.seq_len_mean, self.num_items))
        sequences = np.zeros((self.num_users, int(lengths.max())), np.int64)
        seen = np.zeros((self.num_users, self.num_items), bool)
        for step in range(sequences.shape[1]):
            users = np.flatnonzero(lengths > step)
            choice = catalog.sample(rng, taste_cdf[users])
            if step:
                follow = rng.random(users.size) < self.follow_prob
                choice = np.where(follow, catalog.successor[sequences[users, step - 1]], choice)
            for _ in range(5):
                again = seen[users, choice]
                if not again.any():
                    break
                choice[again] = catalog.sample(rng, taste_cdf[users[again]])
            again = np.flatnonzero(seen[users, choice])
            choice[again] = np.argmax(rng.random((again.size, self.num_items)) * ~seen[users[again]], axis=1)
            sequences[users, step] = choice
            seen[users, choice] = True
        return sequences, lengths


@dataclasses.dataclass
class _Catalog:
    """Items grouped by category: popularity sampler and successor map (0-based ids)."""

    category: np.ndarray
    order: np.ndarray  # items sorted by category
    keys: np.ndarray  # category + within-category popularity CDF, increasing along ``order``
    successor: np.ndarray

    @classmethod
    def generate(cls, rng: np.random.Generator, num_items: int, num_categories: int, exponent: float):
        category = rng.permutation(np.arange(num_items) % num_categories)
        weight = (rng.permutation(num_items) + 1.0) ** -exponent
        order = np.lexsort((rng.random(num_items), category))
        grouped = category[order]
        starts = np.searchsorted(grouped, np.arange(num_categories))
        ends = np.append(starts[1:], num_items)
        cum = np.cumsum(weight[order])
        before = np.append(0.0, cum)[starts][grouped]
        cdf = (cum - before) / (cum[ends - 1][grouped] - before)
        nxt = np.arange(1, num_items + 1)
        nxt[ends - 1] = starts
        successor = np.empty(num_items, np.int64)
        successor[order] = order[nxt]
        return cls(category, order, grouped + cdf, successor)

    def sample(self, rng: np.random.Generator, taste_cdf: np.ndarray) -> np.ndarray:
        """One item per row: a category from the row's taste, then an item by popularity within it."""
        draws = rng.random((len(taste_cdf), 2))
        cats = np.minimum((taste_cdf < draws[:, :1]).sum(axis=1), taste_cdf.shape[1] - 1)
        pos = np.searchsorted(self.keys, cats + draws[:, 1], side="right")
        return self.order[np.minimum(pos, len(self.order) - 1)]

    def features(self, rng: np.random.Generator) -> pd.DataFrame:
        """Category, price (numeric, log-normal around a per-category level) and two tags per item."""
        num_items, num_categories = len(self.category), int(self.category.max()) + 1
        level = rng.normal(3.0, 1.0, num_categories)
        price = np.round(np.exp(level[self.category] + rng.normal(0, 0.3, num_items)), 2)
        own_tag = 2 * self.category + rng.integers(0, 2, num_items)
        any_tag = rng.integers(0, 2 * num_categories, num_items)
        tags = np.char.add("t", np.stack([own_tag, any_tag], axis=1).astype(str)).tolist()
        return pd.DataFrame(
            {"category": np.char.add("c", self.category.astype(str)), "price": price, "tags": tags},
            index=np.arange(1, num_items + 1),
        )
