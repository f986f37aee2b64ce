"""Failure corpus, configs and checkpoints: every bad value is one line naming its key, and nothing is written.

Each case runs ``train(cfg)`` on the composed config with the MLflow logger on and every output under
``tmp_path``: it must raise a ``ValueError`` (or ``FileNotFoundError``) whose message is one line naming
the key or file, and leave no run directory, no cache entry and no MLflow store behind. A few cases go
through the real ``rectorch-train`` process for the exit code and the printed line.
"""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rectorch.training.train import train

SMALL = ["data.source.num_users=200", "data.source.num_items=80"]

# (overrides, a fragment the one-line message must hold)
CONFIG_CASES = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["trainer.max_epochs=-5"], "trainer.max_epochs"),
    (["trainer.max_epochs=1.5"], "trainer.max_epochs"),
    (["trainer.max_epochs=true"], "trainer.max_epochs"),
    (["+trainer.min_epochs=-1"], "trainer.min_epochs"),
    (["+trainer.max_steps=abc"], "trainer.max_steps"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    (["+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    (["+trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["+trainer.limit_train_batches=-0.5"], "trainer.limit_train_batches"),
    (["+trainer.limit_val_batches=abc"], "trainer.limit_val_batches"),
    (["trainer.accelerator=tpu_nope"], "trainer"),
    (["trainer.devices=0"], "trainer"),
    (["+trainer.precision=7"], "trainer"),
    (["+trainer.no_such_option=1"], "trainer"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed"),
    (["seed=1.5"], "seed"),
    (["malloc_mmap_threshold_mb=abc"], "malloc_mmap_threshold_mb"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.batch_size=abc"], "data.batch_size"),
    (["data.batch_size=-3"], "data.batch_size"),
    (["data.batch_size=2.5"], "data.batch_size"),
    (["evaluation.batch_users=0"], "evaluation.batch_users"),
    (["evaluation.batch_users=abc"], "evaluation.batch_users"),
    (["evaluation.sampled_negatives=0"], "evaluation.sampled_negatives"),
    (["evaluation.sampled_negatives=abc"], "evaluation.sampled_negatives"),
    (["evaluation.ks=[0]"], "k=0"),
    (["evaluation.ks=[-5]"], "k=-5"),
    (["evaluation.ks=[]"], "ks is empty"),
    (["evaluation.ks=[ten]"], "evaluation"),
    (["evaluation.mask_seen=3"], "evaluation.mask_seen"),
    (["evaluation.seed=abc"], "evaluation.seed"),
    (["callbacks.early_stopping.patience=-1"], "callbacks.early_stopping.patience"),
    (["callbacks.early_stopping.patience=abc"], "callbacks.early_stopping.patience"),
    (["callbacks.early_stopping.mode=sideways"], "callbacks.early_stopping"),
    (["callbacks.model_checkpoint.mode=sideways"], "callbacks.model_checkpoint"),
    (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path"),
    (["init_from=/nonexistent/best.ckpt"], "init_from"),
    (["model.optimizer.lr=-1"], "model.optimizer"),
    (["model.optimizer.lr=abc"], "model.optimizer"),
    (["+model.optimizer.lrr=1"], "lrr"),
    (["+model.optimizer.weight_decay=-1"], "model.optimizer"),
    (["+model.optimizer.betas=[2.0,0.9]"], "model.optimizer"),
    (["model.encoder.dim=0"], "encoder.dim"),
    (["model.encoder.dim=-8"], "encoder.dim"),
    (["model.encoder.dim=abc"], "encoder.dim"),
    (["model.encoder.num_heads=3"], "num_heads"),
    (["model.encoder.num_blocks=0"], "encoder.num_blocks"),
    (["model.encoder.dropout=1.5"], "encoder.dropout"),
    (["model.encoder.dropout=-0.1"], "encoder.dropout"),
    (["model.encoder.attention_dropout=2"], "encoder.attention_dropout"),
    (["model.view.max_len=-5"], "max_len"),
    (["model.view.max_len=0"], "max_len"),
    (["model=two_tower", "model.view.history_len=0"], "history_len"),
    (["model=ease", "model.l2=-1"], "l2"),
    (["model=ease", "model.l2=0"], "l2"),
    (["+model.no_such_argument=1"], "no_such_argument"),
    (["model.loss._target_=no.such.Loss"], "model"),
    (["data.split._target_=rectorch.data.splits.NoSuchSplit"], "data"),
    (["data=csv", "data.path=/nonexistent/events.csv"], "/nonexistent/events.csv"),
]


def _written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize(("overrides", "fragment"), CONFIG_CASES, ids=[" ".join(o) for o, _ in CONFIG_CASES])
def test_bad_config_is_one_line_and_writes_nothing(compose_train, tmp_path: Path, overrides, fragment) -> None:
    other_data = any(o.startswith("data=") for o in overrides)
    cfg = compose_train(*([] if other_data else SMALL), *overrides, small=not other_data)
    with pytest.raises((ValueError, FileNotFoundError)) as raised:
        train(cfg)
    message = str(raised.value)
    assert fragment in message and "\n" not in message and len(message) < 400, message
    assert _written(tmp_path / "logs") == [] and not (tmp_path / "run").exists()


def _checkpoint_cases(tmp_path: Path) -> dict[str, Path]:
    """Bad checkpoint files a user may hand over as ``init_from`` or ``ckpt_path``."""
    cases = {"empty": b"", "text": b"not a checkpoint\n", "zip garbage": b"PK\x03\x04" + b"\x00" * 64}
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in cases.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.ckpt"
        paths[name].write_bytes(content)
    marker = tmp_path / "executed"
    paths["pickled payload"] = tmp_path / "payload.ckpt"
    with open(paths["pickled payload"], "wb") as out:
        pickle.dump({"state_dict": {}, "x": _Payload(str(marker))}, out)
    paths["no state_dict"] = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(2)}, paths["no state_dict"])
    paths["tensor only"] = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), paths["tensor only"])
    return paths


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


CHECKPOINT_NAMES = ["empty", "text", "zip garbage", "pickled payload", "no state_dict", "tensor only"]


@pytest.mark.parametrize("key", ["init_from", "ckpt_path"])
@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_bad_checkpoint_is_refused_unexecuted(compose_train, tmp_path: Path, key: str, name: str) -> None:
    bad = _checkpoint_cases(tmp_path / "given")[name]
    before = bad.read_bytes()
    cfg = compose_train(*SMALL, f"{key}={bad}")
    with pytest.raises(ValueError) as raised:
        train(cfg)
    message = str(raised.value)
    assert message.startswith(f"{key}:") and str(bad) in message and "\n" not in message, message
    assert not (tmp_path / "given" / "executed").exists(), "a pickled payload ran"
    assert bad.read_bytes() == before
    assert _written(tmp_path / "logs") == [] and not (tmp_path / "run").exists()


def test_weights_of_another_model_are_refused(compose_train, tmp_path: Path) -> None:
    donor = compose_train(*SMALL, "model=ease", "logger=none")
    results = train(donor)
    cfg = compose_train(*SMALL, f"init_from={results['checkpoint']}", f"paths.log_dir={tmp_path}/other")
    with pytest.raises(ValueError, match="does not hold weights of this model"):
        train(cfg)


CLI_CASES = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["+model.optimizer.lrr=1"], "lrr"),
    (["model.optimizer.lr=-1"], "model.optimizer"),
    (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path"),
    (["seed=abc"], "seed"),
]


@pytest.mark.parametrize(("overrides", "fragment"), CLI_CASES, ids=[" ".join(o) for o, _ in CLI_CASES])
def test_cli_exits_2_with_one_line_and_no_mlflow_run(tmp_path: Path, overrides, fragment) -> None:
    command = [sys.executable, "-m", "rectorch.training.cli", *SMALL, *overrides, f"paths.log_dir={tmp_path}/logs"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("rectorch-train: error:")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.stderr, result.stderr[-2000:]
    # Hydra makes the parent folders of a run dir before the job starts; the run dir itself must be gone
    left = [p for p in _written(tmp_path / "logs") if p not in ("runs",)]
    assert left == [], f"a failed run left files (run dir, cache or MLflow store): {left}"
