"""RankerModel: scores like the model it was exported from, refuses models that are not rankers, loads no torch."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rectorch.serving.manifest import BundleError
from rectorch.serving.ranker import RankerModel

WEIGHTS = np.array([1.0, -2.0, 0.5], np.float32)
NAMES = ["a", "b", "c"]


def linear_ranker(weights: np.ndarray, flat: bool = False, nan_as_zero: bool = True, dtype: int = TensorProto.FLOAT):
    """ONNX ``features (N, F) → features · weights``, NaN cells read as 0; ``[N, 1]`` scores, or ``[N]`` when flat."""
    nodes = [
        helper.make_node("IsNaN", ["features"], ["missing"]),
        helper.make_node("Where", ["missing", "zero", "features"], ["filled"]),
        helper.make_node("MatMul", ["filled" if nan_as_zero else "features", "weights"], ["column"]),
    ]
    nodes.append(
        helper.make_node("Reshape", ["column", "flat"], ["scores"])
        if flat
        else helper.make_node("Identity", ["column"], ["scores"])
    )
    graph = helper.make_graph(
        nodes,
        "linear_ranker",
        [helper.make_tensor_value_info("features", dtype, ["N", len(weights)])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"] if flat else ["N", 1])],
        initializer=[
            numpy_helper.from_array(weights.reshape(-1, 1), "weights"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
            numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.mark.parametrize("flat", [False, True])
def test_scores_equal_the_graph_with_missing_cells(flat: bool) -> None:
    features = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    features[::4, 1] = np.nan
    scores = RankerModel(linear_ranker(WEIGHTS, flat), NAMES).score(features)
    assert scores.shape == (50,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, np.nan_to_num(features) @ WEIGHTS, atol=1e-6)
    assert RankerModel(linear_ranker(WEIGHTS, flat), NAMES).score(np.zeros((0, 3), np.float32)).shape == (0,)


def test_score_refuses_another_width() -> None:
    with pytest.raises(ValueError, match=r"scores \(C, 3\) features, got \(2, 4\)"):
        RankerModel(linear_ranker(WEIGHTS), NAMES).score(np.zeros((2, 4), np.float32))


def test_garbage_bytes_are_a_bundle_error() -> None:
    with pytest.raises(BundleError, match=r"ranker\.onnx is not a loadable ONNX model"):
        RankerModel(b"\x00not onnx at all", NAMES)


def test_a_width_other_than_the_feature_names_is_a_bundle_error() -> None:
    with pytest.raises(BundleError, match="has 3 columns, the bundle names 4 features"):
        RankerModel(linear_ranker(WEIGHTS), [*NAMES, "d"], name="ranker.onnx")


def test_models_that_are_not_rankers_are_bundle_errors() -> None:
    with pytest.raises(BundleError, match=r"tensor\(double\)"):
        RankerModel(_as_double_input(linear_ranker(WEIGHTS)), NAMES)
    with pytest.raises(BundleError, match="2 finite ones"):  # a ranker must read NaN as missing
        RankerModel(linear_ranker(WEIGHTS, nan_as_zero=False), NAMES)


def _as_double_input(model_bytes: bytes) -> bytes:
    model = onnx.load_from_string(model_bytes)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    cast = helper.make_node("Cast", ["features_double"], ["features"], to=TensorProto.FLOAT)
    model.graph.input[0].name = "features_double"
    model.graph.node.insert(0, cast)
    return model.SerializeToString()


def test_lightgbm_scores_survive_the_export() -> None:
    pytest.importorskip("lightgbm", reason="the [rank] extra (LightGBM) is not installed")
    pytest.importorskip("onnxmltools", reason="the [rank] extra (onnxmltools) is not installed")
    from rectorch.ranking.data import RankingData
    from rectorch.ranking.lightgbm_ranker import LightGBMRanker

    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 3)).astype(np.float32)
    features[rng.random(features.shape) < 0.2] = np.nan
    labels = (np.nan_to_num(features[:, 0]) + rng.normal(size=2000) > 1.0).astype(np.float32)
    data = RankingData(features, labels, np.full(100, 20), NAMES)
    ranker = LightGBMRanker(num_leaves=15, min_data_in_leaf=10, num_boost_round=40, early_stopping_rounds=40)
    ranker.fit(data, data)
    runtime = RankerModel(ranker.to_onnx(), NAMES)
    held_out = rng.normal(size=(500, 3)).astype(np.float32)
    held_out[rng.random(held_out.shape) < 0.3] = np.nan
    np.testing.assert_allclose(runtime.score(held_out), ranker.predict(held_out), atol=1e-5, rtol=0)


def test_importing_the_runtime_loads_no_torch_and_no_lightgbm() -> None:
    code = (
        "import sys, rectorch.serving.ranker\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightgbm', 'lightning', 'onnxmltools'})\n"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout
