"""The /_mock/ control API that tests and demos drive (thin: parse, call backend, render)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import re
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .backend import Backend, NextOutcome
from .errors import ControlError, ScenarioError
from .http import (
    Items,
    Part,
    control_object,
    dumps,
    json_response,
    read_body,
    read_control_body,
    read_control_json,
    streamed_json,
)
from .journal import Filter, WaitersFull
from .models import NEVER, Account, Ledger, LedgerEntry, Task, TasksAt
from .scenario import MAX_INT, MAX_SECONDS, MAX_TIME, bundled_names, load_bundled, parse_scenario
from .spec import SUCCEEDED, Msg
from .state import STATE_VERSION, LoadedState, StateAt, install_state, prepare_state, state_at, state_task

T = TypeVar("T")
WAITERS_RETRY_AFTER = 1  # seconds: a long-poll's slot frees as soon as its requests arrive or it times out


async def _backend(request: Request) -> Backend:
    """The Backend, serving the world's current generation (a shared store's may have moved elsewhere)."""
    backend: Backend = request.app.state.backend
    if backend.shared:
        await backend.follow()
    return backend


# --- views -----------------------------------------------------------------------------------------


def account_view(account: Account, ledger: Ledger | None = None) -> dict[str, Any]:
    """An account as the control API shows it (with these ledger entries: ``ledger``)."""
    view: dict[str, Any] = {"key": account.key, "name": account.name, "credits": account.credits}
    if ledger is not None:
        view["ledger"] = [e.as_dict() for e in ledger]
    return view


async def task_view(b: Backend, task: Task, base_url: str) -> dict[str, Any]:
    """Everything about a task, for the control API and the dashboard."""
    return _task_view(b, task, base_url, b.now(), await b.task_account(task))


def task_view_at(b: Backend, moment: TasksAt, i: int, base_url: str, now: float) -> dict[str, Any]:
    """``task_view`` of the i-th task of ``moment`` as it was then (``now``: that moment's time)."""
    return _task_view(b, moment.task(i), base_url, now, moment.account(i))


def _task_view(b: Backend, task: Task, base_url: str, now: float, account: Account | None) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "key": task.key,
        "account": account.name if account else None,
        "request_id": task.request_id,
        "status": task.status_at(now),
        "request": {
            "model_id": task.model_id,
            "prompt": task.prompt,
            "aspect_ratio": task.aspect_ratio,
            "image_urls": list(task.image_urls),
        },
        "task_type": task.task_type,
        "credits": task.credits,
        "planned_outcome": task.outcome,
        "failure_message": task.failure_message if task.outcome == "failed" else None,
        "message": task.message,
        "progress": task.progress,
        "polls": task.polls,
        "rule": task.rule,
        "lost_answer": task.lost_answer,
        "timeline": {
            "created_at": task.created_at,
            "running_at": task.running_at if task.progress != "polls" else None,
            "finish_at": task.finish_at if task.finish_at != NEVER else None,
            "settled_at": task.settled_at,
        },
        "result_url": b.result_url(task, base_url) if task.final_status == SUCCEEDED else None,
    }


# --- endpoints -------------------------------------------------------------------------------------


class Shutdown:
    """Ends the long-polls in flight when the server starts shutting down (``begin``).

    A server waits for its open requests before it stops, so a parked long-poll would hold the
    shutdown for its whole timeout (Docker kills a container 10 s after SIGTERM).
    """

    def __init__(self) -> None:
        self.stopping = False
        self._wakers: set[asyncio.Future[None]] = set()

    def begin(self) -> None:
        """Shut down: every ``race`` under way returns None at once, and later ones at once too."""
        self.stopping = True
        for waker in self._wakers:
            if not waker.done():
                waker.set_result(None)

    async def race(self, awaitable: Awaitable[T]) -> T | None:
        """What ``awaitable`` gives, or None if the server shuts down first (it is then cancelled)."""
        task = asyncio.ensure_future(awaitable)
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wakers.add(waker)
        try:
            if not self.stopping:
                await asyncio.wait((task, waker), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            return None
        finally:
            self._wakers.discard(waker)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _base(request: Request) -> str:
    from .api import base_url

    return base_url(request)


def _number(
    body: dict[str, Any], key: str, *, integer: bool = False, required: bool = True, low: float = -MAX_INT
) -> Any:
    """``body[key]``, a finite number (an integer with ``integer``) from ``low`` to MAX_INT, or ControlError 400."""
    value = body.get(key)
    if value is None and not required:
        return None
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is an integer to JSON Schema, and so to /openapi.json (bounded below all the same)
    kinds = (int,) if integer else (int, float)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ControlError(f"{key!r} must be {kind}, not {_short(value)}")
    if not low <= value <= MAX_INT:  # NaN and infinities (JSON's 1e400) fail this too
        raise ControlError(f"{key!r} must be {kind} from {low:g} to {MAX_INT}, not {_short(value)}")
    return value


def _short(value: object) -> str:
    """A client's value for an error message: never more than 80 characters of it."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _outcome(body: dict[str, Any]) -> str:
    outcome = body.get("outcome")
    if outcome not in ("success", "failed"):
        raise ControlError(f"'outcome' must be 'success' or 'failed', not {outcome!r}")
    return outcome


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ControlError(f"{key!r} must be a string, not {value!r}")
    return value


async def health(request: Request) -> Response:
    b: Backend = request.app.state.backend  # (not _backend: health answers when following fails)
    store = await b.store_status()
    view: dict[str, Any] = {"status": "ok" if store["up"] else "store down", "scenario": b.scenario_name}
    view["clock"] = b.clock.kind
    view.update(envelope=b.envelope, now=b.now(), **store)
    return json_response(view, 200 if store["up"] else 503)


async def list_accounts(request: Request) -> Response:
    b = await _backend(request)
    # Balances as they are now, the list rendered in chunks (there may be 100,000 accounts).
    accounts, total = await b.accounts_page(_limit(request))
    credits = [a.credits for a in accounts]

    def view(i: int) -> dict[str, Any]:
        row = account_view(accounts[i])
        row["credits"] = credits[i]
        return row

    return streamed_json([Items(range(len(accounts)), view)], headers={"x-total-count": str(total)})


async def create_account(request: Request) -> Response:
    b = await _backend(request)
    body = await read_control_json(request)
    credits = _number(body, "credits", integer=True, required=False, low=0)
    account = await b.create_account(credits or 0, _optional_str(body, "key"), _optional_str(body, "name"))
    return json_response(account_view(account), 201)


# Query numbers as /openapi.json types them: ASCII digits (int() would take ' 5', '1_0' or '٣' too).
WHOLE = re.compile(r"[0-9]+")
DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?|\.[0-9]+([eE][-+]?[0-9]+)?")


def _limit(request: Request) -> int | None:
    """``?limit=N``: only the newest N items of a list that may be long (the dashboard polls every second)."""
    limit = request.query_params.get("limit")
    if limit is None:
        return None
    if not (WHOLE.fullmatch(limit) and len(limit) <= 15):
        raise ControlError(f"'limit' must be a whole number below 10**15, not {_short(limit)}")
    return int(limit)


async def get_account(request: Request) -> Response:
    b = await _backend(request)
    account = await b.account(request.path_params["key"])
    ledger = await b.ledger(account.key)  # as it is now
    limit = _limit(request)
    if limit is None:  # the whole ledger, which may hold a million entries: as it is now, in chunks
        head = dumps(account_view(account))[:-1] + b',"ledger":'
        return streamed_json([head, Items(ledger, LedgerEntry.as_dict), b"}"])
    view = account_view(account)
    total = len(ledger)
    view["ledger"] = [e.as_dict() for e in ledger[max(total - limit, 0) :]]  # (only the tail read)
    return json_response(view, headers={"x-total-count": str(total)})


async def change_credits(request: Request) -> Response:
    b = await _backend(request)
    body = await read_control_json(request)
    delta = _number(body, "delta", integer=True)
    balance = (await b.account(request.path_params["key"])).credits + delta  # (the same 404 as topup's for no account)
    if balance > MAX_INT:
        # 409: the same delta is fine on a smaller balance; it is the account's state that refuses it
        raise ControlError(f"'delta' would take the balance to {balance}, past the limit of {MAX_INT}", 409)
    account = await b.topup(request.path_params["key"], delta)
    return json_response(account_view(account, await b.ledger(account.key)))


async def list_tasks(request: Request) -> Response:
    b = await _backend(request)
    # One moment, rendered in chunks, so other clients go on meanwhile.
    moment, total = await b.tasks_page(request.query_params.get("key"), _limit(request))
    base, now = _base(request), b.now()
    views = Items(range(len(moment)), lambda i: task_view_at(b, moment, i, base, now))
    return streamed_json([views], headers={"x-total-count": str(total)})


async def get_task(request: Request) -> Response:
    b = await _backend(request)
    task = await b.task_for_control(request.path_params["task_id"])
    return json_response(await task_view(b, task, _base(request)))


async def resolve_task(request: Request) -> Response:
    b = await _backend(request)
    body = await read_control_json(request)
    task = await b.resolve(request.path_params["task_id"], _outcome(body), _optional_str(body, "msg"))
    return json_response(await task_view(b, task, _base(request)))


async def advance_clock(request: Request) -> Response:
    b = await _backend(request)
    body = await read_control_json(request)
    seconds = _number(body, "seconds")
    if not 0 <= seconds <= MAX_SECONDS:
        raise ControlError("'seconds' must be from 0 to ten years")
    if b.now() + seconds > MAX_TIME:
        raise ControlError(f"'seconds' would take the clock past the end of year 9999 ({MAX_TIME} Unix seconds)", 409)
    return json_response({"now": await b.advance(seconds)})


def _journal_filter(request: Request) -> Filter:
    q = request.query_params
    method = q.get("method")
    return Filter(
        q.get("path"),
        method.upper() if method else None,
        # errors=true: only the near misses (no such route, refused by validation or auth), each with its reason
        q.get("errors", "").lower() in ("1", "true", "yes"),
        # key=: the requests sent with exactly this key (the journal shows it masked, and finds it whole)
        q.get("key") or None,
    )


async def list_requests(request: Request) -> Response:
    journal = (await _backend(request)).journal
    return json_response(await journal.read(_journal_filter(request)))


async def clear_requests(request: Request) -> Response:
    await (await _backend(request)).journal.wipe()
    return Response(status_code=204)


async def wait_requests(request: Request) -> Response:
    """Long-poll: the journal is scanned once, then each new request alone is checked (``Journal.watch``)."""
    q = request.query_params
    count_text, timeout_text = q.get("count", "1"), q.get("timeout", "10")
    if not WHOLE.fullmatch(count_text) or not DECIMAL.fullmatch(timeout_text):
        raise ControlError("count must be an integer and timeout a number of seconds")
    count, timeout = int(count_text), float(timeout_text)
    if count < 1 or not 0 <= timeout <= 300:
        raise ControlError("count must be >= 1 and timeout from 0 to 300 seconds")
    journal = (await _backend(request)).journal
    try:
        waiter = journal.watch(_journal_filter(request), count)
    except WaitersFull:
        msg = Msg.WAITERS_FULL.format(limit=journal.max_waiters)
        return json_response({"error": msg}, 503, {"retry-after": str(WAITERS_RETRY_AFTER)})
    shutdown: Shutdown | None = getattr(request.app.state, "shutdown", None)
    try:
        waiting = waiter.wait(timeout)
        arrived = await (shutdown.race(waiting) if shutdown is not None else waiting)
    finally:
        journal.release(waiter)
    answer: dict[str, Any] = {"arrived": bool(arrived), "count": waiter.found, "requests": journal.found(waiter)}
    if arrived is None:  # the server is shutting down: answer now rather than hold it up
        return json_response({"error": "the server is shutting down", **answer}, 503)
    return json_response(answer, 200 if arrived else 408)


async def get_scenario(request: Request) -> Response:
    b = await _backend(request)
    s = b.scenario
    return json_response(
        {
            "name": s.name,
            "description": s.description,
            "path": s.path,
            "seed": s.seed,
            "clock": s.clock,
            "envelope": b.envelope,  # in force: the scenario's, or --envelope / MOCKGEN_ENVELOPE
            "auth_mode": s.auth_mode,
            "models": {m.model_id: {"task_type": m.task_type, "cost": m.cost} for m in s.models.values()},
            "rules": [r.name for r in s.rules],
            "faults": [f.name for f in s.faults],
            "source": s.source,
        }
    )


async def put_scenario(request: Request) -> Response:
    b = await _backend(request)
    content_type = request.headers.get("content-type", "")
    try:
        if "json" in content_type:
            body = await read_control_json(request)
            name = body.get("name")
            if not isinstance(name, str):
                raise ControlError('send YAML text, or JSON {"name": <bundled scenario>}')
            scenario = load_bundled(name)  # only these: a file is loaded only from the command line
        else:
            raw = await read_body(request)
            if not raw.strip():
                raise ControlError('send YAML text, or JSON {"name": <bundled scenario>}')
            # In a thread: a large scenario takes PyYAML a while, and other clients go on meanwhile.
            text = raw.decode("utf-8", "replace")
            scenario = await run_in_threadpool(parse_scenario, text, "<PUT /_mock/scenario>")
    except ScenarioError as exc:
        return json_response({"error": "scenario refused", "issues": [i.as_dict() for i in exc.issues]}, 422)
    await b.load(scenario)
    return json_response({"name": scenario.name, "loaded": True})


async def list_scenarios(request: Request) -> Response:
    return json_response(bundled_names())


async def reset(request: Request) -> Response:
    b = await _backend(request)
    await b.reset()
    return json_response({"reset": True, "scenario": b.scenario_name, "now": b.now()})


async def queue_next(request: Request) -> Response:
    b = await _backend(request)
    body = await read_control_json(request)
    count = _number(body, "count", integer=True, required=False, low=1)
    if count is None:
        count = 1
    model_id = _optional_str(body, "model_id")
    if model_id is not None and not b.has_model(model_id):
        raise ControlError(f"unknown model_id {model_id!r}")
    entry = NextOutcome(_outcome(body), count, model_id, _optional_str(body, "key"), _optional_str(body, "msg"))
    length = await b.queue_next(entry)  # 409 when the queue is full
    return json_response({"queued": [vars_(entry)], "length": length}, 201)


async def list_next(request: Request) -> Response:
    b = await _backend(request)
    shown = await b.queued_next(_limit(request))
    total = len(shown) if _limit(request) is None else len(await b.queued_next())
    return json_response({"queued": [vars_(e) for e in shown]}, headers={"x-total-count": str(total)})


async def clear_next(request: Request) -> Response:
    await (await _backend(request)).clear_next()
    return Response(status_code=204)


def vars_(entry: NextOutcome) -> dict[str, Any]:
    return {
        "outcome": entry.outcome,
        "count": entry.count,
        "model_id": entry.model_id,
        "key": entry.key,
        "msg": entry.message,
    }


async def get_state(request: Request) -> Response:
    return streamed_json(state_parts(await state_at(await _backend(request))))


def state_parts(state: StateAt) -> Iterator[Part]:
    """``state.as_dict()`` as JSON, in parts that ``streamed_json`` renders a chunk at a time."""
    head = {"version": STATE_VERSION, "scenario": state.scenario, "clock": state.clock}
    yield dumps(head)[:-1] + b',"accounts":['
    for i, ledger in enumerate(state.ledgers):
        view = dumps(state.account(i, ledger=False))
        yield (b"," if i else b"") + view[:-1] + b',"ledger":'
        yield Items(ledger, LedgerEntry.as_dict)  # an account may have a million entries
        yield b"}"
    yield b'],"tasks":'
    tasks = state.tasks
    yield Items(range(len(tasks)), lambda i: state_task(tasks.task(i)))
    yield b',"next":' + dumps(state.next) + b"}"


async def put_state(request: Request) -> Response:
    b = await _backend(request)
    raw = await read_control_body(request, request.app.state.state_bytes)
    # Parsed, checked and built aside in a thread, so other clients are served meanwhile; only the
    # swap runs here, in one step: no request sees half a world, and a refused state changes nothing.
    world = await run_in_threadpool(_prepared, b, raw)
    old = await install_state(b, world)
    await run_in_threadpool(old.release)  # the old world, now there, freed away from the loop
    return json_response({"restored": True, "now": b.now()})


_collector = threading.Lock()
_pausing = 0  # threads in collector_paused()
_resume = False  # whether to enable the collector again when the last of them is done


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off meanwhile (back on when the last thread in here leaves).

    A state's parse makes hundreds of thousands of short-lived objects (freed by reference counting:
    a parsed body has no cycles), and each full collection they would trigger holds every thread,
    the event loop's too, for as long as it walks the whole world (0.2-0.4 s at 100,000 tasks).
    """
    global _pausing, _resume
    with _collector:
        if _pausing == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pausing += 1
    try:
        yield
    finally:
        with _collector:
            _pausing -= 1
            if _pausing == 0 and _resume:
                gc.enable()


def _prepared(b: Backend, raw: bytes) -> LoadedState:
    with collector_paused():
        return prepare_state(b, control_object(raw))


routes = [
    Route("/_mock/health", health),
    Route("/_mock/accounts", list_accounts, methods=["GET"]),
    Route("/_mock/accounts", create_account, methods=["POST"]),
    Route("/_mock/accounts/{key}", get_account),
    Route("/_mock/accounts/{key}/credits", change_credits, methods=["POST"]),
    Route("/_mock/tasks", list_tasks),
    Route("/_mock/tasks/{task_id}", get_task),
    Route("/_mock/tasks/{task_id}/resolve", resolve_task, methods=["POST"]),
    Route("/_mock/clock/advance", advance_clock, methods=["POST"]),
    Route("/_mock/requests", list_requests, methods=["GET"]),
    Route("/_mock/requests", clear_requests, methods=["DELETE"]),
    Route("/_mock/requests/wait", wait_requests),
    Route("/_mock/scenario", get_scenario, methods=["GET"]),
    Route("/_mock/scenario", put_scenario, methods=["PUT"]),
    Route("/_mock/scenarios", list_scenarios),
    Route("/_mock/reset", reset, methods=["POST"]),
    Route("/_mock/next", queue_next, methods=["POST"]),
    Route("/_mock/next", list_next, methods=["GET"]),
    Route("/_mock/next", clear_next, methods=["DELETE"]),
    Route("/_mock/state", get_state, methods=["GET"]),
    Route("/_mock/state", put_state, methods=["PUT"]),
]


class AdminTokenGuard:
    """With --admin-token, every /_mock/ request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected and scope["type"] == "http" and scope["path"].startswith("/_mock/"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                msg = "the control API needs 'Authorization: Bearer <admin token>' (see --admin-token)"
                await json_response({"error": msg}, 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)
