"""``export_run``: a trained run → validated ONNX (fp32 + int8) + tuned FAISS index + manifest, in one bundle."""

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from rectorch.evaluation import RankingEvaluator
from rectorch.export.index import IndexSettings, build_index, choose_factory, tune_index
from rectorch.export.onnx_export import OnnxSettings, export_onnx, fit_to_specs, validate
from rectorch.export.quantize import QuantizeSettings, evaluator_score, quality_report, quantize_int8
from rectorch.export.serving_queries import serving_feeds
from rectorch.runs import Run
from rectorch.serving.bundle import write_bundle
from rectorch.serving.catalog import Catalog
from rectorch.serving.encoder import session
from rectorch.serving.manifest import InputSpec, Manifest
from rectorch.serving.settings import RecommendSettings

log = logging.getLogger(__name__)


def _eval_inputs(datamodule: Any, stage: str, specs: list[InputSpec], users: int | None) -> tuple[list, list, list]:
    """Query inputs (exported shapes), targets and seen items of the first ``users`` users of ``stage``."""
    inputs, targets, seen, count = [], [], [], 0
    for batch in datamodule.eval_dataloader(stage):
        inputs.append(fit_to_specs(batch["query"], specs))
        targets.append(batch["targets"])
        seen.append(batch["seen"])
        count += len(batch["targets"])
        if users is not None and count >= users:
            break
    return inputs, targets, seen


def _short(batches: list[dict[str, np.ndarray]], specs: list[InputSpec]) -> list[dict[str, np.ndarray]]:
    """The first batch cut to its newest 8 history items, checking a dynamic length below the maximum."""
    dynamic = [spec.name for spec in specs if spec.max_len is not None]
    if not dynamic or not batches:
        return []
    return [{name: array[:, -8:] if name in dynamic else array for name, array in batches[0].items()}]


def catalog_of(run: Run, created_at_feature: str | None, available_feature: str | None) -> Catalog:
    """Item ids (row r = model item r + 1), training popularity and the filter metadata, from the run's catalog."""
    catalog = run.catalog
    columns = catalog.item_features.columns
    for name in (created_at_feature, available_feature):
        if name is not None and name not in columns:
            raise ValueError(f"item feature {name!r} is not in the run's catalog (it has {sorted(columns)})")
    category = catalog.item_category
    return Catalog(
        ids=[str(i) for i in catalog.item_ids[1:]],
        popularity=catalog.item_popularity[1:],
        category=np.zeros(catalog.num_items, np.int32) if category is None else category[1:],
        categories=catalog.categories,
        created_at=columns[created_at_feature][1:].astype(np.float64) if created_at_feature else None,
        available=columns[available_feature][1:].astype(bool) if available_feature else None,
    )


def item_table(model: torch.nn.Module, metric: str) -> tuple[torch.Tensor, str]:
    """Item vectors ``(num_items + 1, D)`` and the metric: ``cosine`` when already unit-norm (or asked for)."""
    with torch.no_grad():
        table = model.item_vectors().detach().float().cpu()
    norms = table[1:].norm(dim=1)
    if metric == "auto":
        metric = "cosine" if bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-3)) else "ip"
    if metric == "cosine":
        table = torch.nn.functional.normalize(table, dim=1)
    return table, metric


def indexed(
    vectors: np.ndarray, fp32: bytes, inputs: list[dict[str, np.ndarray]], metric: str, settings: IndexSettings
) -> tuple[faiss.Index, dict[str, Any]]:
    """The item index chosen by catalog size, tuned on the real test-split query vectors."""
    runtime = session(fp32)
    queries = np.vstack([runtime.run(None, batch)[0] for batch in inputs]).astype(np.float32)
    if metric == "cosine":
        queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    factory = choose_factory(*vectors.shape, settings)
    index = build_index(vectors, factory, settings)
    info = {"factory": factory, **tune_index(index, vectors, queries, settings)}
    log.info("index %s: %s", factory, info["recall"])
    return index, info


def export_run(
    run: Run,
    bundle_dir: Path,
    onnx: OnnxSettings,
    quantize: QuantizeSettings,
    index: IndexSettings,
    metric: str = "auto",
    quality_users: int | None = None,
    created_at_feature: str | None = None,
    available_feature: str | None = None,
    serving: RecommendSettings | None = None,
    ranking: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    extra_source: dict[str, Any] | None = None,
) -> Manifest:
    """Export, validate, quantize, index and write the bundle of one trained run (see ``conf/export.yaml``).

    Validation, index tuning and the int8 report query the run's own validation and test users, so the
    run's data is re-prepared (from the cache when present) for them. With a ``ranking`` section (and its
    ``extra_files``), the bundle serves fp32: the ranker learned from the fp32 channel scores.
    """
    model = run.model
    datamodule = run.datamodule()
    examples = model.export_inputs()
    fp32, specs = export_onnx(model, examples, onnx)
    val_inputs, _, _ = _eval_inputs(datamodule, "val", specs, onnx.validation_users)
    validation = validate(model, fp32, val_inputs + _short(val_inputs, specs), onnx.atol)
    log.info("validation: %s", validation)

    table, metric = item_table(model, metric)
    test_inputs, targets, seen = _eval_inputs(datamodule, "test", specs, quality_users)
    faiss_index, index_info = indexed(table[1:].numpy(), fp32, test_inputs, metric, index)

    encoders = {"fp32": fp32}
    if quantize.enabled:
        calibration, _, _ = _eval_inputs(datamodule, "val", specs, quantize.calibration_users)
        encoders["int8"] = quantize_int8(fp32, serving_feeds(calibration, specs), quantize)
    evaluation = model.evaluation  # bound by run.datamodule()
    score = evaluator_score(lambda: RankingEvaluator.from_context(evaluation, datamodule.context), table, targets, seen)
    quality = quality_report(encoders, test_inputs, specs, score, faiss_index, quantize)
    if ranking:
        quality = {**quality, "served": "fp32", "reason": "the ranker was trained on the fp32 channel scores"}
    log.info("quantization: served %s (%s)", quality["served"], quality["reason"])
    settings = {"onnx": asdict(onnx), "quantize": asdict(quantize), "index": asdict(index)}
    return write_bundle(
        bundle_dir,
        family=type(model).__name__,
        encoders=encoders,
        inputs=specs,
        index=faiss_index,
        catalog=catalog_of(run, created_at_feature, available_feature),
        metric=metric,
        precision=quality["served"],
        precision_reason=quality["reason"],
        index_info=index_info,
        reports={
            "validation": validation,
            "quantization": {**quality, "settings": settings},
            "source": {**source(run), **(extra_source or {})},
        },
        serving=serving,
        ranking=ranking,
        extra_files=extra_files,
    )


def source(run: Run) -> dict[str, Any]:
    """Where the bundle came from: run dir, MLflow run, dataset, protocol, the run's test metrics and, for a
    DP-SGD run, the privacy budget its accountant counted (``metrics.json`` ``privacy``)."""
    metrics = run.metrics
    privacy = {"privacy": metrics["privacy"]} if metrics.get("privacy") else {}
    return {
        "run_dir": str(run.run_dir),
        "mlflow_run_id": run.mlflow_run_id,
        "model_family": run.family,
        "checkpoint": str(run.checkpoint),
        "dataset": run.spec.name,
        "dataset_fingerprint": run.record.data_fingerprint,
        "protocol": run.record.protocol,
        "test": {k: v for k, v in (metrics.get("test") or {}).items() if k.split("@")[0] in ("ndcg", "hr")},
        **privacy,
    }


def log_bundle(bundle_dir: Path, run_id: str, tracking_uri: str) -> None:
    """Attach the bundle directory to the training run's MLflow run under ``bundle/``, and tag the run with the
    manifest's sha256 (``bundle.manifest_sha256``: what ``rectorch-serve manifest_sha256=...`` pins)."""
    import mlflow

    from rectorch.serving.manifest import manifest_sha256

    client = mlflow.MlflowClient(tracking_uri)
    client.log_artifacts(run_id, str(bundle_dir), "bundle")
    client.set_tag(run_id, "bundle.manifest_sha256", manifest_sha256(bundle_dir))
