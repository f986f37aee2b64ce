"""Load ``rectorch-serve`` with sessions on loopback: clients mixing events, recommend-by-user and feedback.

    python scripts/load_sessions.py [--url URL] [--bundle DIR] [--store redis://...] [--seconds 60] [--clients 16]

Without ``--url`` it starts ``rectorch-serve`` on a free 127.0.0.1 port over ``--bundle`` (default: the
synthetic bundle of ``scripts/soak_serving.py``) with ``session_store=--store``; without ``--store`` it
first starts a temporary ``redis-server`` (appendonly, fsync always) in a temporary directory. Both are
stopped by PID at the end. The started server runs the strategy layer (Thompson sampling over two arms of
the bundle: ``control`` and ``explore`` with 10 % exploration slots) on the same store. ``--clients`` threads,
each on its own keep-alive connection, send for ``--seconds`` (or ``--max-requests`` in all): ``POST /events``
(1 to 5 view events of one of ``--users`` users), ``POST /recommend`` by ``user_id`` (k=10), ``POST
/feedback`` for one of the client's earlier answers (its first item clicked 30 % of the time) and ``GET
/users/{id}/history``. Then every user that was sent events must have a history. Prints req/s, p50/p99 per
endpoint, the error count (non-2xx answers and connection errors) and the users found without a history;
exits 1 when either is not zero.
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

from soak_serving import build_bundle, free_port, stop_server  # noqa: E402 (the synthetic bundle, shared)

from tests.serving.redis_server import RedisServer  # noqa: E402 (the tests' redis-server helper)

ENDPOINTS = {"events": 0.4, "recommend": 0.4, "feedback": 0.15, "history": 0.05}
STRATEGY = """strategy:
  mode: thompson
  arms: [{name: control}, {name: explore, settings: {explore_share: 0.1}}]
"""


class Tally:
    """Latencies per endpoint, errors, and the users sent events (shared by the client threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
        self.errors: dict[str, int] = {}
        self.written: set[str] = set()

    def add(self, endpoint: str, seconds: float, status: int, user: str) -> None:
        with self.lock:
            self.latencies[endpoint].append(seconds)
            if status // 100 != 2:
                self.errors[f"{endpoint} -> {status}"] = self.errors.get(f"{endpoint} -> {status}", 0) + 1
            elif endpoint == "events":
                self.written.add(user)

    def error(self, endpoint: str, error: Exception) -> None:
        with self.lock:
            key = f"{endpoint}: {type(error).__name__}"
            self.errors[key] = self.errors.get(key, 0) + 1


def request(
    rng: random.Random, item_ids: list[str], users: int, answers: list[tuple[str, list[str]]]
) -> tuple[str, str, str, bytes | None, str]:
    """``(endpoint, method, path, body, user)`` drawn from the mix; feedback answers one of ``answers`` once."""
    endpoint = rng.choices(list(ENDPOINTS), weights=list(ENDPOINTS.values()))[0]
    user = f"user{rng.randrange(users)}"
    if endpoint == "feedback" and answers:
        impression, shown = answers.pop(rng.randrange(len(answers)))
        clicked = shown[:1] if shown and rng.random() < 0.3 else []
        return (
            endpoint,
            "POST",
            "/feedback",
            json.dumps({"impression_id": impression, "clicked": clicked}).encode(),
            user,
        )
    if endpoint == "feedback":
        endpoint = "recommend"
    if endpoint == "events":
        now = time.time()
        events = [
            {"user_id": user, "item_id": rng.choice(item_ids), "type": "view", "timestamp": now - rng.random()}
            for _ in range(rng.randint(1, 5))
        ]
        return endpoint, "POST", "/events", json.dumps({"events": events}).encode(), user
    if endpoint == "recommend":
        return endpoint, "POST", "/recommend", json.dumps({"user_id": user, "k": 10}).encode(), user
    return endpoint, "GET", f"/users/{user}/history", None, user


def client(
    address: tuple[str, int], item_ids: list[str], args: argparse.Namespace, deadline: float, budget, seed: int, tally
) -> None:
    """One keep-alive connection sending drawn requests until the deadline or the shared request budget ends."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection(*address, timeout=30)
    answers: list[tuple[str, list[str]]] = []
    while time.monotonic() < deadline and budget.acquire(blocking=False):
        endpoint, method, path, body, user = request(rng, item_ids, args.users, answers)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        start = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            tally.add(endpoint, time.perf_counter() - start, response.status, user)
            if endpoint == "recommend" and response.status == 200:
                answer = json.loads(payload)
                if answer.get("impression_id"):
                    answers.append((answer["impression_id"], [item["id"] for item in answer["items"]]))
        except (OSError, http.client.HTTPException) as error:
            tally.error(endpoint, error)
            connection.close()
            connection = http.client.HTTPConnection(*address, timeout=30)
    connection.close()


def lost_sessions(url: str, users: set[str]) -> int:
    """Users sent events whose history is now empty (or unreadable)."""
    lost = 0
    for user in sorted(users):
        try:
            with urllib.request.urlopen(f"{url}/users/{user}/history", timeout=30) as response:
                lost += not json.loads(response.read())["events"]
        except OSError:
            lost += 1
    return lost


def start_server(bundle: Path, store: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    settings = log.parent / "strategy.yaml"
    settings.write_text(STRATEGY)
    command = [
        sys.executable,
        "-m",
        "rectorch.serving.cli",
        f"bundle={bundle}",
        f"port={port}",
        f"session_store={store}",
        "--settings",
        str(settings),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2)
            return process, url
        except OSError:
            time.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"rectorch-serve did not come up: {log.read_text()[-2000:]}")


def measure(url: str, item_ids: list[str], args: argparse.Namespace) -> dict:
    parts = urllib.parse.urlsplit(url)
    address, tally = (parts.hostname, parts.port or 80), Tally()
    budget, deadline = threading.Semaphore(args.max_requests), time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=client, args=(address, item_ids, args, deadline, budget, args.seed + c, tally))
        for c in range(args.clients)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    total = sum(len(values) for values in tally.latencies.values())
    endpoints = {}
    for name, values in tally.latencies.items():
        ms = np.asarray(values or [0.0]) * 1000
        endpoints[name] = {
            "requests": len(values),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
        }
    return {
        "seconds": round(wall, 1),
        "clients": args.clients,
        "requests": total,
        "req_per_s": round(total / wall, 1),
        "endpoints": endpoints,
        "errors": sum(tally.errors.values()),
        "errors_by_kind": tally.errors,
        "users_written": len(tally.written),
        "lost_sessions": lost_sessions(url, tally.written),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="target this running server (its bundle must be --bundle)")
    parser.add_argument("--bundle", type=Path, help="bundle served (default: a synthetic one)")
    parser.add_argument("--items", type=int, default=20_000, help="items of the synthetic bundle")
    parser.add_argument("--store", help="session_store of the started server (default: a temporary redis-server)")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration (1 to 3600)")
    parser.add_argument("--clients", type=int, default=16, help="client threads (1 to 64)")
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="stop after this many requests")
    parser.add_argument("--users", type=int, default=5000, help="distinct user ids")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (1 <= args.seconds <= 3600 and 1 <= args.clients <= 64 and args.users > 0 and args.max_requests > 0):
        parser.error("--seconds must lie in [1, 3600], --clients in [1, 64]; --users and --max-requests positive")
    if args.url and not args.bundle:
        parser.error("--url needs the --bundle it serves (for its item ids)")
    with tempfile.TemporaryDirectory(prefix="load-sessions-") as tmp:
        work = Path(tmp)
        bundle = args.bundle or build_bundle(work / "bundle", args.items, args.seed)
        item_ids = json.loads((bundle / "item_ids.json").read_text())
        redis_server = server = None
        try:
            url, store = args.url, args.store
            if url is None:
                if store is None:
                    (work / "redis").mkdir()
                    redis_server = RedisServer(work / "redis").start()
                    store = redis_server.url
                server, url = start_server(bundle, store, work / "server.log")
            result = {"url": url, "store": store, "items": len(item_ids), **measure(url, item_ids, args)}
        finally:
            if server is not None:
                stop_server(server)
            if redis_server is not None:
                redis_server.stop()
    print(json.dumps(result), flush=True)
    sys.exit(1 if result["errors"] or result["lost_sessions"] else 0)


if __name__ == "__main__":
    main()
