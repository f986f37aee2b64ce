"""``trainer=ddp``: two CPU processes (gloo) train, and their sharded evaluation equals a single-process one."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from rectorch.runs import load_run
from tests.conftest import SMALL_DATA


@pytest.mark.slow
def test_ddp_training_and_exact_sharded_evaluation(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp_run"
    command = [
        sys.executable,
        "-m",
        "rectorch.training.cli",
        "trainer=ddp",
        "debug=limit",
        "trainer.limit_val_batches=1.0",
        "trainer.limit_test_batches=1.0",
        "logger=none",
        "callbacks.progress_bar=null",
        "evaluation.batch_users=64",
        *SMALL_DATA,
        f"paths.log_dir={tmp_path}/logs",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads((run_dir / "metrics.json").read_text())
    assert ddp["epochs"] == 2 and Path(ddp["checkpoint"]).is_file()

    run = load_run(run_dir)
    datamodule = run.datamodule()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    single = trainer.test(run.model, datamodule=datamodule, verbose=False)[0]
    assert ddp["protocol"]["users"] == len(datamodule.split.test)
    for name in ("ndcg@10", "hr@10", "mrr@10", "coverage@10"):
        assert single[f"test/{name}"] == pytest.approx(ddp["test"][name], abs=1e-6)
