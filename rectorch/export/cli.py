"""``rectorch-export run_dir=<training run>``: the Hydra entry point around :func:`export_run`."""

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rectorch.resolvers import CONFIG_PATH, register_resolvers

register_resolvers()
log = logging.getLogger(__name__)


def quiet_export_console() -> None:
    """Progress and real warnings only: the ONNX rewriter logs one INFO line per initializer it touches, the
    exporter one warning per torchvision operator it cannot register (none is used), faiss one line per
    instruction-set build it does not find and per ground-truth search."""
    for name in ("onnx_ir", "onnxscript", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export(cfg: DictConfig) -> Path:
    """Rebuild the run named by ``cfg``, write its bundle, log it to MLflow; returns the bundle dir."""
    from rectorch.export.pipeline import export_run, log_bundle
    from rectorch.export.ranking import two_stage_parts
    from rectorch.export.web import WEB_DIR, runtime_files, write_web_bundle
    from rectorch.ranking.saved import RANKING_DIR, RANKING_FILE
    from rectorch.runs import load_run
    from rectorch.serving.settings import recommend_settings

    if bool(cfg.run_dir) == bool(cfg.mlflow_run_id):
        raise ValueError("give exactly one of run_dir=<training run dir> or mlflow_run_id=<id>")
    two_stage = bool(cfg.run_dir) and (Path(cfg.run_dir) / RANKING_DIR / RANKING_FILE).is_file()
    extra: dict = {}
    if two_stage:  # the ranker over its run channel's candidates
        run, extra = two_stage_parts(cfg.run_dir, tracking_uri=cfg.paths.mlflow_uri)
        name = f"two_stage-{run.spec.name}-{Path(cfg.run_dir).resolve().name}"
    else:
        run = load_run(cfg.run_dir or cfg.mlflow_run_id, tracking_uri=cfg.paths.mlflow_uri)
        name = f"{run.family}-{run.spec.name}-{run.run_dir.name}"
    bundle_dir = Path(cfg.bundle_dir or Path(cfg.paths.export_dir) / name)
    settings = {key: instantiate(cfg.export[key], _convert_="all") for key in ("onnx", "quantize", "index")}
    target = instantiate(cfg.export.target, _convert_="all")
    if target.kind == "web":  # fail before the export, not after it
        if two_stage:
            raise ValueError("export/target=web serves retrieval only; this run has a ranking stage")
        runtime_files(target.runtime_dir)
    manifest = export_run(
        run,
        bundle_dir,
        **settings,
        metric=extra.pop("metric", cfg.metric),
        **extra,
        quality_users=cfg.quality_users,
        created_at_feature=cfg.created_at_feature,
        available_feature=cfg.available_feature,
        serving=recommend_settings(overrides=OmegaConf.to_container(cfg.serving), where="export", prefix="serving."),
    )
    if target.kind == "web":
        print(f"rectorch-export: wrote the web bundle {write_web_bundle(bundle_dir, bundle_dir / WEB_DIR, target)}")
    run_id = cfg.mlflow_run_id or run.mlflow_run_id
    if two_stage:
        run_id = json.loads((Path(cfg.run_dir) / "metrics.json").read_text()).get("mlflow_run_id")
    if cfg.log_to_mlflow and run_id:
        # a run dir logs to the store it was trained with; a run id to the store it was fetched from
        store = cfg.paths.mlflow_uri if cfg.mlflow_run_id else run.config.paths.mlflow_uri
        log_bundle(bundle_dir, run_id, store)
    quality = manifest.quantization
    index = manifest.index
    log.info("served %s (%s); index %s %s", manifest.precision, quality["reason"], index["factory"], index["recall"])
    print(f"rectorch-export: wrote {bundle_dir}")
    return bundle_dir


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    quiet_export_console()
    try:
        export(cfg)
    except (ValueError, FileNotFoundError) as error:
        print(f"rectorch-export: error: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
