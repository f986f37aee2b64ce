"""LightGBMRanker: it learns a planted interaction, early-stops on valid only, and ships as equal text and ONNX."""

import json
from pathlib import Path

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm", reason="the [rank] extra is not installed")
pytest.importorskip("onnxmltools", reason="the [rank] extra is not installed")

from rectorch.ranking.data import RankingData  # noqa: E402
from rectorch.ranking.lightgbm_ranker import (  # noqa: E402
    IMPORTANCE_FILE,
    MODEL_FILE,
    TREES_PER_NODE,
    LightGBMRanker,
    boundary_rows,
    convert,
    float32_exact,
)
from rectorch.ranking.ranker import export_sample, group_ndcg, validate_export  # noqa: E402
from rectorch.serving.ranker import RankerModel  # noqa: E402

LENGTH = 20
NAMES = ["f0", "f1", "noise", "sparse"]
CONFIG = Path(__file__).resolve().parents[2] / "conf" / "ranker" / "lightgbm.yaml"
SMALL = {"num_leaves": 15, "min_data_in_leaf": 20, "learning_rate": 0.1, "num_boost_round": 150}


def interaction_data(queries: int, seed: int) -> RankingData:
    """The target is the candidate with the largest ``f1`` among those with ``f0 > 0.5``: neither feature alone
    orders a group well. ``sparse`` is 30 % NaN and irrelevant."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(queries * LENGTH, len(NAMES))).astype(np.float32)
    features[:, 0] = rng.random(len(features))
    features[rng.random(len(features)) < 0.3, 3] = np.nan
    eligible = np.where(features[:, 0] > 0.5, features[:, 1], -np.inf).reshape(queries, LENGTH)
    labels = np.zeros((queries, LENGTH), np.float32)
    labels[np.arange(queries), eligible.argmax(axis=1)] = 1.0
    return RankingData(features, labels.ravel(), np.full(queries, LENGTH), NAMES)


def best_single_feature(data: RankingData) -> float:
    """The best NDCG@10 of ordering by one feature, either direction, NaN last."""
    return max(
        group_ndcg(np.nan_to_num(sign * data.features[:, column], nan=-np.inf), data.labels, data.groups)
        for column in range(data.features.shape[1])
        for sign in (1.0, -1.0)
    )


@pytest.fixture(scope="module")
def data() -> tuple[RankingData, RankingData, RankingData]:
    return interaction_data(300, 0), interaction_data(100, 1), interaction_data(200, 2)


@pytest.fixture(scope="module")
def fitted(data) -> tuple[LightGBMRanker, dict]:
    ranker = LightGBMRanker(early_stopping_rounds=20, **SMALL)
    return ranker, ranker.fit(data[0], data[1])


def _ndcg_by_hand(scores: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    order = sorted(range(len(scores)), key=lambda row: (-scores[row], row))
    dcg = sum((2.0 ** labels[row] - 1) / np.log2(rank + 2) for rank, row in enumerate(order[:k]))
    ideal = sorted(labels, reverse=True)[:k]
    idcg = sum((2.0**label - 1) / np.log2(rank + 2) for rank, label in enumerate(ideal))
    return dcg / idcg if idcg > 0 else None


@pytest.mark.parametrize("k", [1, 3, 10])
def test_group_ndcg_matches_a_brute_force_reference(k: int) -> None:
    rng = np.random.default_rng(k)
    groups = rng.integers(1, 15, size=40)
    labels = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0], size=groups.sum())
    scores = rng.integers(0, 5, size=groups.sum()).astype(float)  # many ties: row order breaks them
    starts = np.cumsum(groups) - groups
    by_hand = [_ndcg_by_hand(scores[s : s + g], labels[s : s + g], k) for s, g in zip(starts, groups, strict=True)]
    kept = [value for value in by_hand if value is not None]
    assert 0 < len(kept) < len(groups)  # some groups without a positive are skipped
    assert group_ndcg(scores, labels, groups, k) == pytest.approx(np.mean(kept), abs=1e-12)


def test_group_ndcg_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no group holds a positive"):
        group_ndcg(np.ones(4), np.zeros(4), np.array([2, 2]))
    with pytest.raises(ValueError, match="disagree"):
        group_ndcg(np.ones(4), np.ones(4), np.array([2, 3]))
    with pytest.raises(ValueError, match="k must be"):
        group_ndcg(np.ones(4), np.ones(4), np.array([2, 2]), k=0)


def test_learns_the_planted_interaction(data, fitted) -> None:
    ranker, report = fitted
    test = data[2]
    ndcg, baseline = group_ndcg(ranker.predict(test.features), test.labels, test.groups), best_single_feature(test)
    assert ndcg > 0.9 and ndcg > baseline + 0.1, (ndcg, baseline)
    assert report["trees"] == report["best_iteration"] <= SMALL["num_boost_round"]
    curve = report["lightgbm_valid_ndcg@10"]
    assert curve["best"] >= curve["first"] and curve["best"] >= curve["last"]
    # every valid group holds a target, so LightGBM's NDCG and group_ndcg agree
    assert report["valid_ndcg@10"] == pytest.approx(curve["best"], abs=1e-6)
    assert report["fit_seconds"] > 0


def test_same_seed_same_predictions(data, fitted) -> None:
    ranker, _ = fitted
    again = LightGBMRanker(early_stopping_rounds=20, **SMALL)
    again.fit(data[0], data[1])
    np.testing.assert_array_equal(again.predict(data[2].features), ranker.predict(data[2].features))
    other = LightGBMRanker(early_stopping_rounds=20, seed=1, **SMALL)
    other.fit(data[0], data[1])
    assert not np.array_equal(other.predict(data[2].features), ranker.predict(data[2].features))


def test_early_stopping_reads_valid_only(data, fitted) -> None:
    """Other valid labels select another iteration of the very same sequence of trees."""
    ranker, report = fitted
    valid = data[1]
    rng = np.random.default_rng(5)
    shuffled = np.concatenate([rng.permutation(valid.labels[s : s + LENGTH]) for s in valid.offsets[:-1]])
    other = LightGBMRanker(early_stopping_rounds=20, **SMALL)
    other_report = other.fit(data[0], RankingData(valid.features, shuffled, valid.groups, NAMES))
    assert other_report["best_iteration"] != report["best_iteration"]
    common = min(other_report["best_iteration"], report["best_iteration"])
    features = data[2].features
    np.testing.assert_array_equal(
        other.booster.predict(features, num_iteration=common), ranker.booster.predict(features, num_iteration=common)
    )


def test_text_round_trip(data, fitted, tmp_path: Path) -> None:
    ranker, _ = fitted
    written = ranker.save(tmp_path)
    assert written == [tmp_path / MODEL_FILE, tmp_path / IMPORTANCE_FILE]
    loaded = LightGBMRanker.load_text(tmp_path / MODEL_FILE, NAMES)
    np.testing.assert_array_equal(loaded.predict(data[2].features), ranker.predict(data[2].features))
    assert RankerModel(loaded.to_onnx(), NAMES).score(data[2].features).shape == (len(data[2].features),)
    assert loaded.onnx_report["max_abs_diff"] <= 1e-5  # checked on split-boundary rows alone
    importance = json.loads((tmp_path / IMPORTANCE_FILE).read_text())
    assert list(importance) == NAMES
    assert sorted(importance, key=importance.get)[-2:] in (["f0", "f1"], ["f1", "f0"])
    with pytest.raises(ValueError, match="do not match"):
        LightGBMRanker.load_text(tmp_path / MODEL_FILE, ["a", "b", "c", "d"])
    (tmp_path / "junk.txt").write_text("not a model\n")
    with pytest.raises(ValueError, match="not a LightGBM text model"):
        LightGBMRanker.load_text(tmp_path / "junk.txt")


def test_onnx_matches_predict_with_missing_cells(data, fitted) -> None:
    ranker, _ = fitted
    model = ranker.to_onnx()
    assert ranker.onnx_report["max_abs_diff"] <= 1e-5 and ranker.onnx_report["nan_cells"] > 0
    features = data[2].features.copy()
    features[np.random.default_rng(0).random(features.shape) < 0.2] = np.nan
    runtime = RankerModel(model, NAMES)
    assert (runtime.input, runtime.output) == ("features", "scores")
    np.testing.assert_allclose(runtime.score(features), ranker.predict(features), atol=1e-5, rtol=0)


def test_export_is_exact_where_nearest_float_thresholds_are_not() -> None:
    """A feature taking adjacent float32 values: thresholds rounded to the nearest float misroute rows."""
    rng = np.random.default_rng(0)
    dense = (1 + rng.integers(0, 512, 4000) * 2.0**-23).astype(np.float32)  # 512 consecutive floats
    features = np.stack([dense, rng.normal(size=4000).astype(np.float32)], axis=1)
    labels = ((dense > np.median(dense)) & (rng.random(4000) < 0.5)).astype(np.float32)
    data = RankingData(features, labels, np.full(200, 20), ["dense", "noise"])
    ranker = LightGBMRanker(num_leaves=15, min_data_in_leaf=5, num_boost_round=40, early_stopping_rounds=40)
    ranker.fit(data, data)
    assert ranker.booster.num_trees() > TREES_PER_NODE  # the trees span several ONNX nodes, summed in double
    text = ranker.booster.model_to_string()
    exact = lgb.Booster(model_str=float32_exact(text))
    np.testing.assert_array_equal(exact.predict(features), ranker.predict(features))  # same model for LightGBM
    ranker.to_onnx()
    assert ranker.onnx_report["max_abs_diff"] <= 1e-5
    sample = export_sample(np.concatenate([features[:256], boundary_rows(ranker.booster)]), rows=512)
    with pytest.raises(ValueError, match="differ from predict"):
        validate_export(ranker, convert(ranker.booster, 2), sample)


def test_zero_as_missing_is_refused_at_export() -> None:
    rng = np.random.default_rng(0)
    features = np.where(rng.random((2000, 1)) < 0.5, 0.0, rng.normal(size=(2000, 1))).astype(np.float32)
    labels = (features[:, 0] == 0).astype(np.float32)
    data = RankingData(features, labels, np.full(100, 20), ["mostly_zero"])
    ranker = LightGBMRanker(num_leaves=4, min_data_in_leaf=5, num_boost_round=3, extra_params={"zero_as_missing": True})
    ranker.fit(data, data)
    with pytest.raises(ValueError, match="zero as missing"):
        ranker.to_onnx()


def test_feature_names_are_made_lightgbm_safe(data) -> None:
    train, valid, _ = data
    names = ["ctx:hour", "item [pop]", 'a"b', "plain"]
    ranker = LightGBMRanker(num_boost_round=5, **{k: v for k, v in SMALL.items() if k != "num_boost_round"})
    ranker.fit(*(RankingData(d.features, d.labels, d.groups, names) for d in (train, valid)))
    assert ranker.booster.feature_name() == ["ctx_hour", "item__pop_", "a_b", "plain"]
    assert ranker.feature_names == names and ranker.predict(train.features[:3]).shape == (3,)
    with pytest.raises(ValueError, match="coincide"):
        LightGBMRanker().fit(
            *(RankingData(d.features, d.labels, d.groups, ["a:b", "a_b", "c", "d"]) for d in (train, valid))
        )


def test_bad_arguments_are_refused(data) -> None:
    with pytest.raises(ValueError, match=r"ranker\.objective"):
        LightGBMRanker(objective="regression")
    with pytest.raises(ValueError, match=r"extra_params\.num_leaves"):
        LightGBMRanker(extra_params={"num_leaves": 3})
    with pytest.raises(ValueError, match="early_stopping_rounds"):
        LightGBMRanker(early_stopping_rounds=0)
    with pytest.raises(ValueError, match="not fitted"):
        LightGBMRanker().predict(data[0].features)
    with pytest.raises(ValueError, match="names differ"):
        LightGBMRanker().fit(data[0], RankingData(data[1].features, data[1].labels, data[1].groups, list("abcd")))


def test_wrong_width_is_refused(fitted) -> None:
    with pytest.raises(ValueError, match=r"expects \(N, 4\)"):
        fitted[0].predict(np.zeros((2, 3), np.float32))


def test_config_builds_the_default_ranker() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    ranker = instantiate(OmegaConf.load(CONFIG))
    assert isinstance(ranker, LightGBMRanker)
    assert ranker.params == LightGBMRanker().params and ranker.num_boost_round == 500


def test_a_rank_prior_is_corrected_not_replaced() -> None:
    """With few training queries the trees alone cannot rebuild a strong channel's order; on top of that
    order (``base_rank``) they keep it and fix what a second feature knows. Served = trained to 1e-5."""
    rng = np.random.default_rng(5)

    def queries(count: int) -> RankingData:
        strong = rng.normal(size=(count, LENGTH)).astype(np.float32)  # a channel's score, mostly right
        hint = rng.normal(size=(count, LENGTH)).astype(np.float32)
        utility = strong + 0.5 * hint + 0.2 * rng.normal(size=(count, LENGTH))
        labels = np.zeros((count, LENGTH), np.float32)
        labels[np.arange(count), utility.argmax(axis=1)] = 1.0
        rank = np.argsort(np.argsort(-strong, axis=1), axis=1).astype(np.float32)  # 0 = the channel's best
        rank[rng.random(rank.shape) < 0.05] = np.nan  # not retrieved by that channel
        features = np.stack([rank.ravel(), hint.ravel()], axis=1)
        return RankingData(features, labels.ravel(), np.full(count, LENGTH), ["ch_rank", "hint"])

    train, valid, test = queries(40), queries(40), queries(400)
    channel_order = group_ndcg(-np.nan_to_num(test.features[:, 0], nan=LENGTH), test.labels, test.groups)
    plain = LightGBMRanker(early_stopping_rounds=10, **SMALL)
    plain.fit(train, valid)
    based = LightGBMRanker(early_stopping_rounds=10, base_rank="ch_rank", base_weight=1.0, **SMALL)
    based.fit(train, valid)
    with_prior = group_ndcg(based.predict(test.features), test.labels, test.groups)
    alone = group_ndcg(plain.predict(test.features), test.labels, test.groups)
    assert with_prior > max(channel_order, alone) + 0.03, (with_prior, channel_order, alone)
    served = RankerModel(based.to_onnx(), ["ch_rank", "hint"], base=based.base)
    np.testing.assert_allclose(served.score(test.features), based.predict(test.features), atol=1e-5)
    with pytest.raises(ValueError, match="base_rank='nope'"):
        LightGBMRanker(base_rank="nope", **SMALL).fit(train, valid)
