"""Every session store against one behavioural test set: order, caps, TTL, LRU, counters, once-only records."""

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import pytest

from rectorch.serving.manifest import InputSpec
from rectorch.serving.sessions import (
    Event,
    MemoryStore,
    RedisStore,
    SessionStore,
    SqliteStore,
    StoreUnavailable,
    history_length,
    merge_histories,
    open_store,
)
from tests.serving.redis_server import RedisServer, need_redis


class Clock:
    """A settable clock for the stores that take one; Redis keeps real time, so ``advance`` sleeps there."""

    def __init__(self, real: bool = False) -> None:
        self.now, self.real = 1_000_000.0, real

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if self.real:
            time.sleep(seconds)
        self.now += seconds


Make = Callable[..., tuple[SessionStore, Clock]]


def view(item: str, timestamp: float) -> Event:
    return Event(item, "view", timestamp)


def items(store: SessionStore, user: str, limit: int | None = None) -> list[str]:
    return [event.item_id for event in store.history(user, limit)]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, free to be killed and restarted."""
    need_redis()
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    yield server.start()
    server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """``make(max_events=..., ttl_seconds=..., max_users=...)`` → a fresh, empty store and its clock."""
    opened: list[SessionStore] = []

    def build(max_events: int = 10, ttl_seconds: float = 3600.0, max_users: int = 100) -> tuple[SessionStore, Clock]:
        clock = Clock(real=request.param == "redis")
        if request.param == "memory":
            store = MemoryStore(max_events, ttl_seconds, max_users, clock=clock)
        elif request.param == "sqlite":
            store = SqliteStore(tmp_path / f"{uuid4().hex}.db", max_events, ttl_seconds, max_users, clock=clock)
        else:
            url = f"{request.getfixturevalue('redis_server').url}?prefix=test-{uuid4().hex}"
            store = open_store(url, max_events, ttl_seconds)
        opened.append(store)
        return store, clock

    yield build
    for store in opened:
        store.close()


def test_history_is_chronological_whatever_the_arrival_order(make: Make) -> None:
    store, _ = make()
    store.append("u", [view("a", 30.0), view("b", 10.0), Event("c", "cart", 20.0)])
    store.append("u", [view("d", 5.0)])  # late
    store.append("u", [view("e", 20.0)])  # the same second as c, arrived after it
    assert store.history("u") == [
        view("d", 5.0),
        view("b", 10.0),
        Event("c", "cart", 20.0),
        view("e", 20.0),
        view("a", 30.0),
    ]
    assert items(store, "u", limit=2) == ["e", "a"]
    assert store.history("nobody") == []


def test_history_keeps_the_newest_max_events(make: Make) -> None:
    store, _ = make(max_events=3)
    store.append("u", [view(f"i{t}", float(t)) for t in (5, 1, 4, 2, 3)])
    assert items(store, "u") == ["i3", "i4", "i5"]
    store.append("u", [view("old", 0.0)])  # older than every kept event of a full history: dropped
    assert items(store, "u") == ["i3", "i4", "i5"]
    store.append("u", [view("late", 4.5)])
    assert items(store, "u") == ["i4", "late", "i5"]
    assert items(store, "u", limit=100) == ["i4", "late", "i5"]


def test_a_batch_lands_per_user_and_forget_drops_one_user(make: Make) -> None:
    store, _ = make()
    store.append_many({"u": [view("a", 1.0), view("b", 2.0)], "v": [view("c", 1.5)], "w": []})
    assert (items(store, "u"), items(store, "v"), items(store, "w")) == (["a", "b"], ["c"], [])
    store.forget("u")
    store.forget("never-seen")
    assert (items(store, "u"), items(store, "v")) == ([], ["c"])


def test_a_history_expires_ttl_seconds_after_the_last_append(make: Make) -> None:
    store, clock = make(ttl_seconds=1.0)
    store.append_many({"u": [view("a", 1.0)], "v": [view("b", 1.0)]})
    clock.advance(0.6)
    store.append("u", [view("c", 2.0)])  # u is active again; v is not
    clock.advance(0.6)
    assert items(store, "u") == ["a", "c"]
    assert items(store, "v") == []
    clock.advance(0.6)
    assert items(store, "u") == []
    store.append("u", [view("d", 3.0)])  # an expired history is not resurrected by a new event
    assert items(store, "u") == ["d"]


@pytest.mark.parametrize("make", ["memory", "sqlite"], indirect=True)  # Redis: TTL and maxmemory-policy bound users
def test_the_least_recently_active_user_is_evicted(make: Make) -> None:
    store, clock = make(max_users=3)
    for user in ("a", "b", "c", "a", "d"):
        store.append(user, [view(f"{user}-item", clock.now)])
        clock.advance(1.0)
    assert [bool(store.history(user)) for user in "abcd"] == [True, False, True, True]
    store.forget("c")
    store.append("e", [view("e-item", clock.now)])  # room again: nobody else evicted
    assert [bool(store.history(user)) for user in "abde"] == [True, False, True, True]


def test_counters_add_up_per_key(make: Make) -> None:
    store, _ = make()
    assert store.incr("arm:sasrec", "shows") == 1.0
    assert store.incr("arm:sasrec", "clicks", 2.5) == 2.5
    assert store.incr("arm:sasrec", "clicks", -0.5) == 2.0
    store.incr("arm:popular", "shows", 4)
    assert store.counts("arm:sasrec") == {"shows": 1.0, "clicks": 2.0}
    assert store.counts("arm:popular") == {"shows": 4.0}
    assert store.counts("arm:none") == {}


def test_a_record_is_stored_once_and_taken_once_by_8_racing_threads(make: Make) -> None:
    store, _ = make()
    start = threading.Barrier(8)

    def race(action: Callable[[int], object]) -> list:
        def run(i: int) -> object:
            start.wait()
            return action(i)

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(run, range(8)))

    stored = race(lambda i: store.put_once("impression-1", f"value-{i}", 60.0))
    assert sum(stored) == 1
    taken = race(lambda _: store.take("impression-1"))
    assert [value for value in taken if value is not None] == [f"value-{stored.index(True)}"]
    assert store.take("impression-1") is None
    assert store.take("never-stored") is None


def test_an_expired_record_is_gone(make: Make) -> None:
    store, clock = make()
    assert store.put_once("r", "first", 0.3)
    assert not store.put_once("r", "second", 0.3)
    clock.advance(0.5)
    assert store.take("r") is None
    assert store.put_once("r", "third", 60.0)  # the expired record no longer blocks the key
    assert store.take("r") == "third"


def test_bad_arguments_are_refused_and_nothing_is_written(make: Make) -> None:
    store, _ = make()
    bad = [
        lambda: store.append("u", [view("a", 1.0), Event("", "view", 2.0)]),
        lambda: store.append("u", [view("a", float("nan"))]),
        lambda: store.append("u", [Event("a", "view", True)]),
        lambda: store.append("", [view("a", 1.0)]),
        lambda: store.append("u", [("a", "view", 1.0)]),
        lambda: store.history("u", limit=0),
        lambda: store.incr("k", "f", float("inf")),
        lambda: store.put_once("k", "v", 0),
        lambda: store.put_once("k", b"v", 1),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()
    assert store.history("u") == [] and store.take("k") is None and store.counts("k") == {}


def test_sqlite_keeps_everything_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'sessions.db'}"
    store = open_store(url, max_events=4)
    store.append("u", [view("a", 2.0), view("b", 1.0)])
    store.incr("arm", "clicks", 3)
    store.put_once("impression", "shown", 3600)
    store.close()
    again = open_store(url, max_events=4)
    assert isinstance(again, SqliteStore) and items(again, "u") == ["b", "a"]
    assert again.counts("arm") == {"clicks": 3.0} and again.take("impression") == "shown"
    again.close()


def test_redis_keeps_everything_across_a_crash(own_redis: RedisServer) -> None:
    store = open_store(own_redis.url, max_events=4)
    store.append("u", [view("a", 2.0), view("b", 1.0)])
    store.incr("arm", "clicks", 3)
    store.put_once("impression", "shown", 3600)
    own_redis.restart(kill=True)  # SIGKILL: only what was fsynced survives
    assert items(store, "u") == ["b", "a"]  # the client reconnects by itself
    assert store.counts("arm") == {"clicks": 3.0} and store.take("impression") == "shown"
    store.close()


def test_a_redis_that_is_down_raises_store_unavailable_quickly(own_redis: RedisServer) -> None:
    store = open_store(own_redis.url)
    store.append("u", [view("a", 1.0)])
    own_redis.stop()
    calls = [
        lambda: store.append_many({"u": [view("b", 2.0)], "v": [view("c", 2.0)]}),
        lambda: store.history("u"),
        lambda: store.forget("u"),
        lambda: store.incr("k", "f"),
        lambda: store.counts("k"),
        lambda: store.put_once("k", "v", 10),
        lambda: store.take("k"),
    ]
    for call in calls:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{own_redis.port}"):
            call()
        assert time.monotonic() - began < 3.0
    own_redis.start()
    assert items(store, "u") == ["a"] and items(store, "v") == []  # nothing of the failed batch landed
    store.close()


def test_a_locked_sqlite_file_raises_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    store = open_store(f"sqlite://{path}?timeout=0.05")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    with pytest.raises(StoreUnavailable, match="database is locked"):
        store.append("u", [view("a", 1.0)])
    other.execute("ROLLBACK")
    other.close()
    store.append("u", [view("a", 1.0)])
    assert items(store, "u") == ["a"]
    store.close()


def test_open_store_reads_its_options_from_the_url(tmp_path: Path) -> None:
    memory = open_store("memory://?max_users=2&max_records=5", max_events=7, ttl_seconds=60)
    assert isinstance(memory, MemoryStore) and (memory.max_users, memory.max_records, memory.max_events) == (2, 5, 7)
    lite = open_store(f"sqlite:///{tmp_path}/a.db?max_users=9&timeout=0.5")  # sqlite:////abs/path works too
    assert isinstance(lite, SqliteStore) and (lite.path, lite.max_users, lite.timeout) == (tmp_path / "a.db", 9, 0.5)
    lite.close()
    remote = open_store("redis://:secret@127.0.0.1:6390/3?prefix=shop&timeout=0.2")
    assert isinstance(remote, RedisStore) and remote.prefix == "shop" and "secret" not in remote.name
    assert remote.client.connection_pool.connection_kwargs["db"] == 3
    assert remote.client.connection_pool.connection_kwargs["socket_timeout"] == 0.2
    remote.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "is not one of memory://"),
        ("mysql://localhost/db", "is not one of memory://"),
        ("memory://host", "takes no host or path"),
        ("memory://?max_users=0", "max_users must be a positive int"),
        ("memory://?max_users=many", "max_users must be a positive int"),
        ("memory://?colour=red", "unknown option 'colour'; memory:// takes max_users, max_records"),
        ("sqlite://relative.db", "write sqlite:///absolute/path.db"),
        ("sqlite:///no/such/directory/x.db", "needs an absolute path in an existing directory"),
        ("redis://:6379/0", "the host is missing"),
        ("redis://127.0.0.1:port/0", "db and port integers"),
        ("redis://:hunter2@127.0.0.1:6379/zero", "redis://:***@127.0.0.1:6379/zero"),
    ],
)
def test_a_bad_url_is_a_value_error_naming_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="session store") as error:
        open_store(url)
    assert message in str(error.value) and "hunter2" not in str(error.value)


def test_a_file_that_is_not_a_session_store_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ValueError, match=r"junk\.db cannot be opened"):
        open_store(f"sqlite://{junk}")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("PRAGMA user_version=7")
    with pytest.raises(ValueError, match="schema version 7, not 1"):
        open_store(f"sqlite://{other}")


def test_merged_histories_keep_each_item_once_at_its_latest_position() -> None:
    assert merge_histories(["a", "b", "c", "b"], ["c", "d"], 10) == ["a", "b", "c", "d"]
    assert merge_histories(["a", "b", "c"], ["a"], 2) == ["c", "a"]
    assert merge_histories([], [], 5) == []


def test_history_length_is_what_the_encoder_reads() -> None:
    assert history_length([InputSpec("history", "int64", ["batch", 200])]) == 200
    assert (
        history_length(
            [InputSpec("age", "float32", ["batch", 1]), InputSpec("history", "int64", ["batch", "length"], 30)]
        )
        == 30
    )
    assert history_length([InputSpec("user", "int64", ["batch", 1])], default=50) == 50
