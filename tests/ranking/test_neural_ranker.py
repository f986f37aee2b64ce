"""NeuralRanker: it learns a planted feature interaction, reads NaN as a signal, and ships as equal ONNX and files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rectorch.ranking.data import RankingData
from rectorch.ranking.neural import FeatureTransform, NeuralRanker, Preprocessing
from rectorch.ranking.ranker import group_ndcg
from rectorch.serving.encoder import session

LENGTH = 20
NAMES = ["f0", "f1", "noise", "pop_rank", "sparse"]
CONFIG = Path(__file__).resolve().parents[2] / "conf" / "ranker" / "neural.yaml"


def interaction_data(queries: int, seed: int) -> RankingData:
    """The target is the candidate with the largest ``f0 · f1``; ``pop_rank`` is heavy-tailed, ``sparse`` 30 % NaN."""
    rng = np.random.default_rng(seed)
    rows = queries * LENGTH
    features = rng.normal(size=(rows, len(NAMES))).astype(np.float32)
    features[:, 3] = rng.pareto(1.5, rows) * 1000
    features[rng.random(rows) < 0.3, 4] = np.nan
    product = (features[:, 0] * features[:, 1]).reshape(queries, LENGTH)
    labels = np.zeros((queries, LENGTH), np.float32)
    labels[np.arange(queries), product.argmax(axis=1)] = 1.0
    return RankingData(features, labels.ravel(), np.full(queries, LENGTH), NAMES)


def missing_signal_data(queries: int, seed: int) -> RankingData:
    """The target is the one candidate whose ``signal`` is NaN; the others hold -1, 0 or 1 with mean exactly 0,
    so after imputation a NaN cell and a 0 cell carry the same value and only the indicator tells them apart."""
    rng = np.random.default_rng(seed)
    others = np.array([-1.0] * 6 + [1.0] * 6 + [0.0] * 7, np.float32)
    signal = np.stack([np.append(rng.permutation(others), np.nan) for _ in range(queries)])
    labels = np.zeros_like(signal)
    labels[:, -1] = 1.0
    order = np.argsort(rng.random(signal.shape), axis=1)  # the target at a random position
    signal, labels = np.take_along_axis(signal, order, 1), np.take_along_axis(labels, order, 1)
    features = np.stack([signal.ravel(), rng.normal(size=signal.size).astype(np.float32)], axis=1)
    return RankingData(features, labels.ravel(), np.full(queries, LENGTH), ["signal", "noise"])


def best_single_feature(data: RankingData) -> float:
    """The best held-out NDCG@10 of ordering by one feature, either direction, NaN last."""
    scores = [
        np.nan_to_num(sign * data.features[:, column], nan=-np.inf)
        for column in range(data.features.shape[1])
        for sign in (1.0, -1.0)
    ]
    return max(group_ndcg(s, data.labels, data.groups) for s in scores)


@pytest.fixture(scope="module")
def fitted() -> tuple[NeuralRanker, dict]:
    ranker = NeuralRanker(max_epochs=20, patience=3)
    return ranker, ranker.fit(interaction_data(600, 0), interaction_data(200, 1))


def test_preprocessing_matches_a_numpy_reference() -> None:
    x = np.array(
        [[1.0, 5.0, np.nan, 1.0, -500.0], [3.0, 5.0, np.nan, 9.0, 20.0], [np.nan, 5.0, np.nan, 99.0, np.inf]],
        np.float32,
    )
    constants = Preprocessing.fit(x, ["a", "constant", "empty", "item_rank", "big"])
    assert constants.log == [False, False, False, True, True]
    assert constants.std[1:3] == [1.0, 1.0] and constants.mean[2] == 0.0
    out = FeatureTransform(constants)(torch.from_numpy(x)).numpy()
    logged = np.sign(x) * np.log1p(np.abs(x))
    for column, values in enumerate([x[:2, 0], None, None, logged[:, 3], logged[:2, 4]]):
        finite = np.isfinite(x[:, column])
        mean, std = (values.mean(), values.std()) if values is not None else (constants.mean[column], 1.0)
        reference = np.where(finite, (np.where(column in (3, 4), logged, x)[:, column] - mean) / std, 0.0)
        np.testing.assert_allclose(out[:, column], reference, atol=1e-6)
        np.testing.assert_array_equal(out[:, 5 + column], ~finite)


def test_learns_a_feature_interaction_no_single_feature_orders(fitted) -> None:
    ranker, report = fitted
    test = interaction_data(300, 2)
    ndcg, baseline = group_ndcg(ranker.predict(test.features), test.labels, test.groups), best_single_feature(test)
    assert baseline < 0.5 and ndcg > 0.85 and ndcg > baseline + 0.4, (ndcg, baseline)
    assert report["valid_ndcg@10"] == max(report["valid_history"])
    assert report["valid_history"][report["best_epoch"]] == report["valid_ndcg@10"]
    assert report["train_groups"] == 600 and report["valid_groups"] == 200


def test_missing_indicator_carries_the_signal() -> None:
    train, test = missing_signal_data(400, 0), missing_signal_data(200, 2)
    ranker = NeuralRanker(hidden=(32,), max_epochs=15, patience=3)
    ranker.fit(train, missing_signal_data(100, 1))
    assert group_ndcg(ranker.predict(test.features), test.labels, test.groups) > 0.95
    with torch.no_grad():
        inputs = ranker.net.transform(torch.from_numpy(test.features))
        inputs[:, 2:] = 0.0  # the indicators off: a NaN cell now looks exactly like a 0 cell
        ablated = ranker.net.scorer(inputs).double().numpy()
    assert group_ndcg(ablated, test.labels, test.groups) < 0.7


def test_fit_is_deterministic_and_leaves_no_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    train, valid, test = interaction_data(100, 0), interaction_data(50, 1), interaction_data(50, 2)
    first, second, other = NeuralRanker(max_epochs=3), NeuralRanker(max_epochs=3), NeuralRanker(max_epochs=3, seed=1)
    for ranker in (first, second, other):
        ranker.fit(train, valid)
    np.testing.assert_array_equal(first.predict(test.features), second.predict(test.features))
    assert not np.array_equal(first.predict(test.features), other.predict(test.features))
    assert list(tmp_path.iterdir()) == []


def test_onnx_matches_predict_on_rows_with_missing_cells(fitted) -> None:
    ranker, _ = fitted
    model = ranker.to_onnx()
    assert ranker.onnx_report["max_abs_diff"] <= 1e-5 and ranker.onnx_report["nan_cells"] > 0
    rows = interaction_data(20, 3).features
    rows[0] = np.nan
    rows[1, 2], rows[2, 3] = np.inf, -np.inf
    runtime = session(model)
    for batch in (rows[:1], rows):
        (scores,) = runtime.run(["scores"], {"features": batch})
        assert scores.shape == (len(batch),) and scores.dtype == np.float32
        np.testing.assert_allclose(scores, ranker.predict(batch), rtol=0, atol=1e-5)


def test_save_and_load_give_the_same_scores(fitted, tmp_path) -> None:
    ranker, _ = fitted
    paths = ranker.save(tmp_path / "ranker")
    assert sorted(p.name for p in paths) == ["neural_ranker.json", "neural_ranker.pt"]
    config = json.loads(paths[0].read_text())
    assert config["feature_names"] == NAMES and config["preprocessing"]["log"] == [False, False, False, True, False]
    rows = interaction_data(30, 4).features
    np.testing.assert_array_equal(NeuralRanker.load(tmp_path / "ranker").predict(rows), ranker.predict(rows))
    for broken, message in [
        ({**config, "format": "other/1"}, "format"),
        ({**config, "feature_names": NAMES[:4]}, "one"),
    ]:
        paths[0].write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            NeuralRanker.load(tmp_path / "ranker")
    paths[0].write_text(json.dumps({**config, "settings": {**config["settings"], "hidden": [16]}}))
    with pytest.raises(ValueError, match="weights do not fit"):
        NeuralRanker.load(tmp_path / "ranker")


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="dropout"):
        NeuralRanker(dropout=1.0)
    with pytest.raises(ValueError, match="groups_per_batch"):
        NeuralRanker(groups_per_batch=0)
    with pytest.raises(ValueError, match="not fitted"):
        NeuralRanker().predict(np.zeros((2, 5), np.float32))
    data = interaction_data(10, 0)
    no_target = RankingData(data.features, np.zeros_like(data.labels), data.groups, NAMES)
    with pytest.raises(ValueError, match="valid has no query with a target"):
        NeuralRanker(max_epochs=1).fit(data, no_target)


def test_wrong_feature_width_raises(fitted) -> None:
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        fitted[0].predict(np.zeros((3, 4), np.float32))


def test_hydra_config_builds_the_ranker() -> None:
    ranker = instantiate(OmegaConf.load(CONFIG))
    assert isinstance(ranker, NeuralRanker) and ranker.name == "neural"
    assert ranker.hidden == (128, 64) and ranker.cross_layers == 2 and ranker.patience == 4
