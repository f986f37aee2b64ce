"""Every model family exports, validates, quantizes, indexes and serves from its bundle."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rectorch.export.cli import export
from rectorch.export.index import IndexSettings
from rectorch.export.onnx_export import ExportValidationError, OnnxSettings
from rectorch.export.pipeline import export_run
from rectorch.export.quantize import QuantizeSettings
from rectorch.runs import load_run
from rectorch.serving import Recommender, read_manifest
from tests.export.conftest import MODELS, compose_config

BUNDLE_FILES = {"manifest.json", "query_encoder.onnx", "items.faiss", "item_ids.json", "items.npz"}


def export_cli(run_dir: Path, bundle_dir: Path, *overrides: str) -> Path:
    cfg = compose_config("export", [f"run_dir={run_dir}", f"bundle_dir={bundle_dir}", *overrides], bundle_dir.parent)
    return export(cfg)


@pytest.fixture(scope="module")
def exported(train_run: Callable[..., Path]) -> Callable[[str], Path]:
    """``exported(model) -> bundle dir`` through the composed ``conf/export.yaml`` (cached per model)."""
    cache: dict[str, Path] = {}

    def _export(model: str) -> Path:
        if model not in cache:
            run_dir = train_run(model)
            cache[model] = export_cli(run_dir, run_dir.parent / "bundle", "quality_users=100")
        return cache[model]

    return _export


@pytest.mark.parametrize("model", MODELS)
def test_every_family_exports_and_serves(train_run: Callable[..., Path], exported: Callable, model: str) -> None:
    bundle = exported(model)
    assert {p.name for p in bundle.iterdir()} >= BUNDLE_FILES
    manifest = read_manifest(bundle)
    run = load_run(train_run(model))
    assert manifest.family == type(run.model).__name__
    assert manifest.validation["max_abs_diff"] <= 1e-4
    assert manifest.index["recall"]["recall@10"] == pytest.approx(1.0)
    assert manifest.precision in manifest.encoders and manifest.precision_reason
    assert manifest.num_items == run.spec.num_items
    assert manifest.source["test"]["ndcg@10"] == pytest.approx(manifest.quantization["precisions"]["fp32"]["ndcg@10"])
    assert not list(bundle.glob("*.pkl")) and not list(bundle.glob("*.pt"))

    recommender = Recommender.from_bundle(bundle)
    history = [str(i) for i in run.catalog.item_ids[1:6]]
    result = recommender.recommend(history, k=5)
    assert len(result.items) == 5 and not set(result.items) & set(history)


def served_top10(bundle: Path, precision: str, histories: list[np.ndarray]) -> np.ndarray:
    """Top-10 index rows that the bundle's ``precision`` encoder retrieves, one user at a time."""
    recommender = Recommender.from_bundle(bundle, precision=precision)
    return np.vstack([recommender.index.search(recommender.encoder.encode([h], [None]), 10)[1] for h in histories])


def test_int8_report_on_a_transformer(train_run: Callable[..., Path], exported: Callable) -> None:
    """The reported fp32-vs-int8 overlap and NDCG loss are what the bundle's encoders serve."""
    bundle = exported("sasrec")
    manifest = read_manifest(bundle)
    report = manifest.quantization
    assert set(report["precisions"]) == {"fp32", "int8"}
    assert report["compression"] > 2.0  # tiny model; the ≥ 3x bar is measured on ML-1M
    histories = []
    for batch in load_run(train_run("sasrec")).datamodule().test_dataloader():  # the report's: ≥ quality_users
        histories += [row[row > 0].numpy() for row in batch["query"]["history"]]
        if len(histories) >= 100:
            break
    fp32, int8 = served_top10(bundle, "fp32", histories), served_top10(bundle, "int8", histories)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(fp32, int8, strict=True)])
    # padded batches there, one unpadded user at a time here: at most one near-tie item may flip
    assert report["top10_overlap"] == pytest.approx(overlap, abs=0.1 / len(histories) + 1e-9)
    ndcg = {p: report["precisions"][p]["ndcg@10"] for p in ("fp32", "int8")}
    assert report["relative_ndcg_loss"] == pytest.approx((ndcg["fp32"] - ndcg["int8"]) / ndcg["fp32"])
    assert (manifest.precision == "int8") == (report["relative_ndcg_loss"] <= 0.01)


def test_validation_failure_is_loud(train_run: Callable[..., Path], tmp_path: Path) -> None:
    run = load_run(train_run("ease"))
    with pytest.raises(ExportValidationError, match="differs from torch"):
        export_run(run, tmp_path / "b", OnnxSettings(atol=-1.0), QuantizeSettings(), IndexSettings())
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_ann_index_is_tuned_to_target_recall(train_run: Callable[..., Path], tmp_path: Path) -> None:
    bundle = export_cli(
        train_run("popularity"), tmp_path / "ivf", "export.index.flat_max_items=10", "export/quantize=none"
    )
    manifest = read_manifest(bundle)
    assert manifest.index["factory"].startswith("IVF")
    assert manifest.index["target_reached"] and min(manifest.index["recall"].values()) >= 0.95
    assert manifest.index["search_params"].startswith("nprobe=")
    assert manifest.encoders == {"fp32": "query_encoder.onnx"} and manifest.precision == "fp32"


def test_bundle_is_logged_to_the_mlflow_run(train_run: Callable[..., Path], tmp_path: Path) -> None:
    import mlflow

    run_dir = train_run("ease", "mlflow")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    export_cli(run_dir, tmp_path / "bundle", "quality_users=50")
    client = mlflow.MlflowClient(load_run(run_dir).config.paths.mlflow_uri)
    logged = {Path(a.path).name for a in client.list_artifacts(metrics["mlflow_run_id"], "bundle")}
    assert logged >= BUNDLE_FILES


def test_export_needs_exactly_one_run(tmp_path: Path) -> None:
    cfg = compose_config("export", [], tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        export(cfg)
    with pytest.raises(FileNotFoundError, match=r"run\.json not found"):
        export(compose_config("export", [f"run_dir={tmp_path}"], tmp_path))


def test_query_vectors_match_between_bundle_and_torch(train_run: Callable[..., Path], exported: Callable) -> None:
    import torch

    run = load_run(train_run("sasrec"))
    recommender = Recommender.from_bundle(exported("sasrec"), precision="fp32")
    batch = next(iter(run.datamodule().test_dataloader()))["query"]["history"][:4]
    with torch.no_grad():
        expected = run.model.encode_query(history=batch).numpy()
    histories = [row[row > 0].numpy() for row in batch]
    np.testing.assert_allclose(recommender.encoder.encode(histories, [None] * 4), expected, atol=1e-4)


def test_two_tower_item_bias_exports_as_an_inner_product_bundle(train_run: Callable[..., Path]) -> None:
    import torch

    run_dir = train_run("two_tower", "none", "model.item_tower.item_bias=true")
    bundle = export_cli(run_dir, run_dir.parent / "bundle", "quality_users=100")
    model = load_run(run_dir).model
    manifest = read_manifest(bundle)
    assert manifest.metric == "ip"  # the bias coordinate makes item vectors non-unit
    recommender = Recommender.from_bundle(bundle, precision="fp32")
    history = np.arange(1, 6)
    query = recommender.encoder.encode([history], [None])  # model item ids
    with torch.no_grad():
        unknown = {
            name: torch.zeros((1, spec.width) if spec.kind == "multi" else (1,)).long()
            for name, spec in model.spec.user_features.items()
        }
        padded = torch.zeros(1, model.view.history_len, dtype=torch.long)
        padded[0, -len(history) :] = torch.as_tensor(history)
        expected = model.encode_query(padded, user_features=unknown)
        table = model.item_vectors()[1:]
    np.testing.assert_allclose(query, expected.numpy(), atol=1e-4)
    assert query[0, -1] == pytest.approx(1.0)
    _, rows = recommender.index.search(query, 10)
    assert rows[0].tolist() == (expected @ table.T)[0].topk(10).indices.tolist()
