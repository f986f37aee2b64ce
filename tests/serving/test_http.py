"""The HTTP service, started with ``rectorch-serve`` on 127.0.0.1 and spoken to over a real socket.

It serves the bundle recording ``TUNED`` settings with one command-line override (``max_k``).
"""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from rectorch.serving import Recommender
from rectorch.serving.app import create_app
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


def test_server_limits(server: str) -> None:
    """The default 1 MB body limit, strict ``k`` and ids, and a connection that survives each bad request."""
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    bodies = [
        (b'{"history": ["' + b"x" * 1_000_000 + b'"]}', 413, "request body exceeds 1000000 bytes"),
        (b'{"history": ["i1\\ud800"]}', 422, "body.history.0: Input should be a valid string: it holds a lone UTF-16"),
        (b'{"history": ["i1"], "k": true}', 422, "body.k: Input should be a valid integer"),
        (b'{"history": ["i1"], "filters": {"category": []}}', 422, "body.filters.category: List should have at least"),
        (b'{"history": ["i1"], "now": NaN}', 422, "body.now: Input should be a finite number"),
    ]
    for body, status, error in bodies:
        connection.request("POST", "/recommend", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        assert response.status == status and json.loads(answer)["error"].startswith(error) and len(answer) < 2000
        connection.request("GET", "/healthz")  # the same connection still answers
        health = connection.getresponse()
        assert (health.status, json.loads(health.read())) == (200, {"status": "ok", "items": 60})
    connection.close()


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


class Broken(Recommender):
    """A recommender whose ``similar_items`` fails the way a bug would."""

    def similar_items(self, item_id: str, k: int = 10):
        raise RuntimeError(f"secret internal state for {item_id}")


def test_an_unexpected_error_is_a_500_without_the_traceback(bundle: Path) -> None:
    """The app's own handler answers; the client sees neither the message nor a traceback, and the server goes on."""
    broken = Broken.from_bundle(bundle)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(broken), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/items/i1/similar")
        response = connection.getresponse()
        body = response.read()
        assert (response.status, json.loads(body)) == (500, {"error": "internal error", "detail": "internal error"})
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/recommend", body=b'{"history": ["i1"], "k": 2}', headers=headers)
        response = connection.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["items"]) == 2
    finally:
        server.should_exit = True
        thread.join(timeout=30)
