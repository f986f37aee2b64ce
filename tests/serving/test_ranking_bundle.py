"""A bundle with a ranking stage, built from numpy and ``onnx.helper`` parts: it loads and serves without torch or
LightGBM, ranks by its ONNX ranker over the merged channels, and refuses a malformed ranking section."""

import json
import math
import subprocess
import sys
import time
import urllib.request

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rectorch.serving.bundle import flat_index, write_bundle
from rectorch.serving.features import FeatureBuilder, ItemStats, Request
from rectorch.serving.manifest import BundleError, InputSpec
from rectorch.serving.merge import merge_channels
from rectorch.serving.recommender import Recommender

from .conftest import DIM, HISTORY, NOW, NUM_ITEMS, mean_encoder, tiny_catalog
from .test_http import call, free_port

CHANNELS = [
    {"name": "ann", "kind": "ann", "n": 20},
    {"name": "covisit", "kind": "covisit", "n": 10, "anchors": 2},
    {"name": "popular", "kind": "popular", "n": 10},
]


def linear_ranker(weights: np.ndarray) -> bytes:
    """ONNX ``features (N, F) → (N,)``: missing cells count 0, then a dot product with ``weights``."""
    graph = helper.make_graph(
        [
            helper.make_node("IsNaN", ["features"], ["missing"]),
            helper.make_node("Where", ["missing", "zero", "features"], ["filled"]),
            helper.make_node("MatMul", ["filled", "weights"], ["scores"]),
        ],
        "linear_ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", len(weights)])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "weights"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def item_stats(vectors: np.ndarray, category: np.ndarray) -> ItemStats:
    rng = np.random.default_rng(3)
    sequences = [rng.choice(NUM_ITEMS, 12, replace=False) for _ in range(40)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in sequences])])
    times = NOW - 86400.0 * rng.uniform(1, 60, indptr[-1])
    return ItemStats.from_interactions(
        indptr, np.concatenate(sequences), np.sort(times), NUM_ITEMS, category=category, vectors=vectors
    )


def build_ranking_bundle(path, weight_of: dict[str, float], channels=CHANNELS, features=None):
    vectors, catalog = tiny_catalog()
    stats = item_stats(vectors, catalog.category)
    names = FeatureBuilder(stats, [c["name"] for c in channels]).names
    weights = np.asarray([weight_of.get(name, 0.0) for name in names], np.float32)
    table = np.vstack([np.zeros((1, DIM), np.float32), vectors])
    section = {
        "channels": channels,
        "features": names if features is None else features,
        "ranker": "ranker.onnx",
        "stats": "features.npz",
        "last_n": 5,
        "user_fields": [],
        "max_candidates": 40,
        "validation": {},
    }
    write_bundle(
        path,
        family="MeanEncoder",
        encoders={"fp32": mean_encoder(table, HISTORY)},
        inputs=[InputSpec("history", "int64", ["batch", HISTORY])],
        index=flat_index(vectors),
        catalog=catalog,
        ranking=section,
        extra_files={"ranker.onnx": linear_ranker(weights), "features.npz": stats.to_bytes()},
    )
    return path, stats, names, weights


def test_a_ranking_bundle_serves_in_ranker_order(tmp_path) -> None:
    """The ranker (here: the statistics' popularity only) decides the order; every item says which channel found it."""
    path, stats, _, _ = build_ranking_bundle(tmp_path / "b", {"item_log_popularity": 1.0})
    served = Recommender.from_bundle(path)
    answer = served.recommend(history=["i1", "i2", "i3"], k=8, now=NOW)
    popularity = stats.popularity
    rows = [served.catalog.row_of[item] for item in answer.items]
    assert [popularity[r] for r in rows] == sorted((popularity[r] for r in rows), reverse=True)
    assert not {"i1", "i2", "i3", "i5"} & set(answer.items)  # seen and unavailable items are filtered
    assert set(answer.sources) <= {"ann", "covisit", "popular"}
    for stages, row in zip(answer.stage_scores, rows, strict=True):
        assert math.isclose(stages["ranker"], math.log1p(popularity[row]), rel_tol=1e-5)


def test_the_served_features_are_the_shared_builder_s(tmp_path) -> None:
    """Recommender.explain = ann/covisit/popular lists → merge → FeatureBuilder, computed by hand here."""
    path, stats, names, weights = build_ranking_bundle(tmp_path / "b", {"ann_score": 1.0, "covisit_recent": 2.0})
    served = Recommender.from_bundle(path)
    history, times = ["i7", "i8", "i9"], [NOW - 3600.0, NOW - 1800.0, NOW - 60.0]
    ranked = served.explain(history=history, now=NOW, history_times=times)
    rows = np.asarray([served.catalog.row_of[i] for i in history])
    query = served.encoder.encode([rows + 1], [{}])
    ann_scores, ann_rows = served.index.search(query, NUM_ITEMS)
    seen = np.sort(rows)
    keep = ~np.isin(ann_rows[0], seen)
    ann = (ann_rows[0][keep][:20], ann_scores[0][keep][:20])
    covisit, weight = stats.covisit_neighbours(rows[-2:], 100)
    covisit_keep = ~np.isin(covisit, seen)
    popular = np.argsort(-stats.popularity, kind="stable")
    popular = popular[~np.isin(popular, seen)][:10]
    merged = merge_channels(
        [ann, (covisit[covisit_keep][:10], weight[covisit_keep][:10]), (popular, np.log1p(stats.popularity[popular]))],
        limit=40,
    )
    available = served.catalog.available[merged.rows]
    np.testing.assert_array_equal(ranked.rows, merged.rows[available])
    builder = FeatureBuilder(stats, ["ann", "covisit", "popular"])
    expected = builder.build(Request(rows, np.asarray(times), NOW), merged)[available]
    np.testing.assert_allclose(ranked.features, expected, rtol=1e-6)
    np.testing.assert_allclose(ranked.scores, np.nan_to_num(expected) @ weights, rtol=1e-5, atol=1e-6)
    assert names == builder.names


def test_context_and_times_reach_the_ranker(tmp_path) -> None:
    """``hour`` comes from ``now``; ``user_days_since_last`` from the history times."""
    path, _, _, _ = build_ranking_bundle(tmp_path / "b", {"hour": 1.0, "user_days_since_last": 1.0})
    served = Recommender.from_bundle(path)
    at_noon = NOW - NOW % 86400 + 12 * 3600
    ranked = served.explain(history=["i1"], now=at_noon, history_times=[at_noon - 2 * 86400])
    names = served.ranking.builder.names
    assert set(ranked.features[:, names.index("hour")]) == {12.0}
    np.testing.assert_allclose(ranked.features[:, names.index("user_days_since_last")], 2.0)
    np.testing.assert_allclose(ranked.scores, 14.0)
    with pytest.raises(ValueError, match="history_times holds 2 values for 1"):
        served.recommend(history=["i1"], history_times=[1.0, 2.0])
    with pytest.raises(ValueError, match="context field"):
        served.recommend(history=["i1"], context={"device": float("nan")})


@pytest.mark.parametrize(
    ("channels", "features", "message"),
    [
        ([{"name": "a", "kind": "ann", "n": 5}, {"name": "b", "kind": "ann", "n": 5}], None, "at most one ann"),
        ([{"name": "a", "kind": "graph", "n": 5}], None, "kind"),
        ([{"name": "c", "kind": "covisit", "n": 5}], None, "anchors"),
        (CHANNELS, ["ann_score", "unknown_feature"], "the bundle names 2 features"),
    ],
)
def test_a_malformed_ranking_section_is_refused(tmp_path, channels, features, message) -> None:
    with pytest.raises(BundleError, match=message):
        path, *_ = build_ranking_bundle(tmp_path / "b", {}, channels=channels, features=features)
        Recommender.from_bundle(path)


def test_a_tampered_ranker_is_refused(tmp_path) -> None:
    path, *_ = build_ranking_bundle(tmp_path / "b", {"item_log_popularity": 1.0})
    ranker = path / "ranker.onnx"
    ranker.write_bytes(ranker.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match=r"ranker\.onnx"):
        Recommender.from_bundle(path)


def test_the_http_answer_carries_stage_scores(tmp_path) -> None:
    path, *_ = build_ranking_bundle(tmp_path / "b", {"item_log_popularity": 1.0})
    port = free_port()
    command = [sys.executable, "-m", "rectorch.serving.cli", f"bundle={path}", f"port={port}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        body = {"history": ["i1", "i2"], "k": 5, "now": NOW, "history_times": [NOW - 10, NOW - 5], "context": {"d": 1}}
        status, answer = call(f"{url}/recommend", json.dumps(body).encode(), "POST")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert status == 200 and len(answer["items"]) == 5
    assert all("ranker" in item["stages"] for item in answer["items"])
    assert {item["source"] for item in answer["items"]} <= {"ann", "covisit", "popular"}
