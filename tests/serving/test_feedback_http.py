"""``/recommend`` through the strategy layer, ``POST /feedback`` and the impression logs, over loopback HTTP."""

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rectorch.serving import Recommender
from rectorch.serving.cli import parse_settings
from rectorch.serving.impression_log import SCHEMA
from rectorch.serving.sessions import MemoryStore, SessionStore, StoreUnavailable, open_store
from rectorch.serving.settings import StrategySettings
from rectorch.serving.strategy import build_layer
from tests.serving.redis_server import RedisServer, free_port, need_redis
from tests.serving.test_http_sessions import call, serving, start_cli, stop

ARMS = [
    {"name": "control"},
    {"name": "explore", "settings": {"explore_share": 0.2}},  # 1 of k=5 slots for new or under-exposed items
    {"name": "diverse", "settings": {"mmr_lambda": 0.5, "diversity": "categories"}},
]
REQUEST = {"history": ["i1", "i4"], "k": 5}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class FlakyStore(MemoryStore):
    """A memory store that can be down (every call fails) or fail its next ``fail_incr`` increments."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.down, self.fail_incr = False, 0

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("flaky://: connection refused")

    def _incr(self, key: str, field: str, amount: float) -> float:
        self._check()
        if self.fail_incr:
            self.fail_incr -= 1
            raise StoreUnavailable("flaky://: connection reset")
        return super()._incr(key, field, amount)

    def _counts(self, key: str) -> dict[str, float]:
        self._check()
        return super()._counts(key)

    def _put_once(self, key: str, value: str, ttl_seconds: float) -> bool:
        self._check()
        return super()._put_once(key, value, ttl_seconds)

    def _take(self, key: str) -> str | None:
        self._check()
        return super()._take(key)


@pytest.fixture(scope="module")
def recommender(bundle: Path) -> Recommender:
    return Recommender.from_bundle(bundle)


@contextmanager
def strategy_server(
    recommender: Recommender, store: SessionStore, clock=time.time, **settings
) -> Iterator[tuple[str, object]]:
    """The app with a strategy layer over ``store``; yields its URL and the layer (closed when the server stops)."""
    layer = build_layer(StrategySettings(**{"arms": ARMS, **settings}), store, clock)
    with serving(recommender, store=store, layer=layer) as url:
        yield url, layer


def posterior(url: str, segment: str = "new") -> dict:
    status, answer = call(f"{url}/strategy/{segment}")
    assert status == 200
    return {arm: (row["impressions"], row["clicks"]) for arm, row in answer["arms"].items()}


def test_answers_carry_an_impression_id_the_arm_and_propensities(recommender: Recommender) -> None:
    with strategy_server(recommender, MemoryStore(), mode="uniform") as (url, _):
        answers = [call(f"{url}/recommend", {**REQUEST, "user_id": f"u{u}"})[1] for u in range(30)]
        again = call(f"{url}/recommend", {**REQUEST, "user_id": "u0"})[1]
        metadata = call(f"{url}/metadata")[1]["strategy"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", a["impression_id"]) for a in answers)
    assert len({a["impression_id"] for a in answers}) == 30
    assert {a["arm"] for a in answers} == {"control", "explore", "diverse"} and again["arm"] == answers[0]["arm"]
    assert {item["propensity"] for a in answers for item in a["items"]} == {1 / 3}
    assert {a["segment"] for a in answers} == {"new"}
    for answer in answers:  # each arm answers with its own settings
        sources = [item["source"] for item in answer["items"]]
        assert ("explore" in sources) == (answer["arm"] == "explore"), answer
    assert metadata == {"mode": "uniform", "arms": ["control", "explore", "diverse"], "control": "control",
                        "segment_by": "history"}  # fmt: skip


def test_feedback_updates_the_posterior_once(recommender: Recommender) -> None:
    with strategy_server(recommender, MemoryStore(), mode="thompson") as (url, _):
        answer = call(f"{url}/recommend", REQUEST)[1]
        arm, impression, shown = answer["arm"], answer["impression_id"], [i["id"] for i in answer["items"]]
        assert posterior(url)[arm] == (1, 0)
        code, refused = call(f"{url}/feedback", {"impression_id": impression, "clicked": [shown[0], "nope"]})
        assert code == 422 and "items ['nope'] were not shown" in refused["error"]  # nothing counted, record kept
        body = {"impression_id": impression, "clicked": shown[1:3], "converted": shown[2:3]}
        assert call(f"{url}/feedback", body) == (
            200,
            {"impression_id": impression, "arm": arm, "segment": "new", "clicked": 2, "converted": 1, "reward": 1},
        )
        assert posterior(url)[arm] == (1, 1)  # one answer, one click: the unit is the answer
        code, twice = call(f"{url}/feedback", body)
        assert code == 409 and "already has its feedback" in twice["error"]
        assert call(f"{url}/feedback", body)[0] == 409  # still 409, still counted once
        assert posterior(url)[arm] == (1, 1)
        code, unknown = call(f"{url}/feedback", {"impression_id": "0" * 32})
        assert code == 404 and "unknown or expired impression_id" in unknown["error"]
        assert call(f"{url}/feedback", {"impression_id": "XYZ"})[0] == 422
        assert call(f"{url}/feedback", {"impression_id": impression, "liked": []})[0] == 422
        other = call(f"{url}/recommend", REQUEST)[1]
        assert call(f"{url}/feedback", {"impression_id": other["impression_id"]})[1]["reward"] == 0
        total = posterior(url)
        assert sum(n for n, _ in total.values()) == 2 and sum(c for _, c in total.values()) == 1


def test_an_expired_impression_is_404_and_logged_unclicked(recommender: Recommender, tmp_path: Path) -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    settings = {"mode": "uniform", "feedback_ttl_seconds": 60, "log_dir": str(tmp_path)}
    with strategy_server(recommender, store, clock, **settings) as (url, _):
        answer = call(f"{url}/recommend", {**REQUEST, "user_id": "ann"})[1]
        clock.now += 61
        body = {"impression_id": answer["impression_id"], "clicked": [answer["items"][0]["id"]]}
        code, expired = call(f"{url}/feedback", body)
        assert code == 404 and "has expired" in expired["error"]
        assert call(f"{url}/feedback", body)[0] == 404
        assert posterior(url)[answer["arm"]] == (1, 0)
    rows = pq.read_table(tmp_path).to_pylist()
    assert [(r["impression_id"], r["clicked"], r["user_id"]) for r in rows] == [
        (answer["impression_id"], False, "ann")
    ] * len(answer["items"])


def test_a_store_that_is_down_is_503_and_nothing_is_lost_or_counted_twice(
    recommender: Recommender, tmp_path: Path
) -> None:
    store = FlakyStore()
    with strategy_server(recommender, store, mode="thompson", log_dir=str(tmp_path)) as (url, _):
        answer = call(f"{url}/recommend", REQUEST)[1]
        arm, body = answer["arm"], {"impression_id": answer["impression_id"], "clicked": [answer["items"][0]["id"]]}
        store.down = True
        for path, payload in [("/recommend", REQUEST), ("/feedback", body)]:
            code, refused = call(f"{url}{path}", payload)
            assert code == 503 and refused["error"].startswith("session store unavailable: flaky://"), path
        store.down = False
        store.fail_incr = 1  # the click's increment fails after the record was taken: undone, 503
        assert call(f"{url}/feedback", body)[0] == 503
        assert call(f"{url}/feedback", body)[0] == 200  # the retry finds the record again
        assert call(f"{url}/feedback", body)[0] == 409
        store.fail_incr = 1  # the impression's increment fails: the answer is withdrawn
        assert call(f"{url}/recommend", REQUEST)[0] == 503
        counts = posterior(url)
        assert counts[arm] == (1, 1) and sum(n for n, _ in counts.values()) == 1
    rows = pq.read_table(tmp_path).to_pylist()
    assert len(rows) == len(answer["items"]) and sum(r["clicked"] for r in rows) == 1


def test_logs_are_what_rectorch_abtest_reads(recommender: Recommender, tmp_path: Path, capsys) -> None:
    settings = {"mode": "uniform", "log_dir": str(tmp_path / "logs"), "log_rows_per_file": 50}
    answers = []
    with strategy_server(recommender, MemoryStore(), **settings) as (url, _):
        for user in range(40):
            answer = call(f"{url}/recommend", {**REQUEST, "user_id": f"u{user}", "context": {"device": 2}})[1]
            answers.append(answer)
            if user % 2:
                top = answer["items"][0]["id"]
                call(f"{url}/feedback", {"impression_id": answer["impression_id"], "clicked": [top]})
    # the server's shutdown logged the 20 answers without feedback and wrote the buffer
    files = sorted((tmp_path / "logs").glob("*.parquet"))
    assert len(files) == 4 and all(pq.read_schema(f).equals(SCHEMA) for f in files)
    table = pq.read_table(tmp_path / "logs")
    rows = table.to_pylist()
    assert len(rows) == 200 and {r["context"] for r in rows} == {'{"device": 2.0}'}
    by_impression = {a["impression_id"]: a for a in answers}
    clicked = {(answers[u]["impression_id"], 0) for u in range(1, 40, 2)}
    for row in rows:
        answer = by_impression[row["impression_id"]]
        assert row["item_id"] == answer["items"][row["position"]]["id"] and row["arm"] == answer["arm"]
        assert row["clicked"] == ((row["impression_id"], row["position"]) in clicked) and row["propensity"] == 1 / 3
        assert row["category"] in ("action", "comedy", "drama") and row["popularity"] > 0
    pytest.importorskip("scipy", reason="rectorch-abtest needs the [experiments] extra")
    from rectorch.experiments.cli import main

    assert main([str(tmp_path / "logs")]) == 0
    assert "control" in capsys.readouterr().out


def test_feedback_without_a_strategy_layer_is_404(recommender: Recommender) -> None:
    with serving(recommender) as url:
        code, answer = call(f"{url}/feedback", {"impression_id": "0" * 32})
        assert code == 404 and "no strategy layer" in answer["error"]
        assert call(f"{url}/strategy/new")[0] == 404
        assert "impression_id" not in call(f"{url}/recommend", REQUEST)[1]


def test_with_redis_the_posterior_survives_and_a_down_store_is_503(recommender: Recommender, tmp_path: Path) -> None:
    need_redis()
    server = RedisServer(tmp_path).start()
    store = open_store(f"{server.url}?prefix=fb")
    try:
        with strategy_server(recommender, store, mode="thompson") as (url, _):
            answer = call(f"{url}/recommend", REQUEST)[1]
            body = {"impression_id": answer["impression_id"], "clicked": [answer["items"][0]["id"]]}
            server.stop()
            assert call(f"{url}/feedback", body)[0] == 503
            assert call(f"{url}/recommend", REQUEST)[0] == 503
            server.start()
            assert call(f"{url}/feedback", body)[0] == 200
            assert call(f"{url}/feedback", body)[0] == 409
        other = open_store(f"{server.url}?prefix=fb")  # another process sees the same counters
        counts = other.counts("strategy:default:new")
        assert counts == {f"{answer['arm']}:impressions": 1.0, f"{answer['arm']}:clicks": 1.0}
        other.close()
    finally:
        store.close()
        server.stop()


def test_rectorch_serve_runs_the_strategy_from_a_settings_file(bundle: Path, tmp_path: Path) -> None:
    settings = tmp_path / "serve.yaml"
    settings.write_text(
        "strategy:\n  mode: thompson\n  control: control\n  segment_by: context.device\n"
        f"  log_dir: {tmp_path / 'logs'}\n  explore_share: 0.2\n"
        "  arms:\n    - {name: control}\n    - {name: diverse, settings: {mmr_lambda: 0.5}}\n"
    )
    parsed = parse_settings([f"bundle={bundle}", "--settings", str(settings), "strategy.seed=4"])
    assert [a.name for a in parsed.strategy.arms] == ["control", "diverse"] and parsed.strategy.seed == 4
    port = free_port()
    process = start_cli(bundle, port, f"--settings={settings}")
    try:
        answer = call(f"http://127.0.0.1:{port}/recommend", {**REQUEST, "context": {"device": 1}})[1]
        assert answer["segment"] == "device=1"
        assert sum(item["source"] == "explore" for item in answer["items"]) == 1  # explore_share 0.2 of k=5
        code, refused = call(f"http://127.0.0.1:{port}/recommend", {**REQUEST, "context": {"device": 99}})
        assert code == 400 and "context field 'device' segments the traffic" in refused["error"]
    finally:
        stop(process)  # SIGTERM: the layer logs the pending answer and writes its buffer
    assert pq.read_table(tmp_path / "logs").num_rows == 5
