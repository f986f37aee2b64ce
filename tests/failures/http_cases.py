"""The bad HTTP requests of the failure corpus, the server they go to, and how one exchange is observed.

The server is the real ``rectorch-serve`` (``python -m rectorch.serving.cli``) on a free loopback port,
serving the tiny bundle with ``recommend.max_k=50``, ``recommend.max_history=100`` and
``max_body_bytes=65536``. A case sends one request on a keep-alive connection and expects a status and
fragments of the one-line ``error`` (the field, the value); :func:`exchange` then sends ``GET /healthz``
on the same connection, so a request that breaks the connection is seen.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_BODY = 65_536
MAX_K, MAX_HISTORY = 50, 100
SERVER_OPTIONS = [f"max_body_bytes={MAX_BODY}", f"recommend.max_k={MAX_K}", f"recommend.max_history={MAX_HISTORY}"]


@dataclass(frozen=True)
class HttpCase:
    """One bad request and what the answer must be.

    Args:
        id: case name.
        method / path / body: the request (``body`` bytes, or None for none).
        status: expected status code.
        fragments: substrings of the one-line ``error`` field (or of the body, when ``json_error`` is False).
        headers: extra request headers (a None value leaves that header out).
        chunks: send the body chunked, in these many equal chunks (0 = ``Content-Length``).
        send_body: False = send the headers only (a declared length the client never sends).
        json_error: the answer is the service's JSON ``{"error": ...}`` (False: the HTTP layer's plain text).
        raw: bytes sent as they are on a plain socket instead (requests no HTTP client would write).
    """

    id: str
    method: str
    path: str
    body: bytes | None
    status: int
    fragments: tuple[str, ...] = ()
    headers: dict[str, str | None] = field(default_factory=dict)
    chunks: int = 0
    send_body: bool = True
    json_error: bool = True
    raw: bytes | None = None


@dataclass
class Exchange:
    """What one request got: status (None = no answer), the body, the error line, and the connection's fate."""

    status: int | None = None
    body: bytes = b""
    error: str = ""
    failure: str = ""  # a connection error instead of an answer
    reusable: bool = False  # the same connection then answered GET /healthz with 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, log: Path, pythonpath: str | None = None) -> tuple[subprocess.Popen, int]:
    """``rectorch-serve`` on a free port (``pythonpath``: another checkout's package), once ``/healthz`` answers."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, "-m", "rectorch.serving.cli", f"bundle={bundle}", f"port={port}", *SERVER_OPTIONS]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rectorch-serve exited: {log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("rectorch-serve did not answer /healthz within 90 s")


def _chunks(body: bytes, count: int) -> Iterator[bytes]:
    size = -(-len(body) // count)
    for start in range(0, len(body), size):
        yield body[start : start + size]


def exchange(port: int, case: HttpCase) -> Exchange:
    """Send ``case`` on a fresh keep-alive connection, read the answer, then try ``GET /healthz`` on it."""
    if case.raw is not None:
        return _raw_exchange(port, case.raw)
    result = Exchange()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **case.headers} if case.body is not None else dict(case.headers)
        headers = {name: value for name, value in headers.items() if value is not None}  # None: leave it out
        if not case.send_body:
            connection.putrequest(case.method, case.path)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
        elif case.chunks:
            connection.request(
                case.method,
                case.path,
                body=_chunks(case.body or b"", case.chunks),
                headers=headers,
                encode_chunked=True,
            )
        else:
            connection.request(case.method, case.path, body=case.body, headers=headers)
        response = connection.getresponse()
        result.status, result.body = response.status, response.read()
        if case.json_error:
            result.error = _error_line(result.body)
        if not case.send_body or response.getheader("connection", "").lower() == "close":
            return result
        connection.request("GET", "/healthz")
        health = connection.getresponse()
        health.read()
        result.reusable = health.status == 200
    except (OSError, http.client.HTTPException) as error:
        result.failure = f"{type(error).__name__}: {error}"
    finally:
        connection.close()
    return result


def _raw_exchange(port: int, data: bytes) -> Exchange:
    """Send ``data`` on a socket and read until the server closes (the HTTP layer closes after a 400)."""
    result = Exchange()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(data)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError as error:
        result.failure = f"{type(error).__name__}: {error}"
        return result
    head, _, body = answer.partition(b"\r\n\r\n")
    result.body = _dechunk(body) if b"transfer-encoding: chunked" in head.lower() else body
    status_line = head.split(b"\r\n", 1)[0].split()
    result.status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    return result


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def _error_line(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return answer.get("error", "") if isinstance(answer, dict) and isinstance(answer.get("error"), str) else ""


def post(case_id: str, body: bytes | dict, status: int, *fragments: str, **options) -> HttpCase:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpCase(case_id, "POST", "/recommend", data, status, fragments, **options)


def get(case_id: str, path: str, status: int, *fragments: str, **options) -> HttpCase:
    return HttpCase(case_id, "GET", path, None, status, fragments, **options)


H = ["i0", "i3"]
BIG = b'{"history": ["' + b"i1" * MAX_BODY + b'"]}'
CASES: list[HttpCase] = [
    # size
    post("body-over-limit", BIG, 413, "exceeds 65536 bytes", "max_body_bytes"),
    post("body-over-limit-chunked", BIG, 413, "exceeds 65536 bytes", chunks=8),
    post("body-50mb-declared", b"{}", 413, "exceeds", headers={"Content-Length": "50000000"}, send_body=False),
    # k
    post("k-true", {"history": H, "k": True}, 422, "body.k", "valid integer"),
    post("k-false", {"history": H, "k": False}, 422, "body.k", "valid integer"),
    post("k-float", {"history": H, "k": 3.0}, 422, "body.k", "valid integer"),
    post("k-string", {"history": H, "k": "10"}, 422, "body.k", "valid integer"),
    post("k-null", {"history": H, "k": None}, 422, "body.k", "valid integer"),
    post("k-list", {"history": H, "k": [3]}, 422, "body.k", "valid integer"),
    post("k-zero", {"history": H, "k": 0}, 422, "body.k", "greater than 0"),
    post("k-negative", {"history": H, "k": -5}, 422, "body.k", "greater than 0"),
    post("k-over-max", {"history": H, "k": MAX_K + 1}, 400, "k must be between 1 and 50", "51"),
    post("k-huge", {"history": H, "k": 10**30}, 400, "k must be between 1 and 50"),
    post("k-infinite", b'{"history": ["i0"], "k": 1e400}', 422, "body.k", "valid integer"),
    post("k-5000-digits", b'{"k": 1' + b"0" * 5000 + b"}", 400, "parsing the body"),
    # ids
    post("history-surrogate", b'{"history": ["\\ud800"]}', 422, "body.history.0", "lone UTF-16 surrogate"),
    post("history-low-surrogate", b'{"history": ["i1\\udfff"]}', 422, "body.history.0", "lone UTF-16 surrogate"),
    post(
        "exclude-surrogate",
        b'{"history": ["i1"], "exclude": ["\\udbff"]}',
        422,
        "body.exclude.0",
        "lone UTF-16 surrogate",
    ),
    post(
        "filter-name-surrogate",
        b'{"filters": {"\\ud800": ["x"]}}',
        422,
        "body.filters",
        "[key]",
        "lone UTF-16 surrogate",
    ),
    post("category-surrogate", b'{"filters": {"category": ["\\ud800"]}}', 422, "body.filters.category.0", "surrogate"),
    post(
        "feature-name-surrogate",
        b'{"user_features": {"\\ud800": 1}}',
        422,
        "body.user_features",
        "lone UTF-16 surrogate",
    ),
    post("history-overlong-id", {"history": ["x" * 1025]}, 422, "body.history.0", "at most 1024 characters"),
    post("history-empty-id", {"history": [""]}, 422, "body.history.0", "at least 1 character"),
    post("history-ints", {"history": [1, 2]}, 422, "body.history.0", "valid string"),
    post("history-nested", {"history": [["i1"]]}, 422, "body.history.0", "valid string"),
    post("history-null", {"history": None}, 422, "body.history", "valid list"),
    post("history-string", {"history": "i1"}, 422, "body.history", "valid list"),
    post("history-over-max", {"history": ["i1"] * (MAX_HISTORY + 1)}, 400, "101 items", "at most 100"),
    post("exclude-ints", {"history": H, "exclude": [7]}, 422, "body.exclude.0", "valid string"),
    # filters
    post("category-empty", {"history": H, "filters": {"category": []}}, 422, "body.filters.category", "at least 1"),
    post("category-string", {"history": H, "filters": {"category": "comedy"}}, 422, "body.filters.category"),
    post("category-int", {"history": H, "filters": {"category": [2]}}, 422, "body.filters.category.0"),
    post("category-unknown", {"history": H, "filters": {"category": ["opera"]}}, 400, "unknown categories", "opera"),
    post("filter-unknown", {"history": H, "filters": {"brand": ["x"]}}, 400, "unsupported filters", "brand"),
    post("filters-list", {"history": H, "filters": ["category"]}, 422, "body.filters", "valid dictionary"),
    post("filters-too-many", {"filters": {f"f{i}": ["x"] for i in range(9)}}, 422, "body.filters", "at most 8"),
    # now
    post("now-nan", b'{"history": ["i0"], "now": NaN}', 422, "body.now", "finite number"),
    post("now-infinity", b'{"history": ["i0"], "now": -Infinity}', 422, "body.now", "finite number"),
    post("now-string", {"history": H, "now": "yesterday"}, 422, "body.now", "valid number"),
    post("now-bool", {"history": H, "now": True}, 422, "body.now", "valid number"),
    post("now-negative", {"history": H, "now": -1}, 422, "body.now", "greater than or equal to 0"),
    post("now-far-future", {"history": H, "now": 1e300}, 422, "body.now", "less than or equal to"),
    # user features
    post("feature-unknown", {"history": H, "user_features": {"age": 3}}, 400, "unknown user_features", "age"),
    post("feature-string", {"history": H, "user_features": {"age": "x"}}, 422, "body.user_features.age"),
    post("feature-nan", b'{"user_features": {"age": NaN}}', 422, "body.user_features.age", "finite number"),
    post("feature-bool", {"user_features": {"age": True}}, 422, "body.user_features.age"),
    post("feature-nested", {"user_features": {"age": [[1]]}}, 422, "body.user_features.age"),
    post("features-too-many", {"user_features": {f"f{i}": 1 for i in range(65)}}, 422, "body.user_features"),
    # the body as a whole
    post("extra-field", {"history": H, "colour": "red"}, 422, "body.colour", "Extra inputs"),
    post("not-json", b"{not json", 422, "JSON decode error"),
    post("truncated-json", b'{"history": ["i1"', 422, "JSON decode error"),
    post("json-array", b'["i1"]', 422, "body", "valid dictionary"),
    post("json-string", b'"i1"', 422, "body", "valid dictionary"),
    post("json-null", b"null", 422, "body", "valid dictionary"),
    post("empty-body", b"", 422, "body", "Field required"),
    post("invalid-utf8", b'{"history": ["\xff\xfe"]}', 400, "parsing the body"),
    post("deep-nesting", b"[" * 30_000 + b"]" * 30_000, 400, "parsing the body"),
    post(
        "text-plain",
        {"history": H},
        422,
        "body",
        "Content-Type: application/json",
        "'text/plain'",
        headers={"Content-Type": "text/plain"},
    ),
    post(
        "no-content-type",
        {"history": H},
        422,
        "body",
        "Content-Type: application/json",
        "None",
        headers={"Content-Type": None},
    ),
    # other routes and methods
    get("recommend-by-get", "/recommend", 405, "Method Not Allowed"),
    get("unknown-route", "/recommendations", 404, "Not Found"),
    HttpCase("similar-by-post", "POST", "/items/i1/similar", b"{}", 405, ("Method Not Allowed",)),
    get("similar-unknown-id", "/items/nope/similar", 404, "unknown item id 'nope'"),
    get("similar-k-true", "/items/i1/similar?k=true", 422, "query.k", "valid integer"),
    get("similar-k-float", "/items/i1/similar?k=1.5", 422, "query.k", "valid integer"),
    get("similar-k-zero", "/items/i1/similar?k=0", 422, "query.k", "greater than 0"),
    get("similar-k-over-max", "/items/i1/similar?k=51", 400, "k must be between 1 and 50"),
    get("similar-overlong-id", "/items/" + "x" * 1100 + "/similar", 422, "path.item_id", "at most 1024"),
    get("similar-encoded-surrogate", "/items/%ED%A0%80/similar", 404, "unknown item id"),
    HttpCase(
        "raw-non-ascii-path",
        "GET",
        "",
        None,
        400,
        ("Invalid HTTP request",),
        json_error=False,
        raw=b"GET /items/\xed\xa0\x80/similar HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
    HttpCase(
        "raw-bad-content-length",
        "POST",
        "",
        None,
        400,
        ("Invalid HTTP request",),
        json_error=False,
        raw=b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    ),
    HttpCase(
        "raw-bad-chunk-size",
        "POST",
        "",
        None,
        400,
        ("Invalid HTTP request",),
        json_error=False,
        raw=b"POST /recommend HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ),
]
