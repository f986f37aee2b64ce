"""``/events``, ``/users/{id}/history`` and ``/recommend`` by ``user_id`` over a real loopback socket.

The tiny bundle's encoder averages the newest 5 items, so the store keeps 5 events per user.
"""

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from rectorch.serving import Recommender
from rectorch.serving.app import create_app
from rectorch.serving.sessions import MemoryStore, merge_histories
from tests.serving.conftest import NOW, NUM_ITEMS
from tests.serving.redis_server import RedisServer, free_port, need_redis


def call(url: str, body: dict | bytes | None = None, method: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    method = method or ("POST" if data is not None else "GET")
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"rectorch-serve exited: {process.stdout.read()}")
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not come up")


@contextmanager
def serving(recommender: Recommender, **options) -> Iterator[str]:
    """``create_app(recommender, **options)`` on a free 127.0.0.1 port in this process."""
    port = free_port()
    config = uvicorn.Config(create_app(recommender, **options), host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def recommender(bundle: Path) -> Recommender:
    return Recommender.from_bundle(bundle)


@pytest.fixture(scope="module")
def server(recommender: Recommender) -> Iterator[str]:
    with serving(recommender, events_max_batch=50) as url:
        yield url


def event(user: str, item: str, timestamp: float, kind: str = "view") -> dict:
    return {"user_id": user, "item_id": item, "type": kind, "timestamp": timestamp}


def test_events_build_the_history_that_recommend_uses(server: str, recommender: Recommender) -> None:
    batch = [event("ann", "i3", NOW + 2), event("bob", "i1", NOW), event("ann", "i0", NOW + 1, "click")]
    assert call(f"{server}/events", {"events": batch}) == (200, {"stored": 3, "users": 2})
    assert call(f"{server}/events", {"events": [{"user_id": "ann", "item_id": "i6", "type": "cart"}]})[0] == 200
    status, answer = call(f"{server}/users/ann/history")
    assert status == 200 and answer["user_id"] == "ann"
    assert [(e["item_id"], e["type"]) for e in answer["events"]] == [("i0", "click"), ("i3", "view"), ("i6", "cart")]
    assert answer["events"][0]["timestamp"] == NOW + 1 and answer["events"][2]["timestamp"] > time.time() - 60
    assert [e["item_id"] for e in call(f"{server}/users/ann/history?limit=1")[1]["events"]] == ["i6"]

    def top(body: dict) -> list[str]:
        status, answer = call(f"{server}/recommend", body)
        assert status == 200
        return [item["id"] for item in answer["items"]]

    assert top({"user_id": "ann", "k": 5}) == recommender.recommend(["i0", "i3", "i6"], k=5).items
    merged = merge_histories(["i0", "i3", "i6"], ["i1", "i3"], 5)
    assert merged == ["i0", "i6", "i1", "i3"]
    assert top({"user_id": "ann", "history": ["i1", "i3"], "k": 5}) == recommender.recommend(merged, k=5).items
    assert top({"user_id": "nobody", "k": 5}) == recommender.recommend([], k=5).items  # popularity fallback
    assert call(f"{server}/users/ann/history", method="DELETE") == (200, {"user_id": "ann", "events": []})
    assert call(f"{server}/users/ann/history")[1]["events"] == []
    assert [e["item_id"] for e in call(f"{server}/users/bob/history")[1]["events"]] == ["i1"]


def test_the_store_keeps_the_newest_items_the_encoder_reads(server: str) -> None:
    batch = [event("cat", f"i{r}", NOW + r) for r in range(8)]
    assert call(f"{server}/events", {"events": batch[::-1]})[0] == 200
    assert [e["item_id"] for e in call(f"{server}/users/cat/history")[1]["events"]] == [f"i{r}" for r in range(3, 8)]
    assert call(f"{server}/metadata")[1]["sessions"] == {"store": "memory://", "max_events": 5, "ttl_seconds": 604800.0}


@pytest.mark.parametrize(
    ("events", "status", "message"),
    [
        (
            [event("dan", "i1", NOW), event("dan", "zz", NOW), event("dan", "yy", NOW)],
            422,
            "unknown item ids ['zz', 'yy']",
        ),
        ([event("dan", "i1", NOW * 1000)], 422, "body.events.0.timestamp: Value error, timestamp lies more than"),
        ([event("dan", "i1", 12.0)], 422, "body.events.0.timestamp: Input should be greater than or equal to"),
        ([{**event("dan", "i1", NOW), "timestamp": "2024-01-01"}], 422, "body.events.0.timestamp"),
        ([event("dan", "i1", NOW, "Bought!")], 422, "body.events.0.type: String should match pattern"),
        ([{**event("dan", "i1", NOW), "colour": "red"}], 422, "body.events.0.colour: Extra inputs"),
        ([{"item_id": "i1", "type": "view"}], 422, "body.events.0.user_id: Field required"),
        ([], 422, "body.events: List should have at least 1 item"),
        ([event("dan", "i1", NOW)] * 51, 400, "events holds 51 events, at most 50 allowed (events_max_batch)"),
    ],
)
def test_a_bad_batch_is_refused_whole(server: str, events: list, status: int, message: str) -> None:
    code, answer = call(f"{server}/events", {"events": events})
    assert code == status and message in answer["error"]
    assert call(f"{server}/users/dan/history")[1]["events"] == []


def test_unknown_items_are_listed_in_the_detail(server: str) -> None:
    code, answer = call(f"{server}/events", {"events": [event("eve", "zz", NOW), event("eve", "i2", NOW)]})
    assert code == 422 and answer["detail"]["unknown_items"] == ["zz"]
    assert "nothing of this batch was stored" in answer["error"]
    assert call(f"{server}/recommend", b'{"user_id": "", "k": 2}')[0] == 422
    assert call(f"{server}/users/eve/history?limit=0")[0] == 422


def share_of(server: str, user: str, category: int) -> float:
    """Share of the tiny catalog's ``category`` (item number mod 3) in the user's next top-10."""
    answer = call(f"{server}/recommend", {"user_id": user, "k": 10})[1]
    return float(np.mean([int(item["id"][1:]) % 3 == category for item in answer["items"]]))


def test_three_events_in_one_category_raise_its_share_of_the_next_top_10(server: str) -> None:
    """The planted bar, measured over 150 users whose stored history holds none of the target category.

    The encoder averages the newest 5 items and the index ranks by inner product, so the lift is largest
    for the category whose item vectors are longest (category 0 here) and smallest for the shortest.
    """
    rng = np.random.default_rng(0)
    category = np.arange(NUM_ITEMS) % 3
    lifts: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for user in range(150):
        target = int(rng.integers(3))
        history = rng.choice(np.flatnonzero(category != target), 5, replace=False)
        fresh = rng.choice(np.flatnonzero(category == target), 3, replace=False)
        name = f"bar-{user}"
        call(f"{server}/events", {"events": [event(name, f"i{r}", NOW + t) for t, r in enumerate(history)]})
        before = share_of(server, name, target)
        call(f"{server}/events", {"events": [event(name, f"i{r}", NOW + 10 + t) for t, r in enumerate(fresh)]})
        lifts[target].append(share_of(server, name, target) - before)
    mean = float(np.mean([lift for values in lifts.values() for lift in values]))
    per_category = {c: round(100 * float(np.mean(values)), 1) for c, values in lifts.items()}
    print(f"three events raise their category's top-10 share by {100 * mean:.1f} pp on average ({per_category})")
    assert mean >= 0.30


def start_cli(bundle: Path, port: int, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "rectorch.serving.cli", f"bundle={bundle}", f"port={port}", *overrides]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis()
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_with_redis_restarts_lose_no_session_and_a_down_store_is_a_503(bundle: Path, redis_server: RedisServer) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = None
    try:
        process = start_cli(bundle, port, f"serve.session_store={redis_server.url}?prefix=http", "session_max_events=4")
        batch = [event("fay", f"i{r}", NOW + r) for r in (4, 1, 3, 2, 0)]
        assert call(f"{url}/events", {"events": batch}) == (200, {"stored": 5, "users": 1})
        kept = ["i1", "i2", "i3", "i4"]
        assert [e["item_id"] for e in call(f"{url}/users/fay/history")[1]["events"]] == kept
        stop(process)  # the HTTP server restarts
        process = start_cli(bundle, port, f"session_store={redis_server.url}?prefix=http", "session_max_events=4")
        assert [e["item_id"] for e in call(f"{url}/users/fay/history")[1]["events"]] == kept
        redis_server.restart(kill=True)  # Redis crashes and comes back
        assert [e["item_id"] for e in call(f"{url}/users/fay/history")[1]["events"]] == kept
        recommended = call(f"{url}/recommend", {"user_id": "fay", "k": 3})[1]["items"]

        redis_server.stop()
        for path, body in [
            ("/events", {"events": [event("fay", "i9", NOW + 9), event("gus", "i8", NOW)]}),
            ("/users/fay/history", None),
            ("/recommend", {"user_id": "fay", "k": 3}),
        ]:
            code, answer = call(f"{url}{path}", body)
            assert code == 503 and answer["error"].startswith("session store unavailable: redis://127.0.0.1:")
        assert call(f"{url}/recommend", {"history": ["i1"], "k": 3})[0] == 200  # no user_id: no store needed
        redis_server.start()
        assert [e["item_id"] for e in call(f"{url}/users/fay/history")[1]["events"]] == kept  # nothing half-written
        assert call(f"{url}/users/gus/history")[1]["events"] == []
        assert call(f"{url}/recommend", {"user_id": "fay", "k": 3})[1]["items"] == recommended
    finally:
        if process is not None:
            stop(process)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("session_store=mysql://db", "session_store must be memory://"),
        ("session_store=memory://?max_users=0", "max_users must be a positive int"),
        ("session_store=redis://127.0.0.1:6379/0?prefix=a:", "setting 'session_store' must be str"),  # YAML: a map
        ("session_ttl_seconds=0", "session_ttl_seconds must lie in (0, 10 years]"),
        ("session_max_events=0", "session_max_events must lie in 1..100000"),
    ],
)
def test_the_cli_refuses_bad_session_settings(
    bundle: Path, override: str, message: str, capsys: pytest.CaptureFixture
) -> None:
    from rectorch.serving.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([f"bundle={bundle}", override])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_create_app_uses_the_store_it_is_given(recommender: Recommender) -> None:
    with serving(recommender, store=MemoryStore(max_events=2)) as url:
        call(f"{url}/events", {"events": [event("hal", f"i{r}", NOW + r) for r in range(3)]})
        assert [e["item_id"] for e in call(f"{url}/users/hal/history")[1]["events"]] == ["i1", "i2"]
