"""Context effects of the synthetic generator: in-season categories by UTC hour, bursts on fresh items."""

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from rectorch.data import columns as C
from rectorch.data.raw import RawData
from rectorch.data.splits import LeaveOneOut
from rectorch.data.synthetic import DAY, HOUR, WINDOW_HOURS, SyntheticSource

SMALL = {"num_users": 600, "num_items": 300, "num_categories": 12, "seq_len_mean": 20}
#: digests of the generator's output before the context effects existed (``digest`` below)
SNAPSHOTS = [
    ({}, "5639e129ed715e2802a63c56f8b0f02e05db50f6c7ed5dfaf8e7c01ffdb8ca10"),
    (
        {"num_users": 200, "num_items": 100, "num_categories": 5, "seq_len_mean": 10, "follow_prob": 0.3, "seed": 3},
        "70d60b0bb38ea950987180592e41c01e83a70a37957da441dc129d5836775261",
    ),
]
OLD_CONFIG_KEYS = {
    "num_users", "num_items", "num_categories", "num_segments", "categories_per_segment", "seq_len_mean",
    "follow_prob", "zipf_exponent", "seed",
}  # fmt: skip


def digest(raw: RawData) -> str:
    """sha256 over the interactions and both feature tables, values and order."""
    h = hashlib.sha256()
    for column in raw.interactions.columns:
        h.update(raw.interactions[column].to_numpy(np.int64).tobytes())
    h.update(raw.item_features["price"].to_numpy(np.float64).tobytes())
    for table in (raw.item_features, raw.user_features):
        h.update(repr(table.drop(columns="price", errors="ignore").to_dict("list")).encode())
        h.update(table.index.to_numpy(np.int64).tobytes())
    return h.hexdigest()


def hours(raw: RawData) -> np.ndarray:
    return raw.interactions[C.TIME].to_numpy() % DAY // HOUR


def in_season_lift(raw: RawData) -> float:
    """Median over categories of (rate inside / rate outside) its best WINDOW_HOURS-hour window, hour-share adjusted."""
    category = raw.item_features["category"].str[1:].astype(int).to_numpy()[raw.interactions[C.ITEM] - 1]
    table = np.zeros((category.max() + 1, 24))
    np.add.at(table, (category, hours(raw)), 1)
    share = table.sum(axis=0) / table.sum()
    windows = (np.arange(24)[:, None] + np.arange(WINDOW_HOURS)) % 24  # (start, hour)
    inside = np.zeros((24, 24), bool)
    np.put_along_axis(inside, windows, True, axis=1)
    ratios = []
    for row in table:
        rate_in = (inside @ row) / (inside @ share)
        rate_out = (~inside @ row) / (~inside @ share)
        ratios.append((rate_in / rate_out).max())
    return float(np.median(ratios))


def fresh_share(raw: RawData) -> float:
    """Share of interactions on items first seen at most 14 days before."""
    times = raw.interactions[C.TIME]
    first = times.groupby(raw.interactions[C.ITEM]).transform("min")
    return float(np.mean(times - first <= 14 * DAY))


def late_item_share(raw: RawData) -> float:
    """Share of the items that appear first after the log's median time."""
    times = raw.interactions[C.TIME]
    return float(np.mean(times.groupby(raw.interactions[C.ITEM]).min() > times.median()))


@pytest.mark.parametrize(("options", "expected"), SNAPSHOTS)
def test_default_output_and_config_unchanged(options: dict, expected: str) -> None:
    assert digest(SyntheticSource(**options).load()) == expected
    assert digest(SyntheticSource(**options, hour_effect=0.0, freshness_effect=0.0).load()) == expected
    assert set(SyntheticSource(**options).config()) == OLD_CONFIG_KEYS  # so the cache fingerprint is unchanged
    assert SyntheticSource(hour_effect=0.2).config()["hour_effect"] == 0.2


def test_hour_effect_puts_categories_in_season() -> None:
    off = SyntheticSource(**SMALL).load()
    on = SyntheticSource(**SMALL, hour_effect=0.5).load()
    assert in_season_lift(off) < 1.4 and in_season_lift(on) > 2.0
    assert late_item_share(on) < 0.03  # no release schedule without the freshness effect


def test_event_hours_follow_a_daily_curve_and_each_user_acts_at_many_hours() -> None:
    raw = SyntheticSource(**SMALL, hour_effect=0.5).load()
    per_hour = np.bincount(hours(raw), minlength=24)
    assert per_hour.min() > 0 and per_hour.max() > 3 * per_hour.min()
    distinct = pd.Series(hours(raw)).groupby(raw.interactions[C.USER].to_numpy()).nunique()
    assert distinct.median() >= 8


def test_freshness_effect_releases_items_during_the_log_and_bursts_them() -> None:
    off = SyntheticSource(**SMALL).load()
    on = SyntheticSource(**SMALL, freshness_effect=0.3).load()
    assert fresh_share(on) > 2.5 * fresh_share(off)
    assert late_item_share(off) < 0.03 and late_item_share(on) > 0.1  # items released late appear late
    assert in_season_lift(on) < 1.4  # no hour effect without hour_effect


def successor_share(raw: RawData) -> float:
    """Mean over frequent items of the share of their next items that is their most frequent next item."""
    log = raw.interactions.sort_values([C.USER, C.TIME], kind="stable")
    users, items = log[C.USER].to_numpy(), log[C.ITEM].to_numpy()
    same_user = users[1:] == users[:-1]
    pairs = pd.Series(items[1:][same_user]).groupby(items[:-1][same_user])
    top_next = pairs.agg(lambda nxt: nxt.value_counts().iloc[0] / len(nxt))[pairs.size() >= 30]
    assert len(top_next) > 50
    return float(top_next.mean())


def test_times_increase_per_user_no_repeats_and_successors_stay() -> None:
    raw = SyntheticSource(**SMALL, hour_effect=0.5, freshness_effect=0.3, follow_prob=0.3).load()
    log = raw.interactions.sort_values([C.USER, C.TIME], kind="stable")
    same_user = np.diff(log[C.USER].to_numpy()) == 0
    assert np.all(np.diff(log[C.TIME].to_numpy())[same_user] > 0)
    assert np.all(np.diff(raw.interactions[C.TIME].to_numpy()) >= 0)  # rows in global time order
    assert not log.duplicated([C.USER, C.ITEM]).any()
    assert successor_share(raw) > 0.8 * successor_share(SyntheticSource(**SMALL, follow_prob=0.3).load())


def test_equal_seeds_identical_other_seed_different() -> None:
    options = {**SMALL, "hour_effect": 0.4, "freshness_effect": 0.2}
    a, b = SyntheticSource(**options).load(), SyntheticSource(**options).load()
    assert digest(a) == digest(b)
    assert not a.interactions.equals(SyntheticSource(**options, seed=1).load().interactions)


def test_users_who_saw_every_released_item_stop_after_five() -> None:
    options = {"num_items": 6, "num_categories": 2, "categories_per_segment": 1, "seq_len_mean": 10}
    raw = SyntheticSource(num_users=100, **options, freshness_effect=0.5).load()  # every user asks for all 6
    lengths = raw.interactions[C.USER].value_counts()
    assert len(lengths) == 100 and lengths.min() == 5 and lengths.max() == 6
    assert not raw.interactions.duplicated([C.USER, C.ITEM]).any()


@pytest.mark.parametrize("key", ["hour_effect", "freshness_effect"])
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, True, "0.3", None])
def test_bad_effect_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        SyntheticSource(**{key: value})


def test_context_config_turns_both_effects_on_with_a_timed_leave_one_out(compose_train) -> None:
    data = compose_train("data=synthetic_context", small=False).data
    source = instantiate(data.source)
    assert source.hour_effect > 0 and source.freshness_effect > 0 and source.follow_prob < SyntheticSource.follow_prob
    assert isinstance(instantiate(data.split), LeaveOneOut)
    assert source.load().interactions[C.TIME].notna().all()
