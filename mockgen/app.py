"""create_app(): the routes, the error envelopes, the request journal and the result files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
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
from .errors import ApiError, ControlError, ScenarioError
from .faults import injected_fault
from .http import envelope, json_response, note
from .journal import mask_key
from .models import SUCCEEDED
from .openapi import build_openapi
from .scenario import Scenario, load_scenario
from .store import MemoryStore

log = logging.getLogger("mockgen")
JOURNAL_BODY_BYTES = 4096
UNJOURNALED = ("/_mock/", "/static/", "/favicon.ico", "/openapi.json")
STATIC_DIR = Path(__file__).with_name("static")


def _is_control(path: str) -> bool:
    return path.startswith("/_mock/")


async def not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    method, path = request.method, request.url.path
    if _is_control(path):
        return json_response({"error": f"no control route {method} {path}"}, status)
    if status == 405:
        msg = f"Method {method} is not allowed on {path}."
    else:
        msg = f"No route {method} {path}. The API has POST /api/v1/tasks/create and GET /api/v1/tasks/{{task_id}}."
    note(request, error=msg)
    return envelope(status, msg, None, status)


async def control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlError)
    return json_response({"error": exc.msg}, exc.status)


async def stray_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if _is_control(request.url.path):
        return json_response({"error": exc.msg}, exc.status if exc.status != 200 else 400)
    return envelope(exc.code, exc.msg, None, exc.status)


async def server_error(request: Request, exc: Exception) -> Response:
    """The last line: never a traceback to the client. Reaching it is a bug, and it is logged."""
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(500, f"Internal error in mockgen (a bug, please report it): {type(exc).__name__}", None, 500)


class MediaCache:
    """The last few rendered result files, so a client downloading twice pays once."""

    def __init__(self, size: int = 64) -> None:
        self.items: OrderedDict[str, bytes] = OrderedDict()
        self.size = size

    def get(self, name: str, render: Any) -> bytes:
        data = self.items.get(name)
        if data is None:
            data = self.items[name] = render()
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        else:
            self.items.move_to_end(name)
        return data


async def result_file(request: Request) -> Response:
    """Serves /files/{task_id}.png|mp4, looked up by task id (never a path from the URL)."""
    backend: Backend = request.app.state.backend
    faulted = await injected_fault(request, backend, "files", None)
    if faulted is not None:
        return faulted
    name: str = request.path_params["name"]
    task_id, _, ext = name.partition(".")
    task = backend.store.get_task(task_id)
    backend.settle()
    expected = "mp4" if task and task.task_type == "video" else "png"
    if task is None or ext != expected or task.final_status != SUCCEEDED:
        note(request, error="no such result file")
        return envelope(404, f"No result file {name}: the task does not exist or has not succeeded.", None, 404)
    render = media.render_mp4 if ext == "mp4" else media.render_png
    data = request.app.state.media_cache.get(name, lambda: render(task.prompt, task.aspect_ratio))
    note(request, task_id=task_id)
    media_type = "video/mp4" if ext == "mp4" else "image/png"
    return Response(data, media_type=media_type, headers={"cache-control": "public, max-age=3600"})


class JournalMiddleware:
    """Records every request to the emulated service (not the control API) in the journal."""

    def __init__(self, app: ASGIApp, backend_of: Any) -> None:
        self.app = app
        self.backend_of = backend_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/" or path.startswith(UNJOURNALED):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body = bytearray()
        status = 0

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < JOURNAL_BODY_BYTES:
                body.extend(message.get("body", b"")[: JOURNAL_BODY_BYTES - len(body)])
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                fault = scope.get("mockgen", {}).get("fault")
                if fault:
                    headers = [h for h in message.get("headers", []) if h[0] != b"x-mockgen-fault"]
                    headers.append((b"x-mockgen-fault", fault.encode("latin-1", "replace")))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, recording_receive, recording_send)
        finally:
            self._record(scope, bytes(body), status or 500, time.perf_counter() - started)

    def _record(self, scope: Scope, body: bytes, status: int, elapsed: float) -> None:
        backend: Backend = self.backend_of()
        headers: dict[str, str] = {}
        key = None
        for name, value in scope["headers"]:
            n, v = name.decode("latin-1"), value.decode("latin-1")
            if n == "authorization":
                scheme, _, token = v.partition(" ")
                key = mask_key(token.strip()) if token.strip().startswith("sk-") else None
                v = f"{scheme} {key or '***'}"
            headers[n] = v
        notes = scope.get("mockgen", {})
        backend.store.journal.append(
            {
                "at": backend.now(),
                "method": scope["method"],
                "path": scope["path"],
                "query": scope.get("query_string", b"").decode("latin-1"),
                "headers": headers,
                "key": key,
                "body": body.decode("utf-8", "replace"),
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
                "task_id": notes.get("task_id"),
                "fault": notes.get("fault"),
                "error": notes.get("error"),
            }
        )


async def openapi_document(request: Request) -> Response:
    """GET /openapi.json: the contract (and the control API) for the scenario in force."""
    return json_response(build_openapi(request.app.state.backend.scenario, api.base_url(request)))


async def dashboard(request: Request) -> Response:
    page = Path(__file__).with_name("dashboard.html")
    return HTMLResponse(page.read_text(encoding="utf-8"))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


async def watch_scenario(app: Starlette, path: Path, interval: float = 0.5) -> None:
    """Reload the scenario file when it changes; a broken edit is logged and the old one stays."""
    last = _mtime(path)
    while True:
        await asyncio.sleep(interval)
        current = _mtime(path)
        if current == last or current is None:
            continue
        last = current
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            log.error("scenario %s refused, keeping %r:\n%s", path, app.state.backend.scenario.name, exc)
            continue
        app.state.backend.load(scenario)
        log.warning("scenario %s reloaded: %r in force from its starting state", path, scenario.name)


def load_state_file(backend: Backend, path: Path) -> bool:
    """Restore the world from a state file; False when there is none yet (ControlError if it is bad)."""
    if not path.exists():
        return False
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ControlError(f"cannot read {path}: {exc}") from None
    if not isinstance(state, dict):
        raise ControlError(f"{path} does not hold an exported state")
    backend.import_state(state)
    return True


def save_state_file(backend: Backend, path: Path) -> None:
    """Write the world to a state file, atomically: a crash mid-write never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(backend.export_state(), ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def create_app(
    scenario: Scenario | str | Path | None = None,
    *,
    clock: str | None = None,
    public_url: str | None = None,
    admin_token: str | None = None,
    max_tasks: int = 1_000_000,
    journal_limit: int = 10_000,
    watch: bool = False,
    watch_interval: float = 0.5,
    state_file: str | Path | None = None,
) -> Starlette:
    """The ASGI app of one emulated world. ``scenario`` is a Scenario, a bundled name or a path.

    With ``watch``, a scenario loaded from a file is reloaded whenever the file changes. With
    ``state_file``, the world is restored from it (if it exists) and written back at shutdown.
    """
    if scenario is None:
        scenario = "default"
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    watched = Path(scenario.path) if watch and scenario.path else None
    state_path = Path(state_file) if state_file else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(watch_scenario(app, watched, watch_interval)) if watched else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if state_path is not None:
                save_state_file(app.state.backend, state_path)

    backend = Backend(scenario, clock=clock, store=MemoryStore(max_tasks, journal_limit))
    routes = [
        *api.routes,
        Route("/files/{name}", result_file, methods=["GET", "HEAD"]),
        Route("/openapi.json", openapi_document, methods=["GET"]),
        *control.routes,
        Route("/", dashboard),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: not_found,
            ControlError: control_error,
            ApiError: stray_api_error,
            Exception: server_error,
        },
    )
    app.state.backend = backend
    app.state.public_url = public_url.rstrip("/") if public_url else None
    app.state.admin_token = admin_token
    app.state.media_cache = MediaCache()
    app.state.state_loaded = load_state_file(backend, state_path) if state_path else False
    app.add_middleware(JournalMiddleware, backend_of=lambda: app.state.backend)
    app.add_middleware(control.AdminTokenGuard, token=admin_token)
    return app
