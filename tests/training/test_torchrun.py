"""``trainer=ddp`` under an external launcher: torchrun, srun (its environment, emulated) and submitit.

The launcher starts the processes and Hydra runs once in each: every rank must land in one run directory,
take its layout from the launcher, train on its own shard, and evaluate exactly what one process would.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.utilities import rank_zero_only

from rectorch.training.evaluate import evaluate_run
from rectorch.training.train import build

CLI = ["-m", "rectorch.training.cli"]
# 301 users: the two evaluation shards differ in size (151 and 150), which padding would have hidden
DATA = ["data.source.num_users=301", "data.source.num_items=120", "evaluation.batch_users=64"]
QUIET = ["logger=none", "callbacks.progress_bar=null"]
# measured with seeds 0-3 (4 epochs, global batch 128): test NDCG@10 0.457-0.475 with one process and with
# two, at most 0.003 apart per seed; popularity 0.144. 0.03 is twice the seed-to-seed range.
TOLERANCE = 0.03


def run(command: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def only_run_dir(log_dir: Path) -> Path:
    """The one directory the processes of a launch wrote; rank 0 alone wrote the Hydra config."""
    runs = list((log_dir / "runs").iterdir())
    assert len(runs) == 1, runs
    assert (runs[0] / ".hydra" / "config.yaml").is_file()
    return runs[0]


@pytest.mark.slow
def test_torchrun_matches_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    common = [*DATA, *QUIET, "trainer.max_epochs=4"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # global batch 2 × 64 = 128
    run([*torchrun, *CLI, "trainer=ddp", "data.batch_size=64", *common, f"paths.log_dir={tmp_path}/ddp"])
    run_dir = only_run_dir(tmp_path / "ddp")
    assert run_dir.name.startswith("torchrun-")
    ddp = metrics(run_dir)
    assert json.loads((run_dir / "run.json").read_text())["config"]["trainer"]["devices"] == 2

    one_dir, pop_dir = tmp_path / "one", tmp_path / "pop"
    run([sys.executable, *CLI, "data.batch_size=128", *common, f"paths.log_dir={tmp_path}", f"hydra.run.dir={one_dir}"])
    run([sys.executable, *CLI, "model=popularity", *common, f"paths.log_dir={tmp_path}", f"hydra.run.dir={pop_dir}"])
    one, popularity = metrics(one_dir)["test"]["ndcg@10"], metrics(pop_dir)["test"]["ndcg@10"]
    assert ddp["test"]["ndcg@10"] == pytest.approx(one, abs=TOLERANCE)
    assert min(ddp["test"]["ndcg@10"], one) > 2 * popularity

    # the two-rank evaluation of the best checkpoint against one process (rectorch-eval) on the same checkpoint
    single = evaluate_run(run_dir)
    assert single["protocol"]["users"] == ddp["protocol"]["users"] == 301
    for stage in ("val", "test"):
        assert single[stage].keys() == ddp[stage].keys()
        for name, value in single[stage].items():
            assert ddp[stage][name] == pytest.approx(value, abs=1e-6), (stage, name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_srun_tasks_share_one_run_directory(tmp_path: Path) -> None:
    """Two processes with the variables srun gives the tasks of one step (no SLURM here): Lightning's
    SLURMEnvironment joins them and both write to ``runs/slurm-<job>.<step>``."""
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0"}
    slurm |= {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_JOB_NAME": "rectorch"}
    slurm |= {"SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    command = [sys.executable, *CLI, "trainer=ddp", "trainer.max_epochs=1", *DATA, *QUIET, f"paths.log_dir={tmp_path}"]
    tasks = [
        subprocess.Popen(
            command,
            env={**os.environ, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    errors = [task.communicate(timeout=300)[1] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name == "slurm-4242.0"
    assert metrics(run_dir)["protocol"]["users"] == 301


def test_torchrun_without_a_run_id_of_its_own_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0"}
    command = [sys.executable, *CLI, "trainer=ddp", *QUIET, f"paths.log_dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "rectorch-train: error:" in result.stderr and "--rdzv-id" in result.stderr
    assert not (tmp_path / "runs").exists()


TORCHRUN_ENV = {"TORCHELASTIC_RUN_ID": "abc", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1"}
SLURM_ENV = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_NODEID": "1"}
SLURM_ENV |= {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "3", "SLURM_JOB_NAME": "rectorch", "SLURM_LOCALID": "0"}


@pytest.fixture
def launcher_env(monkeypatch: pytest.MonkeyPatch):
    """Set a launcher's variables for one test; Lightning's rank-zero state is restored after it."""
    for key in [*TORCHRUN_ENV, *SLURM_ENV, "RANK", "LOCAL_RANK", "SLURM_PROCID"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    rank = rank_zero_only.rank

    def set_env(variables: dict[str, str]) -> None:
        for key, value in variables.items():
            monkeypatch.setenv(key, value)

    yield set_env
    rank_zero_only.rank = rank


@pytest.mark.parametrize(
    ("variables", "environment", "run_name"),
    [
        ({**TORCHRUN_ENV, "RANK": "4", "LOCAL_RANK": "0"}, TorchElasticEnvironment, "torchrun-abc"),
        ({**SLURM_ENV, "SLURM_PROCID": "4"}, SLURMEnvironment, "slurm-77.3"),
    ],
)
def test_trainer_ddp_takes_its_layout_from_the_launcher(
    compose_train, launcher_env, variables: dict[str, str], environment: type, run_name: str
) -> None:
    launcher_env(variables)
    cfg = compose_train("trainer=ddp", "logger=none")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    assert Path(cfg.hydra.run.dir).name == run_name
    assert cfg.hydra.output_subdir is None  # rank 4 leaves the Hydra config to rank 0
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert isinstance(trainer.strategy.cluster_environment, environment)  # and Lightning accepted 4 × 2
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank) == (8, 4, 1)


def test_outside_a_launcher_trainer_ddp_starts_two_processes_itself(compose_train, launcher_env) -> None:
    cfg = compose_train("trainer=ddp")
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (2, 1)
    assert cfg.hydra.output_subdir == ".hydra"
    assert Path(cfg.hydra.run.dir).name[:4].isdigit()  # a timestamp


def test_each_rank_reads_its_own_shard_of_users(compose_train, launcher_env) -> None:
    cfg = compose_train("data.source.num_users=301")
    datamodule, _, _ = build(cfg)
    world = 2
    train, evaluate = [], []
    for rank in range(world):
        datamodule.trainer = SimpleNamespace(world_size=world, global_rank=rank)  # what the loaders read
        train.append(list(datamodule.train_dataloader().sampler))
        evaluate.append(list(datamodule.test_dataloader().sampler))
    rows = len(datamodule.train_dataloader().dataset)  # one training sequence per user (SASRec's view)
    assert rows == 301
    # training: shuffled, disjoint up to the padding that gives every rank the same number of batches
    assert len(train[0]) == len(train[1]) == 151
    assert set(train[0]) | set(train[1]) == set(range(rows)) and len(set(train[0]) & set(train[1])) == 1
    # evaluation: an exact partition, no user twice
    assert sorted(evaluate[0] + evaluate[1]) == list(range(len(datamodule.split.test)))


@pytest.mark.parametrize(("accelerator", "gpus"), [("cpu", None), ("gpu", 4)])
def test_the_slurm_launcher_asks_for_the_trainers_layout(compose_train, accelerator: str, gpus: int | None) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher (rectorch[scale])")
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4"]
    cfg = compose_train(*overrides, f"trainer.accelerator={accelerator}", "hydra.launcher.partition=short")
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    launcher = instantiate(cfg.hydra.launcher)  # resolved as the plugin resolves it when it submits
    expected = {"nodes": 2, "tasks_per_node": 4, "gpus_per_node": gpus, "partition": "short", "timeout_min": 720}
    assert {key: launcher.params[key] for key in expected} == expected


@pytest.mark.slow
def test_a_run_submitted_through_submitit(tmp_path: Path) -> None:
    """The submitit plugin pickles rectorch-train's task and runs it in a job (its local executor here)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher (rectorch[scale])")
    command = [sys.executable, *CLI, "-m", "hydra/launcher=submitit_local", "model=popularity", *DATA, *QUIET]
    run([*command, f"paths.log_dir={tmp_path}"])
    (job,) = (tmp_path / "multiruns").glob("*/0")
    assert metrics(job)["protocol"]["users"] == 301 and (job / "run.json").is_file()


def test_the_run_seed_sets_the_order_of_the_training_shards(compose_train, launcher_env, monkeypatch) -> None:
    datamodule, _, _ = build(compose_train())
    datamodule.trainer = SimpleNamespace(world_size=2, global_rank=0)
    orders = {}
    for seed in ("3", "3", "4"):
        monkeypatch.setenv("PL_GLOBAL_SEED", seed)  # what seed_everything(cfg.seed) leaves for every rank
        orders.setdefault(seed, []).append(list(datamodule.train_dataloader().sampler))
    assert orders["3"][0] == orders["3"][1] and orders["3"][0] != orders["4"][0]
