"""A real ``redis-server`` on a free loopback port, its files in a temporary directory, stopped by its PID.

It persists every write (``--appendonly yes --appendfsync always``), so a server killed with SIGKILL and
started again on the same port and directory has lost nothing. Tests skip where the binary is missing.
"""

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

BINARY = "redis-server"
SKIP_REASON = f"{BINARY} is not on PATH (Debian: apt-get install redis-server)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def need_redis() -> None:
    """Skip the calling test where ``redis-server`` is not installed."""
    if shutil.which(BINARY) is None:
        pytest.skip(SKIP_REASON)


class RedisServer:
    """``start()``/``stop()``/``restart()`` one ``redis-server`` bound to 127.0.0.1.

    Args:
        directory: where its append-only file and log live (kept across restarts).
        port: TCP port (default: a free one, kept across restarts).
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory, self.port = Path(directory), port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> "RedisServer":
        command = [
            BINARY,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (
                    (self.directory / "redis.log").read_text()[-2000:]
                    if (self.directory / "redis.log").exists()
                    else ""
                )
                self.stop()
                raise RuntimeError(f"{BINARY} on port {self.port} did not come up: {log}")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        """True when the server answers PING (and has loaded its data)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash) to its PID, then wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self, kill: bool = False) -> "RedisServer":
        self.stop(kill)
        return self.start()
