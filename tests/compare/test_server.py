"""``mlflow server`` on 127.0.0.1 against a store with two runs, read back through the REST API."""

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


@pytest.mark.slow
def test_mlflow_server_serves_two_runs(empty_store: str, tmp_path: Path) -> None:
    ids = {log_fake_run(empty_store, "sasrec", 0.3), log_fake_run(empty_store, "ease", 0.2)}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", empty_store]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = (tmp_path / "server.log").open("w")
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
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        finally:
            log.close()
    assert server.returncode is not None
