"""The synthetic default dataset: determinism, size, and the structure it plants."""

import numpy as np
import pytest

from rectorch.data import columns as C
from rectorch.data.prepare import Preprocessing
from rectorch.data.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def data():
    return Preprocessing(dedup="none")(SyntheticSource().load())


def test_same_seed_same_data_other_seed_other_data():
    small = {"num_users": 200, "num_items": 100, "num_categories": 5, "seq_len_mean": 10}
    a, b = SyntheticSource(**small).load(), SyntheticSource(**small).load()
    assert a.interactions.equals(b.interactions)
    assert a.item_features.equals(b.item_features) and a.user_features.equals(b.user_features)
    assert not a.interactions.equals(SyntheticSource(**small, seed=1).load().interactions)


def test_default_size():
    raw = SyntheticSource().load()
    assert raw.interactions[C.USER].nunique() == 2000
    assert 60_000 < len(raw.interactions) < 100_000 and raw.category_feature == "category"


def test_no_repeats_and_increasing_time_per_user(data):
    users = np.repeat(np.arange(data.num_users + 1), data.lengths())
    assert len(np.unique(users * (data.num_items + 1) + data.items)) == data.num_interactions
    same_user = users[1:] == users[:-1]
    assert np.all(np.diff(data.timestamps)[same_user] > 0)


def test_users_interleave_in_time(data):
    first, last = data.timestamps[data.indptr[1:-1]], data.timestamps[data.indptr[2:] - 1]
    cut = np.quantile(data.timestamps, 0.8)
    assert np.mean((first < cut) & (last > cut)) > 0.2  # many users straddle a global temporal cut


def test_next_item_follows_its_successor_far_above_popularity(data):
    users = np.repeat(np.arange(data.num_users + 1), data.lengths())
    same_user = users[1:] == users[:-1]
    prev, nxt = data.items[:-1][same_user], data.items[1:][same_user]
    popularity = np.bincount(data.items, minlength=data.num_items + 1) / data.num_interactions
    pairs, counts = np.unique(prev * (data.num_items + 1) + nxt, return_counts=True)
    best = np.zeros(data.num_items + 1, np.int64)
    np.maximum.at(best, pairs // (data.num_items + 1), counts)
    frequent = np.bincount(prev, minlength=data.num_items + 1) >= 100
    follow_rate = best[frequent] / np.bincount(prev, minlength=data.num_items + 1)[frequent]
    assert frequent.sum() > 50
    assert follow_rate.mean() > 0.3 and popularity.max() < 0.03


def test_segments_concentrate_on_few_categories(data):
    users = np.repeat(np.arange(data.num_users + 1), data.lengths())
    segment = data.user_features.columns["segment"][users]
    category = data.item_features.columns["category"][data.items]
    table = np.zeros((segment.max() + 1, category.max() + 1))
    np.add.at(table, (segment, category), 1)
    top3 = np.sort(table[1:], axis=1)[:, -3:].sum(axis=1) / table[1:].sum(axis=1)
    assert top3.min() > 0.5  # 3 of 20 categories hold most of each segment's interactions


def test_feature_kinds(data):
    item_kinds = {n: s.kind for n, s in data.item_features.kinds.items()}
    assert item_kinds == {"category": "categorical", "price": "numeric", "tags": "multi"}
    assert set(data.user_features.kinds) == {"segment", "age"}
