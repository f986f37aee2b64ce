"""Runs started together share one fresh MLflow store, experiment and cache entry without failing."""

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rectorch.interprocess import PID_TAG, file_lock, retry_busy
from rectorch.training.store import prepare_store

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
SMALL = ["model=ease", "callbacks=none", "data.source.num_users=200", "data.source.num_items=80"]


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_four_runs_started_at_once_on_a_fresh_store_all_succeed(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    base = [sys.executable, "-m", "rectorch.training.cli", f"paths.log_dir={log_dir}", *SMALL]
    logs = [(tmp_path / f"{i}.log").open("w") for i in range(4)]
    runs = [
        subprocess.Popen([*base, f"hydra.run.dir={tmp_path}/run{i}", f"seed={i}"], stdout=log, stderr=log, env=ENV)
        for i, log in enumerate(logs)
    ]
    codes = [run.wait(timeout=600) for run in runs]
    for log in logs:
        log.close()
    assert codes == [0, 0, 0, 0], [(tmp_path / f"{i}.log").read_text()[-2000:] for i in range(4)]

    uri = f"sqlite:///{log_dir}/mlflow/mlflow.db"
    names = [e.name for e in MlflowClient(uri).search_experiments()]
    assert sorted(names) == ["Default", "rectorch-synthetic"]
    found = all_runs(uri)
    assert sorted(r.data.tags[PID_TAG] for r in found) == sorted(str(run.pid) for run in runs)
    assert {r.info.status for r in found} == {"FINISHED"}
    cached = [p.name for p in (log_dir / "cache").iterdir()]
    assert len(cached) == 1 and cached[0].endswith(".npz"), cached  # one shared entry, no lock or temporary file


def _create(uri: str, barrier: multiprocessing.Barrier, results: multiprocessing.Queue) -> None:
    barrier.wait()
    results.put(prepare_store(uri, "rectorch-new"))


def test_processes_creating_one_experiment_at_once_get_the_same_one(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store exists; the experiment does not
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_create, args=(uri, barrier, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    ids = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert len(set(ids)) == 1
    assert [e.name for e in MlflowClient(uri).search_experiments()].count("rectorch-new") == 1


def test_the_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    import fcntl

    lock = tmp_path / "store.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom rectorch.interprocess import file_lock\n"
            "with file_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with open(lock) as handle:
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # kill -9 released it
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    holder.stdout.close()
    with file_lock(lock, remove=True):
        assert lock.is_file()
    assert not lock.exists()


def test_retry_busy_waits_out_a_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    setup = sqlite3.connect(path)
    setup.execute("create table t (x int)")
    setup.commit()
    holder = sqlite3.connect(path, check_same_thread=False)
    holder.execute("begin exclusive")
    release = threading.Timer(0.6, holder.commit)
    release.start()
    writer = sqlite3.connect(path, timeout=0, check_same_thread=False)
    attempts = []

    def insert() -> None:
        attempts.append(time.monotonic())
        writer.execute("insert into t values (1)")
        writer.commit()

    retry_busy(insert)
    release.join()
    assert len(attempts) >= 2  # the first attempt met "database is locked"
    assert setup.execute("select count(*) from t").fetchone() == (1,)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        retry_busy(lambda: writer.execute("insert into missing values (1)"))


def test_parallel_multirun_nests_its_jobs_under_one_sweep_parent(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "rectorch.training.cli",
        "--multirun",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"paths.log_dir={tmp_path}",
        "callbacks=none",
        "data.source.num_users=200",
        "data.source.num_items=80",
        "model=popularity,ease",
        "seed=1,2",
    ]
    with (tmp_path / "sweep.log").open("w") as log:
        sweep = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=ENV)
        assert sweep.wait(timeout=900) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    assert len(list((tmp_path / "multiruns").rglob("metrics.json"))) == 4

    from rectorch.training.tracking import PARENT_TAG, SWEEP_TAG

    found = all_runs(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    parents = [r for r in found if SWEEP_TAG in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = [r for r in found if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    assert len(children) == 4 and len(found) == 5
    assert {r.info.status for r in children} == {"FINISHED"}
    assert str(sweep.pid) not in {r.data.tags[PID_TAG] for r in children}  # the jobs ran in joblib's workers
