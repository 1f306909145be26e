"""create_app(): the routes, the error envelopes, the request journal and the result files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, control, media
from .backend import Backend
from .clock import Clock
from .errors import ApiError, ControlError, ScenarioError
from .fastpath import Answer, FastRoutes, MockgenApp
from .faults import fault_response, find_fault, lost_response
from .guard import Guard, HostPolicy
from .http import MAX_STATE_BYTES, envelope, json_response, note, noted_fault
from .journal import MAX_BYTES as JOURNAL_BYTES
from .journal import PART_BYTES, Record, kept, scrub, scrub_notes
from .openapi import build_openapi
from .scenario import Scenario, load_scenario
from .spec import FILES_PATH, Msg
from .state import StateAt, import_state, state_at
from .store import Store, StoreUnavailable, open_store, run_now

__all__ = ["create_app"]

log = logging.getLogger("mockgen")
JOURNAL_BODY_BYTES = PART_BYTES
UNJOURNALED = ("/_mock/", "/static/", "/favicon.ico", "/openapi.json")
STATIC_DIR = Path(__file__).with_name("static")


def _is_control(path: str) -> bool:
    return path.startswith("/_mock/")


def allowed_methods(app: Starlette, path: str) -> str:
    """The ``Allow`` value for ``path``: the methods of every route on it (one path may have several routes).

    As OpenAPI matches paths, a concrete route comes before a templated one: /api/v1/tasks/create
    allows POST, as /openapi.json says (a GET there is a poll of a task named 'create', which never exists).
    """
    matching = [r for r in app.router.routes if isinstance(r, Route) and r.methods and r.path_regex.match(path)]
    concrete = [r for r in matching if not r.param_convertors]
    methods: set[str] = set()
    for route in concrete or matching:
        methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    method, path = request.method, request.url.path
    # RFC 9110: a 405 says which methods the resource has (Starlette's own Allow names only one route's).
    headers = {"allow": allowed_methods(request.app, path)} if status == 405 else None
    if _is_control(path):
        return json_response({"error": f"no control route {method} {path}"}, status, headers)
    if status == 405:
        msg = Msg.BAD_METHOD.format(method=method, path=path)
    else:
        msg = Msg.NO_ROUTE.format(method=method, path=path)
    note(request, error=msg)
    return json_response({"code": status, "msg": msg, "data": None}, status, headers)


async def control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlError)
    return json_response({"error": exc.msg}, exc.status)


async def stray_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if _is_control(request.url.path):
        return json_response({"error": exc.msg}, exc.status if exc.status != 200 else 400)
    return envelope(exc.code, exc.msg, None, exc.status)


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """A shared store that cannot be reached now: 503, in the control API's shape or the contract's envelope."""
    headers = {"retry-after": "1"}
    if _is_control(request.url.path):
        return json_response({"error": f"the shared store is unavailable: {exc}"}, 503, headers)
    note(request, error=Msg.STORE_DOWN)
    return json_response({"code": 503, "msg": Msg.STORE_DOWN, "data": None}, 503, headers)


async def server_error(request: Request, exc: Exception) -> Response:
    """The last line: never a traceback to the client. Reaching it is a bug, and it is logged."""
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(500, f"Internal error in mockgen (a bug, please report it): {type(exc).__name__}", None, 500)


class MediaCache:
    """The last few rendered result files, so a client downloading twice pays once."""

    def __init__(self, size: int = 64) -> None:
        self.items: OrderedDict[Hashable, bytes] = OrderedDict()
        self.size = size

    def get(self, key: Hashable, render: Any) -> bytes:
        data = self.items.get(key)
        if data is None:
            data = self.items[key] = render()
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        else:
            self.items.move_to_end(key)
        return data


async def result_file(request: Request) -> Response:
    """Serves /files/{task_id}.png|mp4, looked up by task id (never a path from the URL); faults first."""
    backend: Backend = request.app.state.backend
    fault = await find_fault(request, backend, "files", None)
    if fault is not None:
        faulted = await fault_response(request, backend, fault, None)
        if faulted is not None:
            return faulted
        if fault.lose_answer is not None:
            return lost_response(backend, fault)  # nothing changes by serving a file: only the answer is lost
    return await _result_file(request, backend)


# How each kind of result file (spec.RESULT_EXT) is made, and its media type.
RESULT_FILES: dict[str, tuple[Callable[[str, str | None], bytes], str]] = {
    "png": (media.render_png, "image/png"),
    "mp4": (media.render_mp4, "video/mp4"),
}


async def _result_file(request: Request, backend: Backend) -> Response:
    name: str = request.path_params["name"]
    task_id, _, ext = name.partition(".")
    task = await backend.result_task(task_id, ext)
    if task is None:
        note(request, error="no such result file")
        return envelope(404, Msg.NO_FILE.format(name=name), None, 404)
    render, media_type = RESULT_FILES[ext]
    # Keyed by what the file is made of, not its name: after a reset a seeded scenario hands out the
    # same task ids again, for other prompts.
    key = (ext, task.prompt, task.aspect_ratio)
    data = request.app.state.media_cache.get(key, lambda: render(task.prompt, task.aspect_ratio))
    note(request, task_id=task_id)
    return Response(data, media_type=media_type, headers={"cache-control": "public, max-age=3600"})


class JournalMiddleware:
    """Records every request to the emulated service (not the control API) in the journal.

    On the hot path it keeps the raw parts (masking the key at once); the journal renders them
    into JSON-able entries only when someone reads it.
    """

    def __init__(self, app: ASGIApp, backend: Backend) -> None:
        self.app = app
        self.backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/" or path.startswith(UNJOURNALED):
            await self.app(scope, receive, send)
            return
        await self.serve(scope, receive, send, self.app)

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Run ``app`` on this request and record what the client sent and got."""
        started = time.perf_counter()
        body: list[bytes] = []
        room = JOURNAL_BODY_BYTES
        status = 0

        async def recording_receive() -> Message:
            nonlocal room
            message = await receive()
            if room > 0 and message["type"] == "http.request":
                chunk = message.get("body", b"")[:room]
                if chunk:
                    body.append(chunk)
                    room -= len(chunk)
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                fault = noted_fault(scope)
                if fault:
                    headers = [h for h in message.get("headers", []) if h[0] != b"x-mockgen-fault"]
                    headers.append((b"x-mockgen-fault", fault))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await app(scope, recording_receive, recording_send)
        finally:
            self.record(scope, b"".join(body), status or 500, time.perf_counter() - started)

    async def serve_answer(self, scope: Scope, receive: Receive, send: Send, answer: Answer) -> None:
        """``serve`` for the contract's own endpoints, which tell the journal what they read and sent
        (no wrapping of receive and send), inside a catch-all like Starlette's ServerErrorMiddleware:
        an unexpected error gets a logged 500 in the contract's envelope, then is raised again."""
        started = time.perf_counter()
        status, body = 500, b""
        try:
            status, body = await answer(scope, receive, send)
        except Exception as exc:
            response = await server_error(Request(scope, receive), exc)
            with contextlib.suppress(Exception):  # an answer already under way cannot be replaced
                await response(scope, receive, send)
            raise
        finally:
            self.record(scope, body[:JOURNAL_BODY_BYTES], status or 500, time.perf_counter() - started)

    def record(self, scope: Scope, raw_body: bytes, status: int, elapsed: float) -> None:
        """Add this request to the journal, holding no whole key and no part past PART_BYTES."""
        journal = self.backend.journal
        headers, key, size = journal.headers(scope["headers"])  # size: all but the parts below
        # A key may come in the path, the query, the body or a note's error (which may quote the path);
        # the checks inline here are what every request pays (scrub itself only finds, no regex).
        path: str = scope["path"]  # percent-decoded already: 'sk%2D…' in the URL is 'sk-…' here
        length = len(path)
        if length > PART_BYTES or path.find("sk-") >= 0:
            path = kept(path)
            length = len(path)
        notes = scope.get("mockgen")
        if notes and "error" in notes:
            size += min(len(notes["error"] or ""), PART_BYTES)
            notes = scrub_notes(notes)
        query = scope.get("query_string", b"")
        if query:
            query = kept(query)
            size += len(query)
        body: bytes | str = raw_body
        if raw_body:
            body = scrub(raw_body, "utf-8")
            size += len(body)
        entry: Record = (
            self.backend.now(),
            scope["method"],
            path,
            query,
            headers,
            key,
            body,
            status,
            elapsed,
            notes,
        )
        journal.append(entry, size + length)


async def openapi_document(request: Request) -> Response:
    """GET /openapi.json: the contract (and the control API) for the scenario in force."""
    backend = request.app.state.backend
    return json_response(build_openapi(backend.scenario, api.base_url(request), envelope=backend.envelope))


async def dashboard(request: Request) -> Response:
    page = Path(__file__).with_name("dashboard.html")
    return HTMLResponse(page.read_text(encoding="utf-8"))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


async def watch_scenario(app: Starlette, path: Path, interval: float = 0.5) -> None:
    """Reload the scenario file when it changes; a broken edit is logged and the old one stays.

    It never dies: whatever a bad edit raises (a YAML error, a 5,000-digit integer, nesting deep
    enough to exhaust the stack) is logged, and a later good edit loads.
    """
    last = _mtime(path)
    while True:
        await asyncio.sleep(interval)
        current = _mtime(path)
        if current == last or current is None:
            continue
        last = current
        try:
            # In a thread: a large file takes PyYAML a while, and clients go on being served meanwhile.
            scenario = await asyncio.to_thread(load_scenario, path)
            await app.state.backend.load(scenario)
        except ScenarioError as exc:
            log.error("scenario %s refused, keeping %r:\n%s", path, app.state.backend.scenario_name, exc)
            continue
        except Exception as exc:  # the watcher must outlive any edit
            name = app.state.backend.scenario_name
            log.error("scenario %s refused, keeping %r: %s: %s", path, name, type(exc).__name__, exc)
            continue
        log.warning("scenario %s reloaded: %r in force from its starting state", path, scenario.name)


def check_state_path(path: Path) -> None:
    """Refuse (ControlError) a state file that could not be written at shutdown, before any work is done."""
    tmp = _tmp_path(path)
    existed = tmp.exists()
    try:
        with tmp.open("a", encoding="utf-8"):
            pass
        if not existed:
            tmp.unlink()
    except OSError as exc:
        raise ControlError(f"cannot write {tmp} (the state is saved there first): {exc.strerror or exc}") from None


async def load_state_file(backend: Backend, path: Path, *, any_scenario: bool = False) -> bool:
    """Restore the world from a state file; False when there is none yet (ControlError if it is bad).

    A state saved under another scenario is refused unless ``any_scenario``: loading it silently,
    and then overwriting it at shutdown, would lose the other scenario's world.
    """
    if not path.exists():
        return False
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ControlError(f"cannot read {path}: {exc}") from None
    if not isinstance(state, dict):
        raise ControlError(f"{path} does not hold an exported state")
    saved, current = state.get("scenario"), backend.scenario_name
    if isinstance(saved, str) and saved != current and not any_scenario:
        raise ControlError(
            f"it was saved under the scenario {saved!r}, and this server runs {current!r}: "
            f"start it with --scenario {saved}, or pass --state-any-scenario to load it anyway "
            f"(it is then saved under {current!r})"
        )
    await import_state(backend, state)
    return True


def save_state_file(state: StateAt, path: Path) -> None:
    """Write a snapshot of the world (``state_at``) to a state file, atomically: a crash
    mid-write never leaves half a file.

    ASCII with escapes, so any string the API accepted (a lone surrogate too) round-trips; a
    number JSON cannot hold (NaN, infinity) raises instead of writing a file no load accepts.
    On any failure the old file stays, the temporary one is removed, and the error is raised.
    It reads nothing live, so it may run in a thread.
    """
    tmp = _tmp_path(path)
    try:
        text = json.dumps(state.as_dict(), ensure_ascii=True, allow_nan=False, indent=1)
        tmp.write_text(text, encoding="ascii")
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


async def stop_watcher(watcher: asyncio.Task[None]) -> None:
    """Cancel the scenario watcher; if it had died, say why (it must not stop the save after it)."""
    watcher.cancel()
    try:
        await watcher
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.error("the scenario watcher had stopped: %s: %s", type(exc).__name__, exc)


async def save_at_shutdown(backend: Backend, path: Path) -> None:
    """``save_state_file`` of the world now, rendered and written in a thread (a big world takes
    seconds, and the event loop stays free); a failure is logged in one line (the old file is kept)."""
    try:
        snapshot = await state_at(backend)
        await asyncio.to_thread(save_state_file, snapshot, path)
    except Exception as exc:
        log.error("state file %s NOT written, the previous one is kept: %s: %s", path, type(exc).__name__, exc)


def create_app(
    scenario: Scenario | str | Path | None = None,
    *,
    clock: Clock | str | None = None,
    envelope: str | None = None,
    public_url: str | None = None,
    admin_token: str | None = None,
    max_tasks: int = 1_000_000,
    max_accounts: int = 100_000,
    journal_limit: int = 10_000,
    journal_bytes: int = JOURNAL_BYTES,
    watch: bool = False,
    watch_interval: float = 0.5,
    state_file: str | Path | None = None,
    state_any_scenario: bool = False,
    allowed_hosts: Iterable[str] = (),
    state_bytes: int = MAX_STATE_BYTES,
    fast_path: bool = True,
    store: Store | str | None = None,
    store_prefix: str = "mockgen",
) -> Starlette:
    """The ASGI app of one emulated world. ``scenario`` is a Scenario, a bundled name or a path.

    ``clock`` and ``envelope`` override the scenario's (``envelope="compat"``: README, Known clients);
    ``clock`` is "real", "manual" or a Clock of the caller's, which the world then reads as it is.
    With ``watch``, a scenario loaded from a file is reloaded whenever the file changes. With
    ``state_file``, the world is restored from it (if it exists) and written back at shutdown;
    it must be writable, and saved under the same scenario unless ``state_any_scenario``.
    ``max_tasks`` (unfinished ones included) and ``max_accounts`` bound the world, ``journal_limit`` and
    ``journal_bytes`` the request journal (README, Limits).
    Requests are answered when their Host is a loopback name, the address they reached, ``public_url``'s
    host or one of ``allowed_hosts`` (``"*"``: any); README, Who can drive the control API.
    ``PUT /_mock/state`` takes a body of up to ``state_bytes`` (413 past it).
    ``fast_path=False`` sends the contract's two routes through Starlette's middleware and router
    like every other request (same answers, more work per request; mockgen.fastpath says when it is off).
    ``store`` is where the world lives: a Store, or a URL for ``open_store`` ("memory", the default,
    or ``redis://...`` with ``store_prefix``: README, Sharing one world). A shared store is joined
    (or its world started) when the app starts serving, and a state file needs the memory store.
    """
    if scenario is None:
        scenario = "default"
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    watched = Path(scenario.path) if watch and scenario.path else None
    state_path = Path(state_file) if state_file else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.shutdown = control.Shutdown()  # a fresh one: an app may be served again after a stop
        backend = app.state.backend
        if backend.shared:
            try:
                await backend.open()
            except StoreUnavailable as exc:  # it serves 503s meanwhile, and joins at the first answer
                log.warning("the shared store does not answer (%s): 503 until it does", exc)
        watcher = asyncio.create_task(watch_scenario(app, watched, watch_interval)) if watched else None
        try:
            yield
        finally:
            app.state.shutdown.begin()
            if watcher is not None:
                await stop_watcher(watcher)
            if state_path is not None:
                await save_at_shutdown(backend, state_path)
            await backend.close()

    if store is None or isinstance(store, str):
        bounds = {"max_tasks": max_tasks, "journal_limit": journal_limit, "max_accounts": max_accounts}
        store = open_store(store, store_prefix, **bounds, journal_bytes=journal_bytes)
    if state_path is not None and not store.immediate:
        raise ValueError("a state file needs the memory store: a shared store keeps the world itself")
    backend = Backend(scenario, clock=clock, envelope=envelope, store=store)
    routes = [
        *api.routes,
        Route(FILES_PATH, result_file, methods=["GET", "HEAD"]),
        Route("/openapi.json", openapi_document, methods=["GET"]),
        *control.routes,
        Route("/", dashboard),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = MockgenApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: not_found,
            ControlError: control_error,
            ApiError: stray_api_error,
            StoreUnavailable: store_unavailable,
            Exception: server_error,
        },
    )
    app.state.backend = backend
    app.state.admin_token = admin_token
    app.state.media_cache = MediaCache()
    app.state.shutdown = control.Shutdown()
    app.state.state_loaded = False
    app.state.state_bytes = state_bytes
    if state_path is not None:
        check_state_path(state_path)
        app.state.state_loaded = run_now(load_state_file(backend, state_path, any_scenario=state_any_scenario))
    app.backend = backend
    app.public_url = public_url.rstrip("/") if public_url else None
    app.hosts = HostPolicy(allowed_hosts, app.public_url)
    # Inside the journal, which so records the public requests it refuses.
    app.add_middleware(Guard, hosts=app.hosts, public_url=app.public_url, routes=control.routes)
    app.add_middleware(JournalMiddleware, backend=backend)
    if admin_token:  # without a token the guard would only pass every request on
        app.add_middleware(control.AdminTokenGuard, token=admin_token)
    if fast_path:  # after create_app's own middleware: a later one turns it off (MockgenApp.add_middleware)
        app.fast = FastRoutes(JournalMiddleware(app.router, backend), api.GetTask().answer, api.CreateTask().answer)
    return app
