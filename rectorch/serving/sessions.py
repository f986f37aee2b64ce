"""Per-user event histories and the strategy layer's small state: in memory, in SQLite, or in Redis.

A :class:`SessionStore` keeps, per user, the newest ``max_events`` events in chronological order (by
timestamp, ties in arrival order, so an out-of-order batch or a late event lands in its place) and forgets
a user ``ttl_seconds`` after their last append (reads do not extend it). It also holds hash-like counters
(``incr``/``counts``) and records stored once and taken once (``put_once``/``take``). Every write lands
whole or not at all; a store that cannot answer raises :class:`StoreUnavailable`. :func:`open_store`
builds one from a URL:

- ``memory://?max_users=100000&max_records=1000000``: in-process and thread-safe; beyond ``max_users`` the
  least recently active user is evicted, beyond ``max_records`` the record closest to expiry; lost at exit.
- ``sqlite:///abs/path.db?max_users=1000000&timeout=5``: a local file (WAL, ``synchronous=NORMAL``: it
  survives restarts, a power loss may drop the last commits); one connection per thread, writes retried
  while the file is locked by another process.
- ``redis://[user:password@]host:port/db?prefix=rectorch&timeout=1`` (``rediss://`` for TLS): a sorted set
  per user (score = timestamp, so late events sort into place), trimmed and expired in the ZADD's own
  MULTI/EXEC; counters are hashes (HINCRBYFLOAT), records SET NX PX and GETDEL. Redis bounds the number of
  users by TTL and its own ``maxmemory``/``maxmemory-policy`` (``volatile-ttl``), not by ``max_users``.
"""

import bisect
import heapq
import itertools
import json
import math
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from rectorch.serving.catalog import MAX_ID_LENGTH
from rectorch.serving.manifest import InputSpec, show

DEFAULT_TTL_SECONDS = 7 * 86400.0
DEFAULT_MAX_EVENTS = 50
MAX_TYPE_LENGTH = 32
T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """The session store cannot be reached or used right now (nothing was written)."""


@dataclass(frozen=True)
class Event:
    """One user action: ``item_id`` (external id), ``type`` (``view``, ``click``, ``cart``, ...), unix seconds."""

    item_id: str
    type: str
    timestamp: float


def _check_event(user_id: Any, event: Any) -> Event:
    if not isinstance(event, Event):
        raise ValueError(f"events of user {show(user_id)} must be Event objects, got {show(event)}")
    if not isinstance(event.item_id, str) or not 0 < len(event.item_id) <= MAX_ID_LENGTH:
        raise ValueError(
            f"event item_id must be a string of 1 to {MAX_ID_LENGTH} characters, got {show(event.item_id)}"
        )
    if not isinstance(event.type, str) or not 0 < len(event.type) <= MAX_TYPE_LENGTH:
        raise ValueError(f"event type must be a string of 1 to {MAX_TYPE_LENGTH} characters, got {show(event.type)}")
    stamp = event.timestamp
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        raise ValueError(f"event timestamp must be finite unix seconds, got {show(stamp)}")
    return Event(event.item_id, event.type, float(stamp))


def _check_key(name: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise ValueError(f"{name} must be a string of 1 to {MAX_ID_LENGTH} characters, got {show(value)}")
    return value


def _positive(name: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {show(value)}")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a positive integer, got {show(value)}")
    return kind(value)


class SessionStore(ABC):
    """Event histories per user plus counters and once-only records (see the module docstring).

    Args:
        max_events: events kept per user (the newest by timestamp).
        ttl_seconds: a user's history is forgotten this long after their last append.
        name: what the store is, for messages and ``/metadata`` (a URL without its password).
    """

    def __init__(self, max_events: int, ttl_seconds: float, name: str) -> None:
        self.max_events = _positive("max_events", max_events, int)
        self.ttl_seconds = _positive("ttl_seconds", ttl_seconds)
        self.name = name

    def append(self, user_id: str, events: Sequence[Event]) -> None:
        """Add ``events`` (any order) to ``user_id``'s history."""
        self.append_many({user_id: events})

    def append_many(self, batch: Mapping[str, Sequence[Event]]) -> None:
        """Add each user's events, all users in one atomic write."""
        checked = {
            _check_key("user_id", user): [_check_event(user, e) for e in events] for user, events in batch.items()
        }
        checked = {user: events for user, events in checked.items() if events}
        if checked:
            self._append(checked)

    def history(self, user_id: str, limit: int | None = None) -> list[Event]:
        """The newest ``limit`` (default ``max_events``) events of ``user_id``, oldest first."""
        limit = self.max_events if limit is None else min(_positive("limit", limit, int), self.max_events)
        return self._history(_check_key("user_id", user_id), limit)

    def forget(self, user_id: str) -> None:
        """Drop ``user_id``'s history."""
        self._forget(_check_key("user_id", user_id))

    def incr(self, key: str, field: str, amount: float = 1.0) -> float:
        """Add ``amount`` to counter ``field`` of ``key`` (atomically); returns the new value."""
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount):
            raise ValueError(f"amount must be a finite number, got {show(amount)}")
        return self._incr(_check_key("key", key), _check_key("field", field), float(amount))

    def counts(self, key: str) -> dict[str, float]:
        """Every counter of ``key`` (empty when none was incremented)."""
        return self._counts(_check_key("key", key))

    def put_once(self, key: str, value: str, ttl_seconds: float) -> bool:
        """Store ``value`` under ``key`` for ``ttl_seconds`` unless ``key`` holds a live record; True when stored."""
        if not isinstance(value, str):
            raise ValueError(f"record value must be a string, got {show(value)}")
        return self._put_once(_check_key("key", key), value, _positive("ttl_seconds", ttl_seconds))

    def take(self, key: str) -> str | None:
        """Remove and return ``key``'s live record; None when absent, expired or already taken."""
        return self._take(_check_key("key", key))

    def close(self) -> None:  # noqa: B027 (an optional hook: the memory store holds no connection)
        """Release connections (the data stays where the store keeps it)."""

    @abstractmethod
    def _append(self, batch: dict[str, list[Event]]) -> None: ...

    @abstractmethod
    def _history(self, user_id: str, limit: int) -> list[Event]: ...

    @abstractmethod
    def _forget(self, user_id: str) -> None: ...

    @abstractmethod
    def _incr(self, key: str, field: str, amount: float) -> float: ...

    @abstractmethod
    def _counts(self, key: str) -> dict[str, float]: ...

    @abstractmethod
    def _put_once(self, key: str, value: str, ttl_seconds: float) -> bool: ...

    @abstractmethod
    def _take(self, key: str) -> str | None: ...


@dataclass
class _Session:
    events: list[tuple[float, int, Event]]  # sorted by (timestamp, arrival)
    active: float


class MemoryStore(SessionStore):
    """In-process store: one lock, an LRU of users ordered by last append, an expiry heap for records.

    Args:
        max_events: events kept per user.
        ttl_seconds: history lifetime after the last append.
        max_users: users kept; the least recently active one is evicted beyond it.
        max_records: live ``put_once`` records kept; the one closest to expiry is evicted beyond it.
        clock: unix seconds now (injectable for tests).

    Counters are not bounded: they are meant for a few keys (the strategy layer's posteriors).
    """

    def __init__(
        self,
        max_events: int = DEFAULT_MAX_EVENTS,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_users: int = 100_000,
        max_records: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        name: str = "memory://",
    ) -> None:
        super().__init__(max_events, ttl_seconds, name)
        self.max_users = _positive("max_users", max_users, int)
        self.max_records = _positive("max_records", max_records, int)
        self.clock = clock
        self._lock = threading.Lock()
        self._arrival = itertools.count()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._counters: dict[str, dict[str, float]] = {}
        self._records: dict[str, tuple[str, float]] = {}
        self._expiry: list[tuple[float, str]] = []  # (expires, key) heap; entries of taken records are stale

    def _append(self, batch: dict[str, list[Event]]) -> None:
        now = self.clock()
        with self._lock:
            while self._sessions and self._expired(next(iter(self._sessions.values())), now):
                self._sessions.popitem(last=False)
            for user, events in batch.items():
                session = self._sessions.pop(user, None)
                kept = session.events if session is not None and not self._expired(session, now) else []
                for event in events:
                    bisect.insort(kept, (event.timestamp, next(self._arrival), event))
                del kept[: max(len(kept) - self.max_events, 0)]
                self._sessions[user] = _Session(kept, now)
            while len(self._sessions) > self.max_users:
                self._sessions.popitem(last=False)

    def _expired(self, session: _Session, now: float) -> bool:
        return session.active + self.ttl_seconds <= now

    def _history(self, user_id: str, limit: int) -> list[Event]:
        with self._lock:
            session = self._sessions.get(user_id)
            if session is None or self._expired(session, self.clock()):
                return []
            return [event for _, _, event in session.events[-limit:]]

    def _forget(self, user_id: str) -> None:
        with self._lock:
            self._sessions.pop(user_id, None)

    def _incr(self, key: str, field: str, amount: float) -> float:
        with self._lock:
            counters = self._counters.setdefault(key, {})
            counters[field] = counters.get(field, 0.0) + amount
            return counters[field]

    def _counts(self, key: str) -> dict[str, float]:
        with self._lock:
            return dict(self._counters.get(key, {}))

    def _put_once(self, key: str, value: str, ttl_seconds: float) -> bool:
        now = self.clock()
        with self._lock:
            self._drop_records(lambda expires: expires <= now)
            if key in self._records:
                return False
            self._records[key] = (value, now + ttl_seconds)
            heapq.heappush(self._expiry, (now + ttl_seconds, key))
            self._drop_records(lambda _: len(self._records) > self.max_records)
            if len(self._expiry) > 2 * len(self._records) + 1024:  # too many stale entries: rebuild
                self._expiry = [(expires, k) for k, (_, expires) in self._records.items()]
                heapq.heapify(self._expiry)
            return True

    def _drop_records(self, drop: Callable[[float], bool]) -> None:
        """Pop records closest to expiry while ``drop(expires)`` holds (stale heap entries are skipped)."""
        while self._expiry and drop(self._expiry[0][0]):
            expires, key = heapq.heappop(self._expiry)
            if key in self._records and self._records[key][1] == expires:
                del self._records[key]

    def _take(self, key: str) -> str | None:
        with self._lock:
            value, expires = self._records.pop(key, (None, math.inf))
            return value if expires > self.clock() else None


SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (user TEXT PRIMARY KEY, active REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_by_activity ON users (active);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  user TEXT NOT NULL REFERENCES users (user) ON DELETE CASCADE,
  item TEXT NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user, ts, seq);
CREATE TABLE IF NOT EXISTS counters (key TEXT, field TEXT, value REAL NOT NULL, PRIMARY KEY (key, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('users', 0);
"""
LOCK_RETRIES = 3


class SqliteStore(SessionStore):
    """A store in one SQLite file; the user count lives in ``meta`` so eviction needs no table scan.

    Args:
        path: absolute path of the database file (created with its tables when missing).
        max_events: events kept per user.
        ttl_seconds: history lifetime after the last append.
        max_users: users kept; the least recently active ones are deleted beyond it.
        timeout: seconds a statement waits for another writer's lock (then retried, then ``StoreUnavailable``).
        clock: unix seconds now (injectable for tests).
    """

    def __init__(
        self,
        path: str | Path,
        max_events: int = DEFAULT_MAX_EVENTS,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_users: int = 1_000_000,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
    ) -> None:
        super().__init__(max_events, ttl_seconds, name or f"sqlite://{path}")
        self.path, self.clock = Path(path), clock
        self.max_users = _positive("max_users", max_users, int)
        self.timeout = _positive("timeout", timeout)
        if not self.path.is_absolute() or not self.path.parent.is_dir():
            raise ValueError(f"sqlite session store {self.path}: needs an absolute path in an existing directory")
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        try:
            connection = self._connection()
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version in (0, SCHEMA_VERSION):
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as error:
            self.close()
            raise ValueError(f"sqlite session store {self.path} cannot be opened: {error}") from error
        if version not in (0, SCHEMA_VERSION):
            self.close()
            raise ValueError(f"sqlite session store {self.path} has schema version {version}, not {SCHEMA_VERSION}")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, self.timeout, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._opened_lock:
                self._opened.append(connection)
        return connection

    def _run(self, work: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """``work`` in one transaction (``BEGIN IMMEDIATE`` for writes), retried while the file is locked."""
        for attempt in range(LOCK_RETRIES):
            connection = self._connection()
            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                result = work(connection)
                connection.execute("COMMIT")
                return result
            except sqlite3.DatabaseError as error:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                busy = "locked" in str(error) or "busy" in str(error)
                if not (busy and attempt + 1 < LOCK_RETRIES):
                    raise StoreUnavailable(f"sqlite {self.path}: {error}") from error
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        raise AssertionError("unreachable")

    def _append(self, batch: dict[str, list[Event]]) -> None:
        now = self.clock()

        def write(db: sqlite3.Connection) -> None:
            expired = db.execute("SELECT user FROM users WHERE active <= ?", (now - self.ttl_seconds,))
            self._delete_users(db, [user for (user,) in expired.fetchall()])
            added = 0
            for user, events in batch.items():
                added += db.execute("INSERT OR IGNORE INTO users VALUES (?, ?)", (user, now)).rowcount
                db.execute("UPDATE users SET active = ? WHERE user = ?", (now, user))
                rows = [(user, e.item_id, e.type, e.timestamp) for e in events]
                db.executemany("INSERT INTO events (user, item, type, ts) VALUES (?, ?, ?, ?)", rows)
                db.execute(
                    "DELETE FROM events WHERE user = ?1 AND seq NOT IN "
                    "(SELECT seq FROM events WHERE user = ?1 ORDER BY ts DESC, seq DESC LIMIT ?2)",
                    (user, self.max_events),
                )
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'users'", (added,))
            (count,) = db.execute("SELECT value FROM meta WHERE key = 'users'").fetchone()
            if count > self.max_users:
                oldest = db.execute("SELECT user FROM users ORDER BY active LIMIT ?", (count - self.max_users,))
                self._delete_users(db, [user for (user,) in oldest.fetchall()])

        self._run(write)

    @staticmethod
    def _delete_users(db: sqlite3.Connection, users: list[str]) -> None:
        """Delete ``users`` (their events cascade) and keep the count in ``meta``."""
        if users:
            db.executemany("DELETE FROM users WHERE user = ?", [(u,) for u in users])
            db.execute("UPDATE meta SET value = value - ? WHERE key = 'users'", (len(users),))

    def _history(self, user_id: str, limit: int) -> list[Event]:
        query = (
            "SELECT e.item, e.type, e.ts FROM events e JOIN users u ON u.user = e.user "
            "WHERE e.user = ? AND u.active > ? ORDER BY e.ts DESC, e.seq DESC LIMIT ?"
        )
        arguments = (user_id, self.clock() - self.ttl_seconds, limit)
        rows = self._run(lambda db: db.execute(query, arguments).fetchall(), write=False)
        return [Event(item, kind, stamp) for item, kind, stamp in reversed(rows)]

    def _forget(self, user_id: str) -> None:
        def write(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM users WHERE user = ?", (user_id,)).fetchone():
                self._delete_users(db, [user_id])

        self._run(write)

    def _incr(self, key: str, field: str, amount: float) -> float:
        query = (
            "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (key, field) "
            "DO UPDATE SET value = value + excluded.value RETURNING value"
        )
        return self._run(lambda db: db.execute(query, (key, field, amount)).fetchall()[0][0])

    def _counts(self, key: str) -> dict[str, float]:
        query = "SELECT field, value FROM counters WHERE key = ?"
        return dict(self._run(lambda db: db.execute(query, (key,)).fetchall(), write=False))

    def _put_once(self, key: str, value: str, ttl_seconds: float) -> bool:
        now = self.clock()

        def write(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM records WHERE expires <= ?", (now,))
            insert = "INSERT OR IGNORE INTO records VALUES (?, ?, ?)"
            return db.execute(insert, (key, value, now + ttl_seconds)).rowcount == 1

        return self._run(write)

    def _take(self, key: str) -> str | None:
        query = "DELETE FROM records WHERE key = ? RETURNING value, expires"
        rows = self._run(lambda db: db.execute(query, (key,)).fetchall())
        return rows[0][0] if rows and rows[0][1] > self.clock() else None

    def close(self) -> None:
        with self._opened_lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()
        self._local = threading.local()


class RedisStore(SessionStore):
    """A store in Redis: keys ``{prefix}:session:{user}``, ``{prefix}:counts:{key}``, ``{prefix}:once:{key}``.

    A session member is ``[arrival, item, type]`` as JSON, scored by the timestamp: Redis orders equal
    scores by member, so ties keep their arrival order, and a retried ZADD adds nothing twice.

    Args:
        client: a ``redis.Redis`` with ``decode_responses=True``.
        max_events: events kept per user.
        ttl_seconds: history lifetime after the last append (the key's PEXPIRE).
        prefix: every key's namespace (``prefix:...``).
    """

    def __init__(
        self,
        client: redis.Redis,
        max_events: int = DEFAULT_MAX_EVENTS,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        prefix: str = "rectorch",
        name: str = "redis",
    ) -> None:
        super().__init__(max_events, ttl_seconds, name)
        self.client, self.prefix = client, prefix
        self._origin = os.urandom(4).hex()
        self._arrival = itertools.count()

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError) as error:
            raise StoreUnavailable(f"{self.name}: {' '.join(str(error).split())}") from error

    def _session(self, user_id: str) -> str:
        return f"{self.prefix}:session:{user_id}"

    def _append(self, batch: dict[str, list[Event]]) -> None:
        ttl_ms = max(1, round(self.ttl_seconds * 1000))
        with self._reachable(), self.client.pipeline(transaction=True) as pipe:
            for user, events in batch.items():
                members = {}
                for event in events:
                    arrival = f"{time.time_ns():020d}{next(self._arrival):012d}{self._origin}"
                    members[json.dumps([arrival, event.item_id, event.type])] = event.timestamp
                key = self._session(user)
                pipe.zadd(key, members)
                pipe.zremrangebyrank(key, 0, -self.max_events - 1)
                pipe.pexpire(key, ttl_ms)
            pipe.execute()

    def _history(self, user_id: str, limit: int) -> list[Event]:
        with self._reachable():
            rows = self.client.zrange(self._session(user_id), -limit, -1, withscores=True)
        return [Event(*json.loads(member)[1:], float(score)) for member, score in rows]

    def _forget(self, user_id: str) -> None:
        with self._reachable():
            self.client.delete(self._session(user_id))

    def _incr(self, key: str, field: str, amount: float) -> float:
        with self._reachable():
            return float(self.client.hincrbyfloat(f"{self.prefix}:counts:{key}", field, amount))

    def _counts(self, key: str) -> dict[str, float]:
        with self._reachable():
            counters = self.client.hgetall(f"{self.prefix}:counts:{key}")
        return {field: float(value) for field, value in counters.items()}

    def _put_once(self, key: str, value: str, ttl_seconds: float) -> bool:
        ttl_ms = max(1, round(ttl_seconds * 1000))
        with self._reachable():
            return bool(self.client.set(f"{self.prefix}:once:{key}", value, nx=True, px=ttl_ms))

    def _take(self, key: str) -> str | None:
        with self._reachable():
            return self.client.getdel(f"{self.prefix}:once:{key}")

    def close(self) -> None:
        self.client.close()


def merge_histories(stored: Sequence[str], requested: Sequence[str], cap: int) -> list[str]:
    """``stored`` then ``requested`` item ids, each id once at its latest position, the newest ``cap`` kept."""
    merged = [*stored, *requested]
    latest = {item: position for position, item in enumerate(merged)}
    return [item for position, item in enumerate(merged) if latest[item] == position][-cap:] if cap > 0 else []


def history_length(inputs: Sequence[InputSpec], default: int = DEFAULT_MAX_EVENTS) -> int:
    """The newest items the encoder reads (its fixed history length or ``max_len``); ``default`` without one."""
    for spec in inputs:
        if spec.name == "history":
            return int(spec.max_len if spec.max_len is not None else spec.shape[1])
    return default


STORE_URLS = "memory://, sqlite:///abs/path.db or redis://host:port/db"
OPTIONS = {
    "memory": {"max_users": int, "max_records": int},
    "sqlite": {"max_users": int, "timeout": float},
    "redis": {"prefix": str, "timeout": float},
    "rediss": {"prefix": str, "timeout": float},
}


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _options(url: str, scheme: str, query: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as error:
        raise ValueError(f"session store URL {show(url)}: malformed query ({error})") from None
    options: dict[str, Any] = {}
    for name, raw in pairs:
        kind = OPTIONS[scheme].get(name)
        if kind is None:
            known = ", ".join(OPTIONS[scheme])
            raise ValueError(f"session store URL {show(url)}: unknown option {name!r}; {scheme}:// takes {known}")
        try:
            options[name] = raw if kind is str else _positive(name, float(raw), kind)
        except ValueError:
            raise ValueError(
                f"session store URL {show(url)}: option {name} must be a positive {kind.__name__}"
            ) from None
    return options


def open_store(
    url: str, max_events: int = DEFAULT_MAX_EVENTS, ttl_seconds: float = DEFAULT_TTL_SECONDS
) -> SessionStore:
    """The store a URL names (see the module docstring); a bad URL raises ``ValueError`` naming it.

    Redis is not contacted here: a server that is down makes each call raise :class:`StoreUnavailable`.
    """
    name = _redacted(url) if isinstance(url, str) else url
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in OPTIONS or parts.fragment:
        raise ValueError(f"session store URL {show(name)} is not one of {STORE_URLS}")
    options = _options(name, parts.scheme, parts.query)
    if parts.scheme == "memory":
        if parts.netloc or parts.path:
            raise ValueError(f"session store URL {show(name)}: memory:// takes no host or path, only ?max_users=...")
        return MemoryStore(max_events, ttl_seconds, name=name, **options)
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("//") else parts.path  # sqlite:////abs works too
        if parts.netloc or not path.startswith("/"):
            raise ValueError(f"session store URL {show(name)}: write sqlite:///absolute/path.db")
        return SqliteStore(path, max_events, ttl_seconds, name=name, **options)
    try:
        database = int(parts.path.strip("/") or 0)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ValueError(f"session store URL {show(name)}: write redis://host:port/db (db and port integers)") from None
    if not parts.hostname:
        raise ValueError(f"session store URL {show(name)}: write redis://host:port/db (the host is missing)")
    timeout = options.get("timeout", 1.0)
    client = redis.Redis.from_url(
        parts._replace(path=f"/{database}", query="").geturl(),
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),  # a short reconnect (a restarted server), no stall
    )
    return RedisStore(client, max_events, ttl_seconds, options.get("prefix", "rectorch"), name)
