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

Context effects (off by default; only a ranker that sees the request's time and the item's age can use them):
- ``hour_effect``: each category has a 4-hour window of UTC hours; event times follow a daily activity curve,
  and with this probability an event's category is drawn among those in season at the event's hour;
- ``freshness_effect``: a share of the items is released during the log (none is chosen before its release);
  with this probability an event's item is drawn among the items released in the 14 days before it.

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
HOUR = 3_600
DAY = 86_400
EPOCH = 1_600_000_000
#: relative activity per UTC hour (evening peak, night trough), shared by all users up to a shift of a few hours
DIURNAL = 1 + 0.7 * np.cos(2 * np.pi * (np.arange(24) - 19) / 24)
WINDOW_HOURS = 4  # the hours of the day at which a category is in season
FRESH_DAYS = 14  # an item is fresh this long after its release
LATE_SHARE = 0.3  # share of the catalogue released during the log (the rest is out before it starts)


def check_generator(args: Any, shares: tuple[str, ...], min_seq_len: int = 1) -> None:
    """The size and share arguments a synthetic generator (``args``) has, each checked with the key's name."""
    for key in ("num_users", "num_items", "num_categories", "num_segments", "categories_per_segment"):
        positive_int(key, getattr(args, key))
    positive_int("seq_len_mean", args.seq_len_mean, low=min_seq_len)
    positive_int("seed", args.seed, low=0)
    if args.num_categories > args.num_items:
        raise ValueError(f"num_categories ({args.num_categories}) must not exceed num_items ({args.num_items})")
    if args.categories_per_segment > args.num_categories:
        raise ValueError(
            f"categories_per_segment ({args.categories_per_segment}) must not exceed "
            f"num_categories ({args.num_categories})"
        )
    for key, low, high in [(key, 0.0, 1.0) for key in shares] + [("zipf_exponent", 0.0, math.inf)]:
        value = getattr(args, key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
            bounds = f"in [{low}, {high}]" if high < math.inf else f">= {low}"
            raise ValueError(f"{key} must be a number {bounds}, got {short(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{key} must be finite, got {short(value)}")


@dataclasses.dataclass
class SyntheticSource:
    """Seeded synthetic interactions with item/user features and planted sequential transitions.

    Args:
        num_users: users generated (all appear in the output).
        num_items: catalogue size (rarely chosen tail items may not appear).
        num_categories: item categories; ``num_items`` are spread evenly over them.
        num_segments: user taste segments; each prefers ``categories_per_segment`` categories.
        categories_per_segment: preferred categories per segment.
        seq_len_mean: mean interactions per user (at least 5 each; with ``freshness_effect`` a user who has
            seen every item released so far stops early, but never before 5).
        follow_prob: probability that the next item is the last item's successor.
        zipf_exponent: popularity of the item of rank r is proportional to ``r ** -zipf_exponent``.
        seed: seed of the numpy Generator; equal seeds give identical data.
        hour_effect: probability that an event (one that does not follow a successor) takes its category from
            its UTC hour instead of the user's taste.
        freshness_effect: probability that such an event's item is one released in the 14 days before it; above 0,
            30 % of the items are also released during the log instead of before it.
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
    hour_effect: float = 0.0
    freshness_effect: float = 0.0

    def __post_init__(self) -> None:
        check_generator(self, shares=("follow_prob", "hour_effect", "freshness_effect"))

    def files(self) -> list[Path]:
        return []

    def config(self) -> dict[str, Any]:
        """The arguments; effects left off are left out, so default data keep their cache fingerprint."""
        config = dataclasses.asdict(self)
        return {k: v for k, v in config.items() if k not in ("hour_effect", "freshness_effect") or v}

    def load(self) -> RawData:
        rng = np.random.default_rng(self.seed)
        catalog = _Catalog.generate(rng, self.num_items, self.num_categories, self.zipf_exponent)
        segment, taste_cdf = self._tastes(rng)
        lengths = 5 + rng.geometric(1 / max(self.seq_len_mean - 4, 1), self.num_users)
        lengths = np.minimum(lengths, min(5 * self.seq_len_mean, self.num_items))
        context = None
        if self.hour_effect or self.freshness_effect:  # an event's item depends on its time: times come first
            times = _with_daily_hours(rng, self._times(rng, lengths), lengths)
            context = _Context.generate(rng, catalog, times, lengths, self.hour_effect, self.freshness_effect)
        sequences, lengths = self._sequences(rng, catalog, taste_cdf, lengths, context)
        if context is None:  # the historical order of draws, so default data stay the same
            times = self._times(rng, lengths)
        active = np.arange(sequences.shape[1]) < lengths[:, None]
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

    def _times(self, rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
        """Unix seconds (users, max length), increasing per user: a start within 180 days, then ~1 day gaps."""
        gaps = 1 + np.floor(rng.exponential(DAY, size=(self.num_users, int(lengths.max())))).astype(np.int64)
        starts = EPOCH + rng.integers(0, 180 * DAY, size=self.num_users)
        return starts[:, None] + np.cumsum(gaps, axis=1)

    def _sequences(
        self,
        rng: np.random.Generator,
        catalog: "_Catalog",
        taste_cdf: np.ndarray,
        lengths: np.ndarray,
        context: "_Context | None",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item matrix (users, max length) of 0-based item ids, and each user's (possibly shortened) length."""
        lengths = lengths.copy()
        sequences = np.zeros((self.num_users, int(lengths.max())), np.int64)
        seen = np.zeros((self.num_users, self.num_items), bool)
        for step in range(sequences.shape[1]):
            users = np.flatnonzero(lengths > step)
            now = None if context is None else context.times[users, step]
            choice = catalog.sample(rng, taste_cdf[users])
            if context is not None:
                choice = context.steer(rng, catalog, choice, now)
            if step:
                follow = rng.random(users.size) < self.follow_prob
                choice = np.where(follow, catalog.successor[sequences[users, step - 1]], choice)
            for _ in range(5):
                again = _blocked(seen, users, choice, context, now)
                if not again.any():
                    break
                choice[again] = catalog.sample(rng, taste_cdf[users[again]])
            again = np.flatnonzero(_blocked(seen, users, choice, context, now))
            allowed = ~seen[users[again]]
            if context is not None:
                allowed &= context.release <= now[again, None]
            choice[again] = np.argmax(rng.random((again.size, self.num_items)) * allowed, axis=1)
            lengths[users[again[~allowed.any(axis=1)]]] = step  # nothing released is left unseen: the user stops
            sequences[users, step] = choice
            seen[users, choice] = True
        return sequences, lengths


def _blocked(
    seen: np.ndarray, users: np.ndarray, choice: np.ndarray, context: "_Context | None", now: np.ndarray | None
) -> np.ndarray:
    """Per user, whether its ``choice`` was seen already or (with a context) is not yet released at ``now``."""
    blocked = seen[users, choice]
    if context is not None:
        blocked |= context.release[choice] > now
    return blocked


def _with_daily_hours(rng: np.random.Generator, times: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``times`` with each event's time of day redrawn from :data:`DIURNAL` shifted per user, still increasing."""
    shift = rng.integers(-3, 4, size=(len(times), 1))
    hours = (rng.choice(24, size=times.shape, p=DIURNAL / DIURNAL.sum()) + shift) % 24
    moved = times - times % DAY + hours * HOUR + rng.integers(0, HOUR, size=times.shape)
    steps = np.arange(times.shape[1])
    moved[steps >= lengths[:, None]] = np.iinfo(np.int64).max - times.shape[1]  # padding sorts last
    moved = np.sort(moved, axis=1)
    return np.maximum.accumulate(moved - steps, axis=1) + steps  # equal seconds move apart: strictly increasing


@dataclasses.dataclass
class _Catalog:
    """Items grouped by category: popularity sampler and successor map (0-based ids)."""

    category: np.ndarray
    weight: np.ndarray  # popularity, proportional to the choice probability within a category
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
        return cls(category, weight, order, grouped + cdf, successor)

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


@dataclasses.dataclass
class _Context:
    """What an event's time adds to its choice: the categories in season at its hour, the items just released."""

    times: np.ndarray  # (users, max length) unix seconds of every event, fixed before any item is chosen
    hour_effect: float
    freshness_effect: float
    hour_cdf: np.ndarray  # (24, categories): CDF over the categories whose window holds the hour
    covered: np.ndarray  # (24,): hours held by at least one window
    release: np.ndarray  # (items,) unix seconds; 0 for items out before the log
    late: np.ndarray  # items released during the log, by release time
    late_cdf: np.ndarray  # cumulative popularity along ``late``, starting at 0

    @classmethod
    def generate(
        cls,
        rng: np.random.Generator,
        catalog: _Catalog,
        times: np.ndarray,
        lengths: np.ndarray,
        hour_effect: float,
        freshness_effect: float,
    ) -> "_Context":
        num_items, num_categories = len(catalog.category), int(catalog.category.max()) + 1
        opens = rng.permutation(np.arange(num_categories) * 24 // num_categories)  # windows spread over the day
        in_window = (np.arange(24)[:, None] - opens) % 24 < WINDOW_HOURS  # (24, categories)
        hour_cdf = np.cumsum(in_window / np.maximum(in_window.sum(axis=1, keepdims=True), 1), axis=1)
        release = np.zeros(num_items, np.int64)
        late = np.zeros(0, np.int64)
        if freshness_effect:
            logged = times[np.arange(times.shape[1]) < lengths[:, None]]
            late = np.flatnonzero(rng.random(num_items) < LATE_SHARE)
            late = late[max(min(5, num_items) - (num_items - late.size), 0) :]  # 5 items out early: 5 events each
            release[late] = rng.integers(logged.min(), int(np.quantile(logged, 0.9)) + 1, late.size)
            late = late[np.argsort(release[late], kind="stable")]
        late_cdf = np.append(0.0, np.cumsum(catalog.weight[late]))
        return cls(times, hour_effect, freshness_effect, hour_cdf, in_window.any(axis=1), release, late, late_cdf)

    def steer(self, rng: np.random.Generator, catalog: _Catalog, choice: np.ndarray, now: np.ndarray) -> np.ndarray:
        """``choice`` (one taste-driven item per event at ``now``) with shares replaced by in-season or fresh items."""
        choice = choice.copy()
        if self.hour_effect:
            hour = now % DAY // HOUR
            by_hour = np.flatnonzero((rng.random(len(now)) < self.hour_effect) & self.covered[hour])
            choice[by_hour] = catalog.sample(rng, self.hour_cdf[hour[by_hour]])
        if self.freshness_effect:
            released = self.release[self.late]
            low = np.searchsorted(released, now - FRESH_DAYS * DAY, side="right")
            high = np.searchsorted(released, now, side="right")
            fresh = np.flatnonzero((rng.random(len(now)) < self.freshness_effect) & (high > low))
            low, high = low[fresh], high[fresh]
            mass = self.late_cdf[low] + rng.random(fresh.size) * (self.late_cdf[high] - self.late_cdf[low])
            pick = np.clip(np.searchsorted(self.late_cdf, mass, side="right") - 1, low, high - 1)
            choice[fresh] = self.late[pick]
        return choice
