"""A run killed without a chance to close is marked KILLED by the next start and shown by ``rectorch-compare``."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from rectorch.interprocess import HOST_TAG, PID_TAG, PROCESS_TAG, mark_killed_runs, owner_alive, owner_tags

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
SMALL = ["callbacks.progress_bar=null", "data.source.num_users=300", "data.source.num_items=100"]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_owner_alive_tells_live_dead_and_reused_pids() -> None:
    mine = owner_tags()
    assert mine[HOST_TAG] == socket.gethostname() and mine[PID_TAG] == str(os.getpid())
    assert owner_alive(mine) is True
    assert owner_alive({**mine, PID_TAG: str(dead_pid())}) is False
    if PROCESS_TAG in mine:  # Linux: the same pid now held by another process (started at another time)
        assert owner_alive({**mine, PROCESS_TAG: mine[PROCESS_TAG] + "0"}) is False
    assert owner_alive({**mine, HOST_TAG: "another-host"}) is None
    assert owner_alive({}) is None


def test_only_running_runs_of_dead_processes_here_are_marked(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("rectorch-test")
    mine = owner_tags()
    runs = {
        "dead": {**mine, PID_TAG: str(dead_pid())},
        "alive": mine,
        "elsewhere": {**mine, PID_TAG: str(dead_pid()), HOST_TAG: "another-host"},
        "untagged": {},
    }
    ids = {name: client.create_run(experiment, run_name=name, tags=tags).info.run_id for name, tags in runs.items()}
    finished = client.create_run(experiment, run_name="finished", tags=runs["dead"]).info.run_id
    client.set_terminated(finished)

    marked = mark_killed_runs(client, [experiment])
    assert [run.info.run_id for run in marked] == [ids["dead"]]
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"dead": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING", "untagged": "RUNNING"}
    assert client.get_run(ids["dead"]).info.end_time is not None
    assert client.get_run(finished).info.status == "FINISHED"


def wait_for_running_run(client: MlflowClient, pid: int, process: subprocess.Popen, timeout: float = 300) -> str:
    """The id of the RUNNING run tagged with ``pid``, once the process has created it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        experiment = client.get_experiment_by_name("rectorch-synthetic")
        if experiment is not None:
            found = client.search_runs([experiment.experiment_id], f"tags.`{PID_TAG}` = '{pid}'")
            if found and found[0].info.status == "RUNNING" and found[0].data.metrics:
                return found[0].info.run_id
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"no RUNNING run of pid {pid} with a logged metric (exit code {process.poll()})")


def test_a_killed_run_is_marked_killed_by_the_next_start_and_shown_by_compare(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    uri = f"sqlite:///{log_dir}/mlflow/mlflow.db"
    base = [sys.executable, "-m", "rectorch.training.cli", f"paths.log_dir={log_dir}", *SMALL]
    long_run = [*base, f"hydra.run.dir={tmp_path}/killed", "model.view.max_len=20", "trainer.max_epochs=500"]
    with (tmp_path / "killed.log").open("w") as log:
        victim = subprocess.Popen(long_run, stdout=log, stderr=subprocess.STDOUT, env=ENV)
        client = MlflowClient(uri)
        # a metric logged means the run is training (its first validation epoch went through)
        run_id = wait_for_running_run(client, victim.pid, victim)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    assert client.get_run(run_id).info.status == "RUNNING"  # nothing closed it

    nxt = subprocess.run(
        [*base, f"hydra.run.dir={tmp_path}/next", "model=popularity"], capture_output=True, text=True, env=ENV
    )
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED" and killed.info.end_time is not None

    shown = subprocess.run(
        [sys.executable, "-m", "rectorch.compare", "--tracking-uri", uri],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert f"1 KILLED run(s) not in the leaderboard: {killed.info.run_name} ({run_id[:8]})" in shown.stderr
    assert "popularity" in shown.stdout and killed.info.run_name not in shown.stdout


def test_compare_lists_live_and_dead_unfinished_runs(tmp_path: Path) -> None:
    """A live run is not marked, but compare still says it is left out of the leaderboard."""
    from rectorch.compare.store import unfinished_runs

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("rectorch-test")
    live = client.create_run(experiment, run_name="sasrec-live", tags=owner_tags()).info.run_id
    dead = client.create_run(experiment, run_name="sasrec-dead", tags={**owner_tags(), PID_TAG: str(dead_pid())})
    found = {run.info.run_id: run.info.status for run in unfinished_runs(client, [experiment])}
    assert found == {live: "RUNNING", dead.info.run_id: "KILLED"}
