"""Run names: ``<model>-<hash>`` where the hash covers everything a run computes with, and nothing it writes to."""

from rectorch.training.tracking import config_hash


def test_every_setting_that_changes_a_run_changes_its_name(compose_train) -> None:
    base = config_hash(compose_train())
    changed = {
        "seed": compose_train("seed=7"),
        "trainer": compose_train("trainer.max_epochs=3"),
        "callbacks": compose_train("callbacks.early_stopping.patience=3"),
        "evaluation": compose_train("evaluation.mask_seen=false"),
        "model": compose_train("model.encoder.dim=32"),
        "data": compose_train("data.source.seed=1"),
    }
    hashes = {name: config_hash(cfg) for name, cfg in changed.items()}
    assert base not in hashes.values(), hashes
    assert len(set(hashes.values())) == len(hashes), hashes


def test_where_a_run_writes_does_not_change_its_name(compose_train, tmp_path) -> None:
    here = compose_train()
    elsewhere = compose_train(f"paths.log_dir={tmp_path}/elsewhere", "logger=none")
    assert config_hash(here) == config_hash(elsewhere)
