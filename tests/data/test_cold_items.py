"""ColdItemSplit: held-out items and users never reach training; the cold-start report runs on them."""

import numpy as np
import torch

from rectorch.data.cold_items import ColdItemSplit
from rectorch.data.csr import Csr
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import FeatureSpec
from rectorch.data.synthetic import SyntheticSource
from rectorch.data.views import PairView
from rectorch.evaluation import EvaluationSettings
from rectorch.evaluation.cold_start import (
    category_popularity,
    cold_item_report,
    content_popularity,
    declared_categories,
    new_user_eval_set,
    new_user_report,
    onboarding_history,
    popularity_scorer,
    random_scorer,
)


def prepared():
    return load_or_prepare(SyntheticSource(num_users=200, num_items=80, seed=1), Preprocessing(), None)


def test_held_out_items_and_users_are_absent_from_training() -> None:
    ds = prepared()
    split = ColdItemSplit(holdout_fraction=0.2, user_fraction=0.1, seed=3)(ds)
    assert len(split.cold_items) == round(0.2 * len(np.unique(ds.items)))
    assert not np.isin(split.train.items, split.cold_items).any()
    assert (split.train.lengths()[split.new_users] == 0).all() and len(split.new_users) == 20
    es = split.cold_item_eval
    assert np.isin(es.targets.items, split.cold_items).all()
    assert not np.isin(es.history.items, split.cold_items).any()
    assert not np.isin(es.users, split.new_users).any()
    assert not np.isin(split.new_user_sequences.items, split.cold_items).any()
    again = ColdItemSplit(holdout_fraction=0.2, user_fraction=0.1, seed=3)(ds)
    assert np.array_equal(again.cold_items, split.cold_items)


def test_new_user_eval_set_keeps_the_target_fixed_across_k() -> None:
    sequences = Csr(np.array([0, 4, 6, 10]), np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    users = np.array([11, 12, 13])
    none = new_user_eval_set(users, sequences, known=0, target_at=3)
    two = new_user_eval_set(users, sequences, known=2, target_at=3)
    assert none.users.tolist() == [11, 13] and none.history.lengths().tolist() == [0, 0]
    assert two.history.row(0).tolist() == [2, 3] and two.history.row(1).tolist() == [8, 9]
    assert none.targets.items.tolist() == two.targets.items.tolist() == [4, 10]


def test_content_popularity_predicts_cold_items_from_their_features() -> None:
    # item i (1..30) has genre i % 3; genre 0 items are 100x more popular than genre 2 ones
    genre = np.concatenate([[0], np.arange(1, 31) % 3 + 1])
    noise = np.random.default_rng(0).integers(0, 3, size=31)
    counts = np.array([0] + [[100, 10, 1][g - 1] for g in genre[1:]]) + noise
    table = FeatureTable({"genre": genre}, {"genre": FeatureSpec("categorical", 4)})
    warm = np.arange(1, 25)
    predicted = content_popularity(table, counts, warm)
    cold = np.arange(25, 31)
    by_genre = {g: predicted[cold[genre[cold] == g]] for g in (1, 2, 3)}
    assert by_genre[1].min() > by_genre[2].max() and by_genre[2].min() > by_genre[3].max()
    assert abs(by_genre[1].mean() - np.log1p(101)) < 0.5


def test_onboarding_declares_frequent_categories_and_seeds_their_popular_items() -> None:
    # items 1..6: categories (multi, 0 = pad) {1}, {1, 2}, {2}, {3}, {3}, {2, 3}
    category = np.array([[0, 0], [1, 0], [1, 2], [2, 0], [3, 0], [3, 0], [2, 3]])
    history = Csr(np.array([0, 3, 5]), np.array([1, 2, 3, 4, 5]))
    declared = declared_categories(history, category, count=1)
    assert [d.tolist() for d in declared] == [[1], [3]]  # row 0: 1 and 2 tie at 2 → the earlier code
    popularity = np.array([0, 5, 9, 1, 7, 0, 3])  # item 5 was never trained on
    seeds = onboarding_history(declared, category, popularity, per_category=2)
    assert seeds.row(0).tolist() == [1, 2] and seeds.row(1).tolist() == [4, 6]
    scores = category_popularity(declared, category, popularity)
    assert np.argsort(-scores[1])[:3].tolist() == [4, 6, 5]  # category-3 items first, by popularity


def test_popularity_scorer_breaks_ties_at_random_not_by_id() -> None:
    counts = np.array([0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0])
    scores = popularity_scorer(counts, seed=1)({}, torch.tensor([7, 8]))
    order = torch.argsort(scores[0], descending=True).tolist()
    assert order[:2] == [10, 1]  # counts still decide
    assert order[2:] != sorted(order[2:])  # the zero-count ties are not in id order
    torch.testing.assert_close(scores[0], scores[1])  # one order for every user


def test_reports_score_models_and_baselines() -> None:
    ds = prepared()
    split = ColdItemSplit(holdout_fraction=0.2, user_fraction=0.2, seed=0)(ds)
    settings, features = EvaluationSettings(ks=(10,)), (ds.user_features, ds.item_features)
    popularity = np.bincount(split.train.items, minlength=81)
    cold = cold_item_report(
        random_scorer(ds.num_items, 5),
        split.cold_item_eval,
        split.cold_items,
        PairView(5),
        features,
        settings,
        popularity,
    )
    assert cold["random"]["ndcg@10"] > 0 and cold["popularity_oracle"]["ndcg@10"] > cold["random"]["ndcg@10"]
    assert cold["popularity_content"]["ndcg@10"] > 0
    assert popularity[split.cold_items].sum() == 0  # training popularity on the cold set is one fixed order
    assert cold["popularity"]["ndcg@10"] < cold["popularity_oracle"]["ndcg@10"]
    users = new_user_report(
        lambda query, batch_users: torch.as_tensor(popularity).float().expand(len(batch_users), -1).clone(),
        split.new_users,
        split.new_user_sequences,
        (0, 1, 3),
        PairView(5),
        features,
        settings,
        popularity,
        category=ds.item_features.columns[ds.category_feature],
    )
    assert users["target_position"] == 4
    assert users["0"]["model"]["ndcg@10"] == users["0"]["popularity"]["ndcg@10"]
    onboarding = users["onboarding"]
    assert onboarding["model"] == onboarding["popularity"]
    # synthetic users draw from their planted favourite categories: declaring them beats popularity
    assert onboarding["category_popularity"]["ndcg@10"] > 1.5 * onboarding["popularity"]["ndcg@10"]
