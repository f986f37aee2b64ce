"""ColdItemSplit: held-out items and users never reach training; the cold-start report runs on them."""

import numpy as np
import torch

from rectorch.data.cold_items import ColdItemSplit
from rectorch.data.csr import Csr
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.synthetic import SyntheticSource
from rectorch.data.views import PairView
from rectorch.evaluation import EvaluationSettings
from rectorch.evaluation.cold_start import cold_item_report, new_user_eval_set, new_user_report, random_scorer


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


def test_reports_score_models_and_baselines() -> None:
    ds = prepared()
    split = ColdItemSplit(holdout_fraction=0.2, user_fraction=0.2, seed=0)(ds)
    settings, features = EvaluationSettings(ks=(10,)), (ds.user_features, ds.item_features)
    cold = cold_item_report(
        random_scorer(ds.num_items, 5), split.cold_item_eval, split.cold_items, PairView(5), features, settings, 80
    )
    assert cold["random"]["ndcg@10"] > 0 and cold["popularity_cold_oracle"]["ndcg@10"] > cold["random"]["ndcg@10"]
    popularity = np.bincount(split.train.items, minlength=81)
    users = new_user_report(
        lambda query: torch.as_tensor(popularity).float().expand(len(query["history"]), -1).clone(),
        split.new_users,
        split.new_user_sequences,
        (0, 1, 3),
        PairView(5),
        features,
        settings,
        popularity,
    )
    assert users["target_position"] == 4
    assert users["0"]["model"]["ndcg@10"] == users["0"]["popularity"]["ndcg@10"]
