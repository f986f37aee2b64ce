"""The two-stage recipe: it beats its best channel where context matters, it never reads a test target, and the
served bundle rebuilds exactly the features the ranker was trained on."""

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

pytest.importorskip("lightgbm")

from rectorch.ranking.channels import CovisitChannel, PopularityChannel, RunChannel
from rectorch.ranking.lightgbm_ranker import LightGBMRanker
from rectorch.ranking.pipeline import TwoStage
from rectorch.ranking.queries import StageQueries
from rectorch.ranking.saved import read_ranking
from rectorch.serving.features import ItemStats
from rectorch.training.two_stage import train_two_stage

MODEL_FREE = ["~two_stage.channels.sasrec", "logger=none"]


def test_two_stage_beats_its_best_channel_where_context_matters(compose_train) -> None:
    """Planted hour-of-day and freshness effects: only the ranker sees the request's hour and the items' age."""
    cfg = compose_train("experiment=two_stage_synthetic", *MODEL_FREE, "two_stage.ablation=true", small=False)
    results = train_two_stage(cfg)
    best_channel = max(c["test"]["ndcg@10"] for c in results["channels"].values())
    assert results["test"]["ndcg@10"] >= 1.10 * best_channel, (results["test"]["ndcg@10"], best_channel)
    assert results["test"]["hr@10"] <= results["test"]["candidate_recall@300"] + 1e-9  # never above the ceiling
    without_context = results["ablation"]["without_context"]["ndcg@10"]
    assert without_context <= 0.98 * results["test"]["ndcg@10"], (without_context, results["test"]["ndcg@10"])
    assert results["ablation"]["without_item"]["ndcg@10"] <= 0.97 * results["test"]["ndcg@10"]  # item age: freshness
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert set(saved["channels"]) == {"covisit", "popular"} and saved["protocol"]["ranking"] == "full"


def test_privacy_is_refused_for_a_whole_pipeline(compose_train) -> None:
    cfg = compose_train("experiment=two_stage_synthetic", *MODEL_FREE, "privacy=dp")
    with pytest.raises(ValueError, match=r"privacy=dp trains one model"):
        train_two_stage(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def _pipeline() -> TwoStage:
    channels = {"covisit": CovisitChannel("covisit", n=60), "popular": PopularityChannel("popular", n=30)}
    ranker = LightGBMRanker(num_boost_round=60, early_stopping_rounds=10, min_data_in_leaf=20)
    return TwoStage(channels, ranker, max_candidates=80, recall_ns=(80,))


def test_the_ranker_never_reads_a_test_target(compose_train) -> None:
    """Replacing every test target changes the test metrics and nothing fitted or selected."""
    cfg = compose_train("data=synthetic_context")
    evaluation = instantiate(cfg.evaluation)
    runs = []
    for scramble in (False, True):
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        split = datamodule.split
        if scramble:
            rng = np.random.default_rng(1)
            split.test.targets.items[:] = rng.integers(
                1, datamodule.dataset.num_items + 1, len(split.test.targets.items)
            )
        pipeline = _pipeline()
        result = pipeline.fit_evaluate(datamodule.dataset, split, datamodule.context, evaluation)
        probe = np.random.default_rng(2).normal(size=(500, len(result.builder.names))).astype(np.float32)
        runs.append((result, result.ranker.predict(probe)))
    (clean, clean_scores), (scrambled, scrambled_scores) = runs
    np.testing.assert_array_equal(clean_scores, scrambled_scores)
    assert clean.metrics["val"] == scrambled.metrics["val"]
    assert clean.metrics["ranker"]["best_iteration"] == scrambled.metrics["ranker"]["best_iteration"]
    assert clean.stats.to_bytes() == scrambled.stats.to_bytes()
    assert clean.metrics["test"]["ndcg@10"] != scrambled.metrics["test"]["ndcg@10"]


@pytest.fixture(scope="module")
def served_two_stage(tmp_path_factory):
    """A two-stage run with a small SASRec channel, trained by the recipe, and its exported bundle."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rectorch.export.pipeline import export_run
    from rectorch.export.ranking import two_stage_parts
    from rectorch.resolvers import config_dir
    from tests.conftest import SMALL_DATA

    root = tmp_path_factory.mktemp("two_stage")
    overrides = [
        *SMALL_DATA,
        f"paths.log_dir={root}/logs",
        "experiment=two_stage_synthetic",
        "two_stage.channels.sasrec.train=['model=sasrec','trainer.max_epochs=2']",
        "two_stage.max_candidates=150",
        "two_stage.recall_ns=[150]",
        "ranker.num_boost_round=40",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=overrides)
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(root / "run")
        results = train_two_stage(cfg)
        onnx, quantize, index = (
            instantiate(compose(config_name="export").export[k], _convert_="all") for k in ("onnx", "quantize", "index")
        )
    run, extra = two_stage_parts(root / "run")
    extra["metric"] = "ip"
    bundle = root / "bundle"
    export_run(run, bundle, onnx, quantize, index, **extra)
    return cfg, results, bundle


def test_served_features_equal_the_training_features(served_two_stage) -> None:
    """Same user, same candidates: the torch-free bundle builds the training feature rows (ANN scores via ONNX)."""
    from rectorch.serving.recommender import Recommender

    cfg, _, bundle = served_two_stage
    saved = read_ranking(Path(cfg.paths.output_dir))
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    dataset, context = datamodule.dataset, datamodule.context
    stats = ItemStats.from_bytes(saved.file("features.npz"))
    described = {c["name"]: c for c in saved.channels}
    channels = {
        "sasrec": RunChannel("sasrec", run=described["sasrec"]["run_dir"], n=described["sasrec"]["n"]),
        "covisit": CovisitChannel("covisit", n=described["covisit"]["n"], anchors=described["covisit"]["anchors"]),
        "popular": PopularityChannel("popular", n=described["popular"]["n"]),
    }
    pipeline = TwoStage(channels, None, max_candidates=saved.record["builder"]["max_candidates"], recall_ns=(150,))
    queries = StageQueries.from_split(datamodule.split, "test").subset(np.arange(25))
    training, _ = pipeline.stage_data(queries, context, stats, pipeline.builder(stats))
    served = Recommender.from_bundle(bundle)
    names = saved.feature_names
    score_columns = [i for i, name in enumerate(names) if name == "sasrec_score"]
    offsets = training.data.offsets
    for i in range(len(training.queries)):
        start, end = training.queries.history.indptr[i], training.queries.history.indptr[i + 1]
        history = [str(x) for x in dataset.item_ids[training.queries.history.items[start:end]]]
        times = training.queries.history.timestamps[start:end].tolist()
        ranked = served.explain(history=history, now=float(training.queries.now[i]), history_times=times)
        np.testing.assert_array_equal(ranked.rows, training.merged[i].rows)
        expected = training.data.features[offsets[i] : offsets[i + 1]]
        others = [c for c in range(len(names)) if c not in score_columns]
        np.testing.assert_array_equal(ranked.features[:, others], expected[:, others])
        np.testing.assert_allclose(ranked.features[:, score_columns], expected[:, score_columns], rtol=1e-4, atol=1e-4)


def test_the_bundle_answers_with_channel_and_ranker_scores(served_two_stage) -> None:
    from rectorch.serving.recommender import Recommender

    cfg, results, bundle = served_two_stage
    served = Recommender.from_bundle(bundle)
    answer = served.recommend(history=["1", "2", "3"], k=10, now=1_600_000_000.0)
    assert len(answer.items) == 10 and len(answer.stage_scores) == 10
    assert all("ranker" in stages for stages in answer.stage_scores)
    assert {source for source in answer.sources} <= {"sasrec", "covisit", "popular"}
    ranker_scores = [stages["ranker"] for stages in answer.stage_scores]
    assert ranker_scores == sorted(ranker_scores, reverse=True)  # no MMR or exploration: ranker order
    assert results["channels_trained"] == ["sasrec"]
    assert served.manifest.ranking["features"] == read_ranking(Path(cfg.paths.output_dir)).feature_names
    # the similarity features read the index's vectors: the bundle does not hold them twice
    assert served.manifest.ranking["similarity_vectors"] == "index"
    assert ItemStats.from_bytes((bundle / "features.npz").read_bytes()).vectors is None
    assert served.ranking.stats.vectors is not None
