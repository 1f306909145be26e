"""Real `mockgen serve` processes for tests: start one, read its banner, wait until it answers, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import IO


class Serve:
    """``mockgen serve ARGS`` in a subprocess: ``with Serve("--port", "0") as s: s.base ...``."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, banner_lines: int = 5) -> None:
        command = [sys.executable, "-m", "mockgen", "serve", *args]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.banner = [self.stdout.readline() for _ in range(banner_lines)]
        api = next((line.split()[1] for line in self.banner if line.strip().startswith("API")), "")
        self.base = api.removesuffix("/api/v1/tasks/create")
        self.key = next((line.split()[1] for line in self.banner if line.strip().startswith("key")), "")
        self.errors = ""
        self.output = ""  # what it printed after the banner (access lines), read at stop
        if not self.base:  # it printed no banner (it exited, or printed something else): say what it said
            self.kill()
            raise AssertionError(f"mockgen serve printed no banner: {self.banner!r}; stderr: {self.errors}")

    @property
    def stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stderr(self) -> IO[str]:
        assert self.proc.stderr is not None
        return self.proc.stderr

    def wait_ready(self, timeout: float = 10.0) -> Serve:
        """Until /_mock/health answers (real process start-up: real time, bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/_mock/health", timeout=1).close()
                return self
            except urllib.error.HTTPError:  # it answers (a 401 with --admin-token)
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError(f"mockgen serve did not answer: {self.errors}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM (a clean shutdown), then what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
            raise
        finally:
            if not self.stderr.closed:
                self.errors = self.stderr.read()
                self.output = self.stdout.read()
                self.stdout.close()
                self.stderr.close()
        return self.errors

    def kill(self, timeout: float = 10.0) -> str:
        """SIGKILL (a crash: no shutdown of any kind), then what it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.stop(timeout)

    def __enter__(self) -> Serve:
        return self.wait_ready()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_once(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``mockgen serve ARGS`` expected to refuse and exit: bounded, so a server that starts fails the test."""
    command = [sys.executable, "-m", "mockgen", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
