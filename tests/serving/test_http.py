"""The HTTP service, started with ``rectorch-serve`` on 127.0.0.1 and spoken to over a real socket.

It serves the bundle recording ``TUNED`` settings with one command-line override (``max_k``).
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.conftest import TUNED


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tuned_bundle: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "rectorch.serving.cli", f"bundle={tuned_bundle}", f"port={port}"]
    command.append("recommend.max_k=50")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"rectorch-serve exited: {process.stdout.read()}")
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def call(url: str, body: bytes | None = None, method: str = "GET") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_endpoints(server: str) -> None:
    assert call(f"{server}/healthz") == (200, {"status": "ok", "items": 60})
    status, meta = call(f"{server}/metadata")
    assert status == 200 and meta["family"] == "MeanEncoder"
    assert meta["settings"]["max_k"] == 50 != TUNED.max_k  # the override beats the recorded value
    recorded = {key: meta["settings"][key] for key in ("candidates", "mmr_lambda", "diversity", "seed")}
    assert recorded == {"candidates": 100, "mmr_lambda": 0.3, "diversity": "categories", "seed": 7}
    body = json.dumps({"history": ["i0", "i3", "zz"], "k": 3, "exclude": ["i9"]}).encode()
    status, answer = call(f"{server}/recommend", body, "POST")
    assert status == 200 and len(answer["items"]) == 3 and answer["unknown_items"] == ["zz"]
    assert {"id", "score", "source"} == set(answer["items"][0]) and "i9" not in [i["id"] for i in answer["items"]]
    assert len({int(i["id"][1:]) % 3 for i in answer["items"]}) == 3  # the recorded MMR over categories
    status, answer = call(f"{server}/items/i3/similar?k=2")
    assert status == 200 and len(answer["items"]) == 2
    assert urllib.request.urlopen(f"{server}/openapi.json", timeout=10).status == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/recommend", b"{not json", 422, "JSON"),
        ("/recommend", b'{"history": "i1"}', 422, "list"),
        ("/recommend", b'{"history": ["i1"], "k": 0}', 422, "greater than 0"),
        ("/recommend", b'{"history": ["i1"], "k": "ten"}', 422, "integer"),
        ("/recommend", b'{"history": ["i1"], "k": 51}', 400, "k must be between 1 and 50"),
        ("/recommend", json.dumps({"history": ["i1"] * 10001}).encode(), 400, "at most 10000"),
        ("/recommend", b'{"history": [], "filters": {"category": ["opera"]}}', 400, "unknown categories"),
        ("/recommend", b'{"history": [], "colour": 1}', 422, "Extra inputs"),
        ("/items/nope/similar", None, 404, "unknown item id"),
        ("/items/i1/similar?k=-1", None, 422, "greater than 0"),
        ("/items/i1/similar?k=999", None, 400, "k must be"),
    ],
)
def test_bad_input_is_a_clear_4xx(server: str, path: str, body: bytes | None, status: int, message: str) -> None:
    code, answer = call(f"{server}{path}", body, "POST" if body is not None else "GET")
    assert code == status
    assert message in json.dumps(answer)
