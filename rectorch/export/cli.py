"""``rectorch-export run_dir=<training run>``: the Hydra entry point around :func:`export_run`."""

import logging
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from rectorch.resolvers import CONFIG_DIR, register_resolvers

register_resolvers()
log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> Path:
    """Rebuild the run named by ``cfg``, write its bundle, log it to MLflow; returns the bundle dir."""
    from rectorch.export.pipeline import export_run, log_bundle
    from rectorch.export.run import download_run, load_run

    if bool(cfg.run_dir) == bool(cfg.mlflow_run_id):
        raise ValueError("give exactly one of run_dir=<training run dir> or mlflow_run_id=<id>")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    if run_dir is None:
        run_dir = download_run(cfg.mlflow_run_id, cfg.paths.mlflow_uri, Path(tempfile.mkdtemp(prefix="rectorch-run-")))
    run = load_run(run_dir)
    name = f"{type(run.model).__name__.removesuffix('Module').lower()}-{run.datamodule.spec.name}-{run.run_dir.name}"
    bundle_dir = Path(cfg.bundle_dir or Path(cfg.paths.root_dir) / "export" / name)
    settings = {key: instantiate(cfg.export[key], _convert_="all") for key in ("onnx", "quantize", "index")}
    manifest = export_run(
        run,
        bundle_dir,
        **settings,
        metric=cfg.metric,
        quality_users=cfg.quality_users,
        created_at_feature=cfg.created_at_feature,
        available_feature=cfg.available_feature,
    )
    run_id = cfg.mlflow_run_id or run.mlflow_run_id
    if cfg.log_to_mlflow and run_id:
        log_bundle(bundle_dir, run_id, run.cfg.paths.mlflow_uri)
    quality = manifest.quantization
    index = manifest.index
    log.info("served %s (%s); index %s %s", manifest.precision, quality["reason"], index["factory"], index["recall"])
    print(f"rectorch-export: wrote {bundle_dir}")
    return bundle_dir


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        export(cfg)
    except (ValueError, FileNotFoundError) as error:
        print(f"rectorch-export: error: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
