"""Shared fixtures: an in-process app on the manual clock, driven through Starlette's TestClient."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from mockgen import create_app
from mockgen.testing import MockServer

KEY = "sk-" + "a" * 32
OTHER_KEY = "sk-" + "b" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {"Content-Type": "application/json"}  # what a state-changing control request sends, a body or not


def free_port() -> int:
    """A loopback port nothing listens on (as far as anyone can know without racing)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client(TestClient):
    """A TestClient with shortcuts for the contract's two routes and the control API."""

    key = KEY

    def submit(self, key: str = KEY, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("model_id", "gpt-image-2")
        body.setdefault("prompt", "a serene zen garden at sunrise")
        h = {"Authorization": f"Bearer {key}", **(headers or {})}
        r = self.post("/api/v1/tasks/create", json=body, headers=h)
        assert r.status_code == 200, r.text
        return r.json()

    def poll(self, task_id: str, key: str = KEY) -> dict[str, Any]:
        r = self.get(f"/api/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return r.json()

    def advance(self, seconds: float) -> float:
        r = self.post("/_mock/clock/advance", json={"seconds": seconds})
        assert r.status_code == 200, r.text
        return r.json()["now"]

    def balance(self, key: str = KEY) -> int:
        return self.get(f"/_mock/accounts/{key}").json()["credits"]

    def ledger(self, key: str = KEY) -> list[dict[str, Any]]:
        return self.get(f"/_mock/accounts/{key}").json()["ledger"]


# The store the apps of ``make_client`` keep their world in: "memory" (the default) or "redis" (a fresh
# world on the session's redis-server for each app): MOCKGEN_TEST_STORE=redis pytest tests/test_contract.py
# runs the public contract's suite on the Redis store (README, Sharing one world on Redis).
APP_STORE = os.environ.get("MOCKGEN_TEST_STORE", "memory")


def store_options() -> dict[str, Any]:
    """create_app's store options for APP_STORE (none for the memory store)."""
    if APP_STORE == "memory":
        return {}
    if APP_STORE != "redis":
        raise pytest.UsageError(f"MOCKGEN_TEST_STORE is memory or redis, not {APP_STORE!r}")
    from .redis_server import fresh_prefix, session_server

    return {"store": session_server().url, "store_prefix": fresh_prefix("app")}


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []
    entered: list[Client] = []

    def make(scenario: Any = "default", clock: str | None = "manual", **options: Any) -> Client:
        shared = store_options() if "store" not in options else {}
        client = Client(create_app(scenario, clock=clock, **shared, **options), base_url="http://mock.test")
        if shared:
            entered.append(client.__enter__())  # the lifespan joins the shared store (a fresh world: starts it)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None) if client in entered else client.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    """A real server on the ci scenario, shared by a module's tests."""
    with MockServer("ci") as mock:
        yield mock


@pytest.fixture
def mock(server: MockServer) -> MockServer:
    """The module's server, back at its starting state."""
    server.reset()
    return server
