"""A finished run is a saved run: ``load_run`` gives back the same model, catalog and config, from its
directory or its MLflow run id, and refuses malformed or unsafe files with a message naming them."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rectorch.runs import RunRecord, load_run
from rectorch.training.train import train

OVERRIDES = ("model=two_tower", "trainer.max_epochs=1", "data.source.num_users=200", "data.source.num_items=80")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """One tracked two-tower run (features, catalog buffers): its dir, results and MLflow store URI."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rectorch.resolvers import config_dir

    root = tmp_path_factory.mktemp("saved")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[*OVERRIDES, f"paths.log_dir={root}/logs"])
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "run")
        cfg.trainer.enable_progress_bar = False
        del cfg.callbacks["progress_bar"]
    results = train(cfg)
    return root / "run", results, cfg.paths.mlflow_uri


def _scores(model: torch.nn.Module) -> torch.Tensor:
    """Scores of every item for two seeded example queries (the model's own export inputs)."""
    torch.manual_seed(0)
    with torch.no_grad():
        return model.score(**model.export_inputs())


def test_run_dir_holds_the_saved_run_files(saved_run) -> None:
    run_dir, results, _ = saved_run
    for name in ("run.json", "catalog.npz", "catalog.json", "metrics.json"):
        assert (run_dir / name).is_file(), name
    record = RunRecord.read(run_dir)
    assert record.family == "twotower" and record.protocol == results["protocol"]
    assert record.data_fingerprint == results["dataset_fingerprint"]
    assert (run_dir / record.checkpoint).is_file() and record.mlflow_run_id == results["mlflow_run_id"]
    assert record.config["model"]["_target_"] == "rectorch.models.two_tower.TwoTowerModule"
    assert "hydra" not in record.config


def test_load_run_rebuilds_the_trained_model_without_data(saved_run) -> None:
    run_dir, _, _ = saved_run
    run = load_run(run_dir)
    assert run.spec.num_items == 80 and run.family == "twotower" and not run.model.training
    # the catalog is the dataset's own: ids, and training popularity that sums to the training interactions
    datamodule = run.datamodule()
    assert list(run.catalog.item_ids) == list(datamodule.dataset.item_ids)
    assert np.array_equal(run.catalog.item_popularity, np.bincount(datamodule.split.train.items, minlength=81))
    assert run.catalog.item_category is not None and run.catalog.categories[0] == ""
    # the weights are the checkpoint's: a second load scores every item identically, a fresh model does not
    again = load_run(run_dir)
    assert torch.equal(_scores(run.model), _scores(again.model))
    from rectorch.runs.load import build_model

    fresh = build_model(run.config, run.spec).eval()
    assert not torch.allclose(_scores(fresh), _scores(run.model))


def test_load_run_by_mlflow_run_id_from_a_fresh_home(saved_run, tmp_path: Path, monkeypatch) -> None:
    run_dir, results, uri = saved_run
    monkeypatch.setenv("RECTORCH_HOME", str(tmp_path))
    run = load_run(results["mlflow_run_id"], tracking_uri=uri)
    assert run.run_dir == tmp_path / "logs" / "downloads" / results["mlflow_run_id"]
    local = load_run(run_dir)
    assert torch.equal(_scores(run.model), _scores(local.model))
    assert run.record.protocol == local.record.protocol


def test_unknown_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a run directory nor an MLflow run id"):
        load_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"run\.json not found"):
        load_run(tmp_path)


def _copy_run(saved: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(saved, dst)
    return dst


def test_malformed_files_are_named(saved_run, tmp_path: Path) -> None:
    run_dir, _, _ = saved_run
    broken = _copy_run(run_dir, tmp_path / "broken")
    (broken / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"run\.json is not valid JSON"):
        load_run(broken)
    record = json.loads((run_dir / "run.json").read_text())
    (broken / "run.json").write_text(json.dumps({**record, "schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version 99"):
        load_run(broken)
    (broken / "run.json").write_text(json.dumps(record))
    (broken / "catalog.npz").write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"catalog\.npz is not a readable catalog archive"):
        load_run(broken)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickled_payload_in_a_checkpoint_is_refused_not_executed(saved_run, tmp_path: Path) -> None:
    run_dir, _, _ = saved_run
    planted = _copy_run(run_dir, tmp_path / "planted")
    marker = tmp_path / "executed"
    payload = _Payload()
    payload.marker = str(marker)
    checkpoint = planted / RunRecord.read(planted).checkpoint
    state = torch.load(checkpoint, weights_only=True)
    state["callbacks"] = {"evil": payload}
    with open(checkpoint, "wb") as out:
        pickle.dump(state, out)  # what an attacker would hand over: a plain pickle with a reducer
    with pytest.raises(ValueError, match="not a loadable weights-only checkpoint"):
        load_run(planted)
    assert not marker.exists()
