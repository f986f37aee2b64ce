"""Train on a cold-start split, then print and log the cold-item and new-user report.

    python scripts/cold_start_report.py experiment=two_tower_ml1m
    python scripts/cold_start_report.py experiment=two_tower_ml1m cold_start.run_dir=logs/runs/<run>

The split (``conf/cold_start.yaml``) holds out items and users entirely; ``train(cfg)`` trains and
tests on the warm part as usual, then the best checkpoint is scored by
``rectorch.evaluation.cold_start.cold_start_report``. With ``cold_start.run_dir`` an earlier run of
this script is scored again without training (its saved run is loaded with its own config). The
report is written as ``cold_start.json`` in the run directory and, when MLflow is on, attached to the
training run with its metrics.
"""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rectorch.evaluation.cold_start import cold_start_report, flat_metrics
from rectorch.resolvers import CONFIG_PATH, register_resolvers
from rectorch.runs import load_run
from rectorch.training.train import train

register_resolvers()


def log_to_mlflow(tracking_uri: str, run_id: str, report_path: Path, metrics: dict[str, float]) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    client.log_artifact(run_id, str(report_path))
    entries = [Metric(name.replace("@", ""), value, 0, 0) for name, value in metrics.items()]
    client.log_batch(run_id, metrics=entries)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="cold_start")
def main(cfg: DictConfig) -> None:
    run_dir = cfg.cold_start.get("run_dir")
    if run_dir is None:
        train(cfg)
    run = load_run(run_dir or cfg.paths.output_dir)
    output_dir, results = run.run_dir, run.metrics
    if run.record.protocol["split"] != "loo-cold":
        split = run.record.protocol["split"]
        raise SystemExit(f"{run.run_dir} was not trained on a cold-start split (its split: {split})")
    datamodule = run.datamodule()
    onboarding = (cfg.cold_start.onboarding_categories, cfg.cold_start.seed_items_per_category)
    report = cold_start_report(
        run.model, datamodule, run.model.evaluation, tuple(cfg.cold_start.known), cfg.cold_start.seed, onboarding
    )
    report_path = output_dir / "cold_start.json"
    report_path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if results["mlflow_run_id"] is not None:
        log_to_mlflow(cfg.paths.mlflow_uri, results["mlflow_run_id"], report_path, flat_metrics(report))


if __name__ == "__main__":
    main()
