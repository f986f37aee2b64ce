"""Safe across processes: a file lock around creation, retries while sqlite is busy, and who owns a run.

Stdlib only, shared by ``rectorch.data`` (the cache), ``rectorch.training`` (the MLflow store, experiments,
sweep parents) and ``rectorch.compare`` (runs whose process died).
"""

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # Windows: no flock; creation falls back to the retries alone
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

HOST_TAG = "rectorch.host"
PID_TAG = "rectorch.pid"
#: ``<boot id>/<start time in clock ticks>``: tells a live process from a later one that reuses its pid
PROCESS_TAG = "rectorch.process"

_BUSY = ("database is locked", "database table is locked", "database is busy")


@contextlib.contextmanager
def file_lock(path: Path, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block; with ``remove``, delete it at the end.

    The kernel drops the lock when its holder dies, so a killed process never leaves it held. A waiter that
    wakes up on a file removed meanwhile (``remove``) opens the path again, so two holders never coexist.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a")  # noqa: SIM115 - closed below, after the lock is released
        if fcntl is None:
            break
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)
        handle.close()  # closing the last descriptor releases the lock


def is_busy(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is sqlite reporting a lock held by another process."""
    while error is not None:
        if any(text in str(error).lower() for text in _BUSY):
            return True
        error = error.__cause__ or error.__context__
    return False


def retry_busy(call: Callable[[], T], attempts: int = 8, delay: float = 0.25) -> T:
    """``call()``, retried with doubling waits (0.25 s, 0.5 s, ... ~32 s in all) while sqlite is busy."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:
            if attempt == attempts - 1 or not is_busy(error):
                raise
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat``: when the process started, in clock ticks after boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def process_identity(pid: int) -> str | None:
    """``<boot id>/<start ticks>`` of a running process on this host, None where ``/proc`` is absent."""
    boot, start = _boot_id(), _start_ticks(pid)
    return None if boot is None or start is None else f"{boot}/{start}"


def owner_tags() -> dict[str, str]:
    """Tags naming this process: host, pid and (on Linux) its identity."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    identity = process_identity(os.getpid())
    if identity is not None:
        tags[PROCESS_TAG] = identity
    return tags


def owner_alive(tags: dict[str, str]) -> bool | None:
    """Whether the process named by :func:`owner_tags` still runs: None when that cannot be told here
    (no such tags, or another host)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not str(tags.get(PID_TAG, "")).isdigit():
        return None
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    recorded = tags.get(PROCESS_TAG)
    return recorded is None or process_identity(pid) in (None, recorded)


def mark_killed_runs(client: Any, experiment_ids: list[str]) -> list[Any]:
    """Set every RUNNING run of these experiments whose process on this host is gone to KILLED.

    Runs started elsewhere, or without owner tags, are left as they are. Returns the runs marked.
    """
    if not experiment_ids:
        return []
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
    running = retry_busy(lambda: client.search_runs(experiment_ids, query, max_results=1000))
    killed = [run for run in running if owner_alive(run.data.tags) is False]
    for run in killed:
        retry_busy(lambda run=run: client.set_terminated(run.info.run_id, "KILLED"))
    return killed


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename: a reader sees all of it or none."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
