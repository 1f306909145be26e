"""A real Debian ``redis-server`` for the tests: one per session (started when first asked for), on a
free loopback port and a Unix socket in a temporary directory, nothing saved to disk.

``make_redis_store(**bounds)`` is a RedisStore on it under a fresh prefix each call (a world of its
own); the ``redis_server`` fixture is the server itself. Without ``redis-server`` on PATH the tests
that ask for one are skipped with the reason, and fail under ``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from mockgen.redis_store import RedisStore

from .conftest import free_port

START_TIMEOUT = 10.0  # seconds for a fresh redis-server to answer PING


def redis_server_binary() -> str:
    """The path of ``redis-server``, or the test is skipped (failed under CI=true) with the reason."""
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (apt-get install -y redis-server; .ci/run does it under CI=true)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


class RedisServer:
    """One ``redis-server`` process of the tests' own; ``stop`` and ``start`` again on the same port.

    ``persist``: an append-only file written at every change, so the data outlives a restart."""

    def __init__(self, port: int | None = None, *, persist: bool = False) -> None:
        self.binary = redis_server_binary()
        self.persist = persist
        self.dir = Path(tempfile.mkdtemp(prefix="mockgen-redis-"))
        self.port = port or free_port()
        self.socket = self.dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--save", "", "--dir", str(self.dir),
            "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
            "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}: {log}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


_session: RedisServer | None = None
_prefixes = count(1)


def fresh_prefix(name: str = "test") -> str:
    """A store prefix no other test (and no other test process) uses: a world of its own."""
    return f"{name}-{os.getpid()}-{next(_prefixes)}"


def session_server() -> RedisServer:
    """The session's server, started on first use (and stopped at exit, if no fixture stopped it)."""
    global _session
    if _session is None:
        _session = RedisServer()
        atexit.register(_stop_session)
    return _session


def _stop_session() -> None:
    global _session
    if _session is not None:
        _session.close()
        _session = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's redis-server (stopped when the session ends)."""
    yield session_server()
    _stop_session()


async def make_redis_store(url: str | None = None, prefix: str | None = None, **bounds: Any) -> RedisStore:
    """A RedisStore on the session's server (or ``url``), under a fresh prefix (or ``prefix``), cleared."""
    store = RedisStore(url or session_server().url, prefix or fresh_prefix(), **bounds)
    await store.clear()
    return store
