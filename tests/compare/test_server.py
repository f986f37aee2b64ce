"""``mlflow server`` on 127.0.0.1 against a store with two runs, read back through the REST API, then stopped."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.compare.conftest import log_fake_run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow server exited with code {server.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"mlflow server did not answer {url}/health within {timeout} s")


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _descendants(pid: int) -> list[int]:
    """Running processes below ``pid``, at any depth (from /proc; empty where there is none)."""
    parents: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if not fields.get("State", "").startswith("Z"):
            parents.setdefault(int(fields.get("PPid", "0")), []).append(int(status.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return not (Path("/proc") / str(pid) / "status").read_text().split("State:\t", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """The ``pids`` still running after waiting up to ``timeout`` seconds for them to exit."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


@pytest.mark.slow
def test_mlflow_server_serves_two_runs_and_stops_cleanly(empty_store: str, tmp_path: Path) -> None:
    ids = {log_fake_run(empty_store, "sasrec", 0.3), log_fake_run(empty_store, "ease", 0.2)}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", empty_store]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, server)
        with urllib.request.urlopen(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=rectorch-synthetic"
        ) as r:
            experiment_id = json.loads(r.read())["experiment"]["experiment_id"]
        runs = _post(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
        assert {run["info"]["run_id"] for run in runs} == ids
        for run in runs:
            metrics = {m["key"] for m in run["data"]["metrics"]}
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            assert "val/ndcg10" in metrics and tags["model_family"] in {"sasrec", "ease"}
        workers = _descendants(server.pid)  # uvicorn, the job runner and its huey consumers
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    # SIGTERM is a clean shutdown: exit code 0 (not -15), no orphaned worker, nothing listening on the port
    assert server.returncode == 0, log_path.read_text()[-2000:]
    assert _wait_gone(workers) == [], f"workers {workers} outlived the server"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers of our requests are fine
        sock.bind(("127.0.0.1", port))
        sock.listen()
