"""Load and soak ``rectorch-serve`` on loopback: many clients, valid and invalid requests, one JSON line.

    python scripts/soak_serving.py [--bundle DIR] [--seconds 60] [--clients 16] [--invalid-share 0.3]

Starts ``rectorch-serve`` on a free 127.0.0.1 port (with ``--bundle`` or a synthetic bundle it builds:
a mean-of-embeddings ONNX encoder over ``--items`` clustered items), warms it up, then runs ``--clients``
threads, each on its own keep-alive connection, for ``--seconds`` (or ``--max-requests``). Each request
is drawn from a fixed mix of valid ones (recommend with and without filters, large histories, similar
items, health) and invalid ones (bad types, ``k=true``, lone surrogates, oversized bodies, unknown ids
and categories, broken JSON); each has an expected status class. Prints req/s, p50/p99 latency, the
counts of 2xx/4xx/5xx, answers of the wrong class, connection errors, and the server's RSS after
warm-up and at the end. Exits 1 when a bar is missed: any 5xx, any connection error, any answer of the
wrong class, or RSS growth above ``--max-rss-growth`` percent. The server is stopped by its PID.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HISTORY, DIM, CATEGORIES = 50, 32, 10
NOW = 1_700_000_000.0


def build_bundle(out: Path, num_items: int, seed: int) -> Path:
    """A synthetic bundle: ONNX ``history → mean(table[history])`` over clustered item vectors, exact index."""
    from onnx import TensorProto, helper, numpy_helper

    from rectorch.serving.bundle import flat_index, write_bundle
    from rectorch.serving.catalog import Catalog
    from rectorch.serving.manifest import InputSpec

    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, CATEGORIES, num_items)
    centers = rng.normal(size=(CATEGORIES, DIM)).astype(np.float32) * 3
    vectors = (centers[cluster] + rng.normal(size=(num_items, DIM))).astype(np.float32)
    table = np.vstack([np.zeros((1, DIM), np.float32), vectors])
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "history"], ["embedded"], axis=0),
            helper.make_node("ReduceMean", ["embedded", "axes"], ["query"], keepdims=0),
        ],
        "mean_encoder",
        [helper.make_tensor_value_info("history", TensorProto.INT64, ["batch", HISTORY])],
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, ["batch", DIM])],
        initializer=[numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    catalog = Catalog(
        ids=[f"item{r}" for r in range(num_items)],
        popularity=rng.zipf(1.3, num_items).clip(max=1e6).astype(np.float32),
        category=cluster + 1,
        categories=["", *(f"cat{c}" for c in range(CATEGORIES))],
        created_at=NOW - rng.uniform(0, 730, num_items) * 86400.0,
        available=rng.random(num_items) > 0.01,
    )
    write_bundle(
        out,
        family="MeanEncoder",
        encoders={"fp32": model.SerializeToString()},
        inputs=[InputSpec("history", "int64", ["batch", HISTORY])],
        index=flat_index(vectors),
        catalog=catalog,
    )
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (Linux ``/proc``), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def requests_mix(item_ids: list[str], max_body: int) -> tuple[list, list]:
    """``(valid, invalid)`` request makers: each ``rng -> (method, path, body bytes or None, expected class)``."""

    def ids(rng: random.Random, n: int) -> list[str]:
        return [rng.choice(item_ids) for _ in range(n)]

    def post(payload, expected: int):
        return "POST", "/recommend", payload if isinstance(payload, bytes) else json.dumps(payload).encode(), expected

    valid = [
        lambda r: post({"history": ids(r, r.randint(1, HISTORY)), "k": r.randint(1, 50)}, 2),
        lambda r: post({"history": ids(r, 10), "k": 10, "filters": {"category": [f"cat{r.randrange(10)}"]}}, 2),
        lambda r: post({"history": ids(r, 20), "exclude": ids(r, 20), "now": NOW}, 2),
        lambda r: post({"history": [], "k": 20}, 2),
        lambda r: post({"history": ids(r, 5000), "k": 100}, 2),  # large: 5000 ids
        lambda r: ("GET", f"/items/{r.choice(item_ids)}/similar?k={r.randint(1, 30)}", None, 2),
        lambda r: ("GET", "/healthz", None, 2),
    ]
    invalid = [
        lambda r: post({"history": ids(r, 3), "k": True}, 4),
        lambda r: post({"history": ids(r, 3), "k": 0}, 4),
        lambda r: post({"history": ids(r, 3), "k": 10**6}, 4),
        lambda r: post({"history": ids(r, 3), "k": "10"}, 4),
        lambda r: post(b'{"history": ["\\ud800"], "k": 3}', 4),
        lambda r: post(b'{"history": ["item1"], "exclude": ["\\udfff"]}', 4),
        lambda r: post({"history": [1, 2, 3]}, 4),
        lambda r: post({"history": ids(r, 3), "filters": {"category": []}}, 4),
        lambda r: post({"history": ids(r, 3), "filters": {"category": ["opera"]}}, 4),
        lambda r: post({"history": ids(r, 3), "filters": {"brand": ["x"]}}, 4),
        lambda r: post({"history": ids(r, 3), "colour": "red"}, 4),
        lambda r: post({"history": ids(r, 3), "now": "yesterday"}, 4),
        lambda r: post(b'{"history": ["item1"', 4),
        lambda r: post(b"[" * 5000 + b"]" * 5000, 4),
        lambda r: post(b'{"history": ["' + b"x" * (max_body + 10) + b'"]}', 4),  # over the body limit
        lambda r: post({"history": ["x" * 5000]}, 4),
        lambda r: ("GET", "/items/no-such-item/similar", None, 4),
        lambda r: ("GET", "/items/item1/similar?k=true", None, 4),
        lambda r: ("GET", "/items/%ED%A0%80/similar", None, 4),
    ]
    return valid, invalid


class Tally:
    """Counts and latencies shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.status = {"2xx": 0, "4xx": 0, "5xx": 0, "other": 0}
        self.wrong_class: dict[str, int] = {}
        self.connection_errors: dict[str, int] = {}

    def add(self, seconds: float, status: int, expected: int, what: str) -> None:
        with self.lock:
            self.latencies.append(seconds)
            key = f"{status // 100}xx" if status // 100 in (2, 4, 5) else "other"
            self.status[key] += 1
            if status // 100 != expected:
                self.wrong_class[f"{what} -> {status}"] = self.wrong_class.get(f"{what} -> {status}", 0) + 1

    def error(self, what: str, error: Exception) -> None:
        with self.lock:
            key = f"{what}: {type(error).__name__}"
            self.connection_errors[key] = self.connection_errors.get(key, 0) + 1


def client(port: int, mix: tuple, deadline: float, budget: threading.Semaphore, seed: int, tally: Tally) -> None:
    """One keep-alive connection sending drawn requests until the deadline or the shared request budget ends.

    ``mix`` is ``(valid makers, invalid makers, invalid share)``.
    """
    valid, invalid, share = mix
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < deadline and budget.acquire(blocking=False):
        kind, makers = ("invalid", invalid) if rng.random() < share else ("valid", valid)
        index = rng.randrange(len(makers))
        method, path, body, expected = makers[index](rng)
        what = f"{kind} #{index} {method} {path.split('?')[0][:30]}"
        headers = {"Content-Type": "application/json"} if body is not None else {}
        start = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            tally.add(time.perf_counter() - start, response.status, expected, what)
            if response.getheader("connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException) as error:
            tally.error(what, error)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.close()


def run_clients(
    port: int, mix: tuple, seconds: float, clients: int, seed: int, tally: Tally, max_requests: int = 10**9
) -> float:
    """``clients`` threads for ``seconds`` (or ``max_requests`` in all); returns the wall time."""
    budget, deadline = threading.Semaphore(max_requests), time.monotonic() + seconds
    threads = [
        threading.Thread(target=client, args=(port, mix, deadline, budget, seed + c, tally)) for c in range(clients)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - began


def start_server(bundle: Path, port: int, log: Path, pythonpath: str | None) -> subprocess.Popen:
    """``rectorch-serve`` in a subprocess (from ``pythonpath`` first when given, run outside the checkout)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(pythonpath).resolve()), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "rectorch.serving.cli", f"bundle={bundle}", f"port={port}"]
    with log.open("wb") as out:  # -m puts the working directory first on sys.path: start outside the checkout
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"rectorch-serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("rectorch-serve did not answer /healthz within 120 s")


def stop_server(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def run(args: argparse.Namespace, bundle: Path, work: Path) -> dict:
    item_ids = json.loads((bundle / "item_ids.json").read_text())
    valid, invalid = requests_mix(item_ids, args.max_body_bytes)
    port = free_port()
    process = start_server(bundle, port, work / "server.log", args.server_pythonpath)
    try:
        idle = rss_mb(process.pid)
        mix = (valid, invalid, args.invalid_share)
        run_clients(port, mix, args.warmup_seconds, args.clients, args.seed + 1000, Tally())
        start_rss = rss_mb(process.pid)
        tally = Tally()
        wall = run_clients(port, mix, args.seconds, args.clients, args.seed, tally, args.max_requests)
        end_rss = rss_mb(process.pid)
        alive = process.poll() is None
    finally:
        stop_server(process)
    ms = np.asarray(tally.latencies) * 1000 if tally.latencies else np.zeros(1)
    growth = None if not (start_rss and end_rss) else round(100 * (end_rss - start_rss) / start_rss, 2)
    return {
        "seconds": round(wall, 1),
        "clients": args.clients,
        "requests": len(tally.latencies),
        "req_per_s": round(len(tally.latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "status": tally.status,
        "wrong_class": sum(tally.wrong_class.values()),
        "wrong_class_by_request": tally.wrong_class,
        "connection_errors": sum(tally.connection_errors.values()),
        "connection_errors_by_request": tally.connection_errors,
        "invalid_share": args.invalid_share,
        "rss_idle_mb": idle and round(idle, 1),
        "rss_start_mb": start_rss and round(start_rss, 1),
        "rss_end_mb": end_rss and round(end_rss, 1),
        "rss_growth_pct": growth,
        "server_alive_at_end": alive,
        "items": len(item_ids),
        "server_pythonpath": args.server_pythonpath,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: build a synthetic one)")
    parser.add_argument("--items", type=int, default=20_000, help="items of the synthetic bundle")
    parser.add_argument("--seconds", type=float, default=60.0, help="soak duration (1 to 3600)")
    parser.add_argument("--clients", type=int, default=16, help="client threads (1 to 64)")
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="stop after this many requests")
    parser.add_argument("--invalid-share", type=float, default=0.3, help="share of invalid requests in the mix")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="load before the start RSS is taken")
    parser.add_argument("--max-body-bytes", type=int, default=1_000_000, help="the server's body limit")
    parser.add_argument("--max-rss-growth", type=float, default=10.0, help="RSS growth bar in percent")
    parser.add_argument("--server-pythonpath", help="serve with the rectorch package under this directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (1 <= args.seconds <= 3600 and 1 <= args.clients <= 64 and 0 <= args.invalid_share < 1):
        parser.error("--seconds must lie in [1, 3600], --clients in [1, 64], --invalid-share in [0, 1)")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        bundle = args.bundle or build_bundle(work / "bundle", args.items, args.seed)
        result = run(args, bundle, work)
    print(json.dumps(result), flush=True)
    growth = result["rss_growth_pct"]
    failed = result["status"]["5xx"] or result["connection_errors"] or result["wrong_class"]
    sys.exit(1 if failed or growth is None or growth > args.max_rss_growth else 0)


if __name__ == "__main__":
    main()
