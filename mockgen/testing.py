"""Run mockgen inside a test suite: a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from .scenario import Scenario

__all__ = ["MockServer"]


class MockServer:
    """A mockgen server for tests: ``with MockServer(scenario="ci") as mock: ...``.

    Exposes ``base_url``, a ready ``api_key`` and helpers that drive the control API.
    """

    def __init__(
        self,
        scenario: Scenario | str | Path | None = None,
        *,
        clock: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_token: str | None = None,
        **app_options: Any,
    ) -> None:
        from .app import create_app

        self.app = create_app(scenario, clock=clock, admin_token=admin_token, **app_options)
        self.host = host
        self.port = port
        self.admin_token = admin_token
        self.base_url = ""
        self.api_key = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> MockServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("mockgen server did not start")
            time.sleep(0.01)
        sock.close()
        self.base_url = f"http://{self.host}:{self.port}"
        self.api_key = self.app.state.backend.ready_key()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> MockServer:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    # --- control API helpers -------------------------------------------------------------------

    def control(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> Any:
        """Call ``/_mock/<path>`` and return the decoded JSON (raises on an HTTP error)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"{self.base_url}/_mock/{path.lstrip('/')}", data=data, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if self.admin_token:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} /_mock/{path} -> {exc.code}: {exc.read().decode()}") from None
        return json.loads(payload) if payload else None

    def advance(self, seconds: float) -> float:
        return self.control("POST", "clock/advance", {"seconds": seconds})["now"]

    def resolve(self, task_id: str, outcome: str = "success", msg: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"outcome": outcome}
        if msg is not None:
            body["msg"] = msg
        return self.control("POST", f"tasks/{task_id}/resolve", body)

    def balance(self, key: str | None = None) -> int:
        return self.control("GET", f"accounts/{key or self.api_key}")["credits"]

    def ledger(self, key: str | None = None) -> list[dict[str, Any]]:
        return self.control("GET", f"accounts/{key or self.api_key}")["ledger"]

    def tasks(self) -> list[dict[str, Any]]:
        return self.control("GET", "tasks")

    def requests(self, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in filters.items())
        return self.control("GET", "requests" + (f"?{query}" if query else ""))

    def reset(self) -> None:
        self.control("POST", "reset")
        self.api_key = self.app.state.backend.ready_key()

    def use_scenario(self, name_or_yaml: str) -> None:
        """Load a bundled scenario by name, or scenario YAML text."""
        if "\n" in name_or_yaml or ":" in name_or_yaml:
            self.control("PUT", "scenario", raw=name_or_yaml.encode())
        else:
            self.control("PUT", "scenario", {"name": name_or_yaml})
        self.api_key = self.app.state.backend.ready_key()
