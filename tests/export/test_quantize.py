"""int8 queries are per-user deterministic (alone = in a batch = padded); the int8 report scores what serving does."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

from rectorch.evaluation import RankingEvaluator
from rectorch.export.cli import export
from rectorch.export.onnx_export import OnnxSettings, export_onnx, fit_to_specs
from rectorch.export.pipeline import item_table
from rectorch.export.quantize import QuantizeSettings, evaluator_score, quantize_int8
from rectorch.export.serving_queries import requests_of, serving_encoder, serving_feeds
from rectorch.runs import load_run
from rectorch.serving import Recommender, read_manifest
from rectorch.serving.encoder import HISTORY_INPUT, build_feed
from rectorch.serving.manifest import InputSpec
from tests.export.conftest import compose_config

FAMILIES = ["sasrec", "bert4rec", "two_tower"]
TOL = 1e-6  # fp32 itself moves a query by ~2e-7 between padded and unpadded attention


@dataclass
class Encoder:
    """An exported run: fp32 ONNX, its input specs, calibration feeds, test users and item vectors."""

    fp32: bytes
    specs: list[InputSpec]
    calibration: list[dict[str, np.ndarray]]
    users: list[tuple[np.ndarray, dict[str, np.ndarray]]]
    items: np.ndarray


def _batches(datamodule, stage: str, specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    return [fit_to_specs(batch["query"], specs) for batch in datamodule.eval_dataloader(stage)]


@pytest.fixture(scope="module")
def exported(train_run: Callable[..., Path]) -> Callable[[str], Encoder]:
    """``exported(model) -> Encoder`` of the tiny trained run (cached per model)."""
    cache: dict[str, Encoder] = {}

    def _get(model: str) -> Encoder:
        if model not in cache:
            run = load_run(train_run(model))
            datamodule = run.datamodule()
            fp32, specs = export_onnx(run.model, run.model.export_inputs(), OnnxSettings())
            calibration = serving_feeds(_batches(datamodule, "val", specs), specs)
            users = [
                (history, features)
                for batch in _batches(datamodule, "test", specs)
                for history, features in zip(*requests_of(batch, specs), strict=True)
            ]
            items = run.model.item_vectors().detach()[1:].numpy()
            cache[model] = Encoder(fp32, specs, calibration, users, items)
        return cache[model]

    return _get


def _padded_feed(specs: list[InputSpec], history: np.ndarray, features: dict) -> dict[str, np.ndarray]:
    """One user's feed with the history left-padded to the encoder's full length."""
    feed = build_feed(specs, [history], [features])
    spec = next(s for s in specs if s.name == HISTORY_INPUT)
    length = spec.max_len or int(spec.shape[1])
    full = np.zeros((1, length), feed[HISTORY_INPUT].dtype)
    tail = history[-length:]
    full[0, length - len(tail) :] = tail
    feed[HISTORY_INPUT] = full
    return feed


def _top10(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :10]


def invariance(model: bytes, encoder: Encoder) -> dict[str, float]:
    """Largest relative change of a user's query, and users whose top-10 changes, vs the user encoded alone.

    ``batch``: all test users in one serving call (histories padded to the longest); ``padded``: each user
    alone with the history padded to the full length.
    """
    serving = serving_encoder(model, encoder.specs)
    alone = np.vstack([serving.encode([h], [f]) for h, f in encoder.users])
    batch = serving.encode([h for h, _ in encoder.users], [f for _, f in encoder.users])
    padded = np.vstack([serving.session.run(None, _padded_feed(encoder.specs, h, f))[0] for h, f in encoder.users])
    top = _top10(alone, encoder.items)
    found = {}
    for name, queries in (("batch", batch), ("padded", padded)):
        relative = np.linalg.norm(queries - alone, axis=1) / np.linalg.norm(alone, axis=1)
        found[name] = float(relative.max())
        found[f"{name}_top10_changed"] = int((_top10(queries, encoder.items) != top).any(axis=1).sum())
    return found


def _per_tensor_dynamic(fp32: bytes, tmp: Path) -> bytes:
    """The former int8: onnxruntime's dynamic quantization (one activation scale per whole input tensor)."""
    (tmp / "fp32.onnx").write_bytes(fp32)
    quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
    quantize_dynamic(str(tmp / "pre.onnx"), str(tmp / "int8.onnx"), weight_type=QuantType.QInt8)
    return (tmp / "int8.onnx").read_bytes()


@pytest.mark.parametrize("model", FAMILIES)
def test_int8_query_is_the_same_alone_in_a_batch_and_padded(exported: Callable[[str], Encoder], model: str) -> None:
    encoder = exported(model)
    lengths = {len(history) for history, _ in encoder.users}
    spec = next(s for s in encoder.specs if s.name == HISTORY_INPUT)
    assert len(lengths) > 1 and min(lengths) < (spec.max_len or spec.shape[1])  # padding really happens
    found = invariance(quantize_int8(encoder.fp32, encoder.calibration), encoder)
    assert found["batch"] <= TOL and found["padded"] <= TOL, found
    assert found["batch_top10_changed"] == 0 and found["padded_top10_changed"] == 0, found


def test_per_tensor_dynamic_int8_fails_the_invariance_check(exported: Callable[[str], Encoder], tmp_path: Path) -> None:
    encoder = exported("sasrec")
    found = invariance(_per_tensor_dynamic(encoder.fp32, tmp_path), encoder)
    assert found["batch"] > 100 * TOL and found["padded"] > 100 * TOL, found
    assert invariance(encoder.fp32, encoder)["batch"] <= TOL  # fp32 passes the same check


def test_int8_report_scores_what_serving_answers(train_run: Callable[..., Path], tmp_path: Path) -> None:
    run_dir = train_run("sasrec")
    overrides = [f"run_dir={run_dir}", f"bundle_dir={tmp_path / 'bundle'}", "log_to_mlflow=false"]
    bundle = export(compose_config("export", overrides, tmp_path))
    manifest = read_manifest(bundle)
    report = manifest.quantization
    run = load_run(run_dir)
    datamodule = run.datamodule()
    batches = list(datamodule.eval_dataloader("test"))
    table, _ = item_table(run.model, manifest.metric)
    evaluation = run.evaluation()
    score = evaluator_score(
        lambda: RankingEvaluator.from_context(evaluation, datamodule.context),
        table,
        [batch["targets"] for batch in batches],
        [batch["seen"] for batch in batches],
    )
    for precision in ("fp32", "int8"):
        recommender = Recommender.from_bundle(bundle, precision=precision)
        vectors = []  # each user alone, as Recommender.recommend encodes one request
        for batch in batches:
            histories, features = requests_of(fit_to_specs(batch["query"], manifest.inputs), manifest.inputs)
            vectors.append(
                np.vstack([recommender.encoder.encode([h], [f]) for h, f in zip(histories, features, strict=True)])
            )
        served = score(precision, vectors)
        reported = report["precisions"][precision]
        assert served["ndcg@10"] == pytest.approx(reported["ndcg@10"], abs=1e-9)
        assert reported["alone_vs_batch"]["max_relative_diff"] <= TOL
        assert reported["alone_vs_batch"]["same_top10"] == 1.0
    assert report["precisions"]["int8"]["ndcg@10"] > 0


def test_int8_needs_calibration_data(exported: Callable[[str], Encoder]) -> None:
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(exported("sasrec").fp32, [])


def test_quantize_settings_reject_an_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"export\.quantize\.format must be one of \['qdq', 'qoperator'\]"):
        QuantizeSettings(format="dynamic")
