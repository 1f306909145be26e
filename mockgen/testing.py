"""Run mockgen inside a test suite: a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .clock import Clock, check_clock
from .journal import mask_key
from .scenario import Scenario
from .store import run_now

T = TypeVar("T")

__all__ = ["MockServer", "RequestMatch"]

Entry = dict[str, Any]
Body = dict[str, Any] | str | Callable[[Any], bool] | None


class RequestMatch:
    """What a verification looks for: ``"POST /api/v1/tasks/create"`` (path may end in ``*``), a body, a key."""

    def __init__(
        self, route: str = "*", *, body: Body = None, key: str | None = None, status: int | None = None
    ) -> None:
        method, _, path = route.strip().rpartition(" ")
        self.method = method.upper() or None
        self.path = path or "*"
        self.body = body
        self.key = mask_key(key) if key else None
        self.status = status

    def __call__(self, entry: Entry) -> bool:
        path = self.path
        if path.endswith("*") and not entry["path"].startswith(path[:-1]):
            return False
        if not path.endswith("*") and entry["path"] != path:
            return False
        if self.method and entry["method"] != self.method:
            return False
        if self.key and entry.get("key") != self.key:
            return False
        if self.status is not None and entry["status"] != self.status:
            return False
        return self.body is None or _body_matches(entry.get("body", ""), self.body)

    def __str__(self) -> str:
        text = f"{self.method or 'any method'} {self.path}"
        if self.body is not None:
            text += f" with body {self.body!r}" if not callable(self.body) else " with a body passing the check"
        if self.key:
            text += f" from key {self.key}"
        if self.status is not None:
            text += f" answered {self.status}"
        return text


def _body_matches(raw: str, expected: Body) -> bool:
    if isinstance(expected, str):
        return raw == expected
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if callable(expected):
        return bool(expected(body))
    if not isinstance(body, dict) or expected is None:
        return False
    return all(k in body and body[k] == v for k, v in expected.items())


def describe(entries: Iterable[Entry], limit: int = 20) -> str:
    """The journal as lines a person reads in a failed assertion, near misses with their reason."""
    rows = list(entries)
    lines = [f"  ({len(rows) - limit} earlier requests left out)"] if len(rows) > limit else []
    for e in rows[-limit:]:
        line = f"  #{e.get('id', '?')} {e['method']} {e['path']}"
        if e.get("query"):
            line += f"?{e['query']}"
        line += f" -> {e['status']}"
        if e.get("body"):
            body = e["body"] if len(e["body"]) <= 120 else e["body"][:117] + "..."
            line += f" body {body}"
        if e.get("error"):
            line += f"  [near miss: {e['error']}]"
        lines.append(line)
    return "\n".join(lines) if lines else "  (no requests at all)"


class MockServer:
    """A mockgen server for tests: ``with MockServer(scenario="ci") as mock: ...``.

    Exposes ``base_url``, a ready ``api_key``, helpers that drive the control API, and
    WireMock-style verification of the requests it received (``verify``, ``verify_order``).
    It serves with ``mockgen serve``'s bounds on connections and slow clients (``max_connections``:
    ``--max-connections``; README, Limits).
    """

    def __init__(
        self,
        scenario: Scenario | str | Path | None = None,
        *,
        clock: Clock | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_token: str | None = None,
        loop: str = "auto",
        max_connections: int | None = None,
        **app_options: Any,
    ) -> None:
        from .app import create_app
        from .server import MAX_CONNECTIONS

        self.app = create_app(scenario, clock=clock, admin_token=admin_token, **app_options)
        self.host = host
        self.port = port
        self.loop = loop
        self.max_connections = max_connections or MAX_CONNECTIONS  # as `mockgen serve --max-connections`
        self.admin_token = admin_token
        self.base_url = ""
        self.api_key = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> MockServer:
        """Listen and serve in a thread, running the app's lifespan (so ``watch=`` and ``state_file=`` work)."""
        from .server import bind, make_server

        sock = bind(self.host, self.port)  # uvicorn listens on it and closes it when it stops
        self.port = sock.getsockname()[1]
        self._server = make_server(self.app, lifespan="on", loop=self.loop, max_connections=self.max_connections)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                sock.close()
                raise RuntimeError(f"mockgen server did not start on {self.host}:{self.port} within {timeout} s")
            time.sleep(0.01)  # waiting for a real socket to listen, not for emulated time
        self.base_url = f"http://{self.host}:{self.port}"
        self.api_key = self._on_server(self.app.state.backend.ready_key)
        return self

    def stop(self) -> None:
        """Shut down as a server does: long-polls answered at once, then the lifespan (the state file saved)."""
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
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # --- for the code under test ---------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        """``base_url`` joined with ``path``: ``mock.url("/api/v1/tasks/create")``."""
        return self.base_url + "/" + path.lstrip("/")

    def headers(self, key: str | None = None) -> dict[str, str]:
        """The Authorization header of ``key`` (default: the ready ``api_key``)."""
        return {"Authorization": f"Bearer {key or self.api_key}"}

    def _on_server(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` run on the server's event loop, between requests, and its result.

        The world is changed only there: called from this (the test's) thread, it could run in the
        middle of a submit being handled and break it (a 500). Before ``start``, it is simply run.
        """
        servers = getattr(self._server, "servers", None)
        if not servers or self._thread is None or threading.get_ident() == self._thread.ident:
            return run_now(fn())  # type: ignore[arg-type]

        async def call() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(call(), servers[0].get_loop()).result(timeout=60)

    # --- control API helpers -------------------------------------------------------------------

    def control(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, content_type: str | None = None
    ) -> Any:
        """Call ``/_mock/<path>`` and return the decoded JSON (AssertionError on an HTTP error).

        A request that changes something is sent as ``application/json`` (``content_type`` for ``raw``),
        with or without a body: the server refuses what a web page could send (README, Who can drive it).
        """
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"{self.base_url}/_mock/{path.lstrip('/')}", data=data, method=method)
        if method != "GET":
            request.add_header("Content-Type", content_type or "application/json")
        if self.admin_token:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=330) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} /_mock/{path} -> {exc.code}: {exc.read().decode()}") from None
        return json.loads(payload) if payload else None

    def advance(self, seconds: float) -> float:
        """Move the manual clock; tasks due by then finish (failures are refunded). Returns the new time."""
        return self.control("POST", "clock/advance", {"seconds": seconds})["now"]

    def now(self) -> float:
        return self.control("GET", "health")["now"]

    def resolve(self, task_id: str, outcome: str = "success", msg: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"outcome": outcome}
        if msg is not None:
            body["msg"] = msg
        return self.control("POST", f"tasks/{task_id}/resolve", body)

    def create_account(self, credits: int = 0, key: str | None = None, name: str | None = None) -> str:
        """A new account; returns its key."""
        body: dict[str, Any] = {"credits": credits}
        if key is not None:
            body["key"] = key
        if name is not None:
            body["name"] = name
        return self.control("POST", "accounts", body)["key"]

    def topup(self, delta: int, key: str | None = None) -> int:
        return self.control("POST", f"accounts/{key or self.api_key}/credits", {"delta": delta})["credits"]

    def balance(self, key: str | None = None) -> int:
        return self.control("GET", f"accounts/{key or self.api_key}")["credits"]

    def ledger(self, key: str | None = None) -> list[dict[str, Any]]:
        return self.control("GET", f"accounts/{key or self.api_key}")["ledger"]

    def tasks(self, key: str | None = None) -> list[dict[str, Any]]:
        return self.control("GET", "tasks" + (f"?key={urllib.parse.quote(key)}" if key else ""))

    def task(self, task_id: str) -> dict[str, Any]:
        return self.control("GET", f"tasks/{task_id}")

    def queue_next(self, outcome: str, count: int = 1, **match: str) -> None:
        """Outcomes for the next matching submits (``model_id=``, ``key=``, ``msg=``)."""
        self.control("POST", "next", {"outcome": outcome, "count": count, **match})

    def requests(self, **filters: str) -> list[Entry]:
        """The journal, newest last; filters: ``path`` (may end in ``*``), ``method``, ``key``, ``errors``."""
        return self.control("GET", "requests" + _query(filters))

    def near_misses(self, **filters: str) -> list[Entry]:
        """Requests that matched no route or were refused (auth, validation), each with its ``error``."""
        return self.requests(errors="true", **filters)

    def clear_requests(self) -> None:
        self.control("DELETE", "requests")

    def state(self) -> dict[str, Any]:
        """Accounts, ledger, tasks, queued outcomes and the clock, as JSON (``load_state`` restores it)."""
        return self.control("GET", "state")

    def load_state(self, state: dict[str, Any]) -> None:
        self.control("PUT", "state", state)
        self.api_key = self._on_server(self.app.state.backend.ready_key)

    def reset(self) -> None:
        """Back to the scenario's starting state: accounts, tasks, journal, clock and seed."""
        self.control("POST", "reset")
        self.api_key = self._on_server(self.app.state.backend.ready_key)

    def use_scenario(self, name_or_yaml: str | Path, *, clock: Clock | str | None = None) -> None:
        """Load a bundled scenario by name, a YAML file, or YAML text, and reset to its starting state.

        ``clock`` ("real", "manual" or a Clock) overrides the scenario's clock, as in the constructor;
        None: the scenario's own.
        """
        from .scenario import load_scenario

        backend = self.app.state.backend
        checked = check_clock(clock)

        async def override() -> None:
            backend.clock_override = checked

        self._on_server(override)
        text = str(name_or_yaml)
        if isinstance(name_or_yaml, Path) or text.endswith((".yaml", ".yml")) and "\n" not in text:
            scenario = load_scenario(Path(text))  # in-process, so errors name the file
            self._on_server(lambda: backend.load(scenario))
        elif "\n" in text or ":" in text:
            self.control("PUT", "scenario", raw=text.encode(), content_type="application/yaml")
        else:
            self.control("PUT", "scenario", {"name": text})
        self.api_key = self._on_server(self.app.state.backend.ready_key)

    # --- verification (WireMock's verify) ------------------------------------------------------

    def verify(
        self,
        route: str = "*",
        *,
        count: int | None = None,
        at_least: int | None = None,
        at_most: int | None = None,
        body: Body = None,
        key: str | None = None,
        status: int | None = None,
    ) -> list[Entry]:
        """Assert how many requests matched ``route`` (``"POST /api/v1/tasks/create"``); returns them.

        ``body`` is a dict (the JSON body must contain these keys with these values), the exact text,
        or a predicate on the decoded body. Without ``count``/``at_least``/``at_most``: at least one.
        """
        match = RequestMatch(route, body=body, key=key, status=status)
        journal = self.requests()
        found = [e for e in journal if match(e)]
        if count is None and at_least is None and at_most is None:
            at_least = 1
        ok = (
            (count is None or len(found) == count)
            and (at_least is None or len(found) >= at_least)
            and (at_most is None or len(found) <= at_most)
        )
        if not ok:
            wanted = _wanted(count, at_least, at_most)
            raise AssertionError(
                f"expected {wanted} request(s) matching {match}, got {len(found)}\n"
                f"journal (newest last):\n{describe(journal)}"
            )
        return found

    def verify_never(self, route: str = "*", **criteria: Any) -> None:
        """Assert that no request matched ``route`` (and the body/key/status criteria)."""
        self.verify(route, count=0, **criteria)

    def verify_order(self, *routes: str | RequestMatch) -> list[Entry]:
        """Assert that requests matching ``routes`` arrived in this order (others may come in between)."""
        journal = self.requests()
        matches = [r if isinstance(r, RequestMatch) else RequestMatch(r) for r in routes]
        found: list[Entry] = []
        position = 0
        for match in matches:
            hit = next((i for i in range(position, len(journal)) if match(journal[i])), None)
            if hit is None:
                done = " then ".join(str(m) for m in matches[: len(found)]) or "nothing"
                raise AssertionError(
                    f"expected the requests in order: {' then '.join(str(m) for m in matches)}; "
                    f"matched {done}, then no {match} after it\njournal (newest last):\n{describe(journal)}"
                )
            found.append(journal[hit])
            position = hit + 1
        return found

    def wait_for_requests(
        self, route: str = "*", count: int = 1, timeout: float = 5.0, *, key: str | None = None
    ) -> list[Entry]:
        """Block until ``count`` requests matching ``route`` arrived (long-poll); AssertionError at the timeout."""
        match = RequestMatch(route, key=key)
        filters = {"count": str(count), "timeout": str(timeout)}
        if match.path != "*":
            filters["path"] = match.path
        if match.method:
            filters["method"] = match.method
        if key:
            filters["key"] = key
        request = urllib.request.Request(f"{self.base_url}/_mock/requests/wait{_query(filters)}")
        if self.admin_token:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout + 30) as response:
                return json.loads(response.read())["requests"]
        except urllib.error.HTTPError as exc:
            if exc.code != 408:
                raise AssertionError(f"GET /_mock/requests/wait -> {exc.code}: {exc.read().decode()}") from None
            got = json.loads(exc.read())["count"]
        raise AssertionError(
            f"waited {timeout} s for {count} request(s) matching {match}, got {got}\n"
            f"journal (newest last):\n{describe(self.requests())}"
        )

    async def await_requests(
        self, route: str = "*", count: int = 1, timeout: float = 5.0, *, key: str | None = None
    ) -> list[Entry]:
        """``wait_for_requests`` for async tests: waits in a thread, so the event loop keeps sending."""
        return await asyncio.to_thread(self.wait_for_requests, route, count, timeout, key=key)


def _query(params: dict[str, str]) -> str:
    return "?" + urllib.parse.urlencode(params) if params else ""


def _wanted(count: int | None, at_least: int | None, at_most: int | None) -> str:
    if count is not None:
        return f"exactly {count}"
    if at_least is not None and at_most is not None:
        return f"{at_least} to {at_most}"
    return f"at least {at_least}" if at_least is not None else f"at most {at_most}"
