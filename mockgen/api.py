"""The public contract's routes: create a task, query a task (thin: parse, call backend, render).

The two routes are every client's hot path, so they are plain ASGI callables rather than
Request -> Response functions: they read the few headers they need in one pass and send the
answer's bytes themselves, which brings a poll close to the cost of an empty Starlette route
(benchmarks/README.md). Starlette still routes them (404, 405 and redirects are its own), and
anything unusual (steering headers, injected faults) goes through the Request-based helpers.
"""

from __future__ import annotations

from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .backend import NO_PROBE, NO_STEERING, Backend, Probe, Steering, Submit
from .errors import ApiError
from .faults import fault_response, find_fault, lost_response
from .http import JSON_HEADER, BodyTooLarge, dumps, note_scope, parse_json, receive_body
from .models import Task
from .scenario import Fault
from .spec import CREATE_PATH, FAILED, POLL_KEYS, QUERY_PATH, SUCCEEDED, Msg
from .store import StoreUnavailable

# A shared store that cannot be reached: the contract's envelope with a 503, never a 500 (README, Sharing one world).
STORE_DOWN = ApiError(Msg.STORE_DOWN, code=503, status=503)


def base_url(request: Request) -> str:
    return _base_url(request.scope, request.headers.get("host"))


def _base_url(scope: Scope, host: str | None) -> str:
    """--public-url, else the request's Host (the guard has checked it), else the address it reached."""
    public = scope["app"].public_url
    if public:
        return public
    return f"{scope.get('scheme', 'http')}://{host or _server_address(scope)}"


def _server_address(scope: Scope) -> str:
    server = scope.get("server")
    if not server:
        return "127.0.0.1"
    name = str(server[0])
    name = f"[{name}]" if ":" in name else name
    return name if server[1] is None else f"{name}:{server[1]}"


def task_data(backend: Backend, task: Task, base_url: str) -> dict[str, Any]:
    """The ``data`` of a poll's answer, exactly the contract's keys (plus a rule's extras)."""
    plan = task.plan  # (read once: every poll comes here)
    status = task.status_at(backend.now())
    url = backend.result_url(task, base_url) if status == SUCCEEDED else None
    task_type = plan.task_type
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": status,
        "task_type": task_type,
        "model_id": plan.model_id,
        "image_url": url if task_type == "image" else None,
        "video_url": url if task_type == "video" else None,
        "audio_url": None,
        "credits": plan.credits,
        "created_at": int(task.created_at),
    }
    if plan.extra:
        data.update(plan.extra)
    return data


def steering(request: Request) -> Steering:
    """X-Mockgen-Outcome / X-Mockgen-Delay, checked like any other input."""
    headers = request.headers
    outcome = headers.get("x-mockgen-outcome")
    if outcome is not None and outcome not in ("success", "failed"):
        raise ApiError(Msg.BAD_STEER.format(header="X-Mockgen-Outcome", expected="success or failed", value=outcome))
    delay_text = headers.get("x-mockgen-delay")
    delay = None
    if delay_text is not None:
        try:
            delay = float(delay_text)
        except ValueError:
            delay = -1.0
        if not 0 <= delay <= 86_400:
            raise ApiError(
                Msg.BAD_STEER.format(header="X-Mockgen-Delay", expected="seconds from 0 to 86400", value=delay_text)
            )
    return Steering(outcome, delay)


class Incoming:
    """The headers the contract's routes read (the first of each, as Starlette's), found in C."""

    __slots__ = ("authorization", "host", "content_length", "steered")

    def __init__(self, scope: Scope) -> None:
        headers = dict(reversed(scope["headers"]))  # reversed: the first of a repeated header wins
        authorization = headers.get(b"authorization")
        host = headers.get(b"host")
        self.authorization: str | None = None if authorization is None else authorization.decode("latin-1")
        self.host: str | None = None if host is None else host.decode("latin-1")
        self.content_length: bytes | None = headers.get(b"content-length")
        # X-Mockgen-Outcome/-Delay/-Fault present: take the general (Request-based) path.
        self.steered = b"x-mockgen-outcome" in headers or b"x-mockgen-delay" in headers or b"x-mockgen-fault" in headers


_SUBMITTED = dumps({"code": 200, "msg": Msg.SUBMITTED, "data": {"task_id": "", "request_id": "", "credits": 0}})
_SUBMITTED_HEAD = _SUBMITTED[: _SUBMITTED.index(b'""')].decode()  # '{"code":200,...,"data":{"task_id":'


def submitted(task_id: str, request_id: str, credits: int) -> bytes:
    """The create answer: dumps() of the envelope, built from its known shape (our ids need no escaping)."""
    if not (task_id.isalnum() and request_id.replace("_", "").isalnum() and type(credits) is int):
        data = {"task_id": task_id, "request_id": request_id, "credits": credits}
        return dumps({"code": 200, "msg": Msg.SUBMITTED, "data": data})
    return f'{_SUBMITTED_HEAD}"{task_id}","request_id":"{request_id}","credits":{credits}}}}}'.encode()


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def polled(data: dict[str, Any]) -> bytes:
    """The poll answer: dumps() of the envelope around ``task_data``, built from its known shape
    (the C string encoder does each string's escaping). Anything unusual goes through dumps()."""
    status, credits, created = data["task_status"], data["credits"], data["created_at"]
    if len(data) == len(POLL_KEYS) and type(status) is type(credits) is type(created) is int:
        try:
            return (
                f'{{"code":200,"msg":"ok","data":{{"task_id":{encode_basestring(data["task_id"])},'
                f'"task_status":{status},"task_type":{encode_basestring(data["task_type"])},'
                f'"model_id":{encode_basestring(data["model_id"])},"image_url":{_text(data["image_url"])},'
                f'"video_url":{_text(data["video_url"])},"audio_url":{_text(data["audio_url"])},'
                f'"credits":{credits},"created_at":{created}}}}}'
            ).encode()
        except (TypeError, UnicodeEncodeError):  # a value of another type, or a lone surrogate
            pass
    return dumps({"code": 200, "msg": Msg.OK, "data": data})


def submitted_compat(task_id: str, request_id: str, credits: int) -> bytes:
    """The create answer in the compat envelope: data's fields also at the top level, after data,
    and ``task_status`` 1 (queued, as the seed's msg says), without which the Rust SDK cannot parse it."""
    body = submitted(task_id, request_id, credits)
    fields = body[body.index(b'"data":') + 8 : -2]  # data's fields, without its braces
    return b'%s,%s,"task_status":1}' % (body[:-1], fields)


_DATA_AT = len(b'{"code":200,"msg":"ok",')  # where '"data":' starts in every poll answer (all ASCII before it)
_OK = dumps(Msg.OK)


def polled_compat(data: dict[str, Any], failure: str | None) -> bytes:
    """The poll answer in the compat envelope: the contract's keys of ``data`` also at the top level,
    after data, and for a failed task (status 4) ``failure`` (its failure message) as the msg. A rule's
    extra fields stay under data only, so that none can replace code, msg or data."""
    body = polled(data)
    if len(data) == len(POLL_KEYS):
        fields = body[_DATA_AT + 8 : -2]
    else:
        fields = dumps({k: data[k] for k in POLL_KEYS})[1:-1]
    msg = dumps(failure or Msg.GENERATION_FAILED) if data["task_status"] == FAILED else _OK
    return b'{"code":200,"msg":%s,%s,%s}' % (msg, body[_DATA_AT:-1], fields)


async def _send_json(send: Send, body: bytes, status: int = 200, fault: bytes | None = None) -> int:
    """Send ``body`` as Starlette's Response(body, status, media_type="application/json") would,
    with X-Mockgen-Fault when a latency fault was injected; returns the status, for the journal."""
    headers = [(b"content-length", str(len(body)).encode()), JSON_HEADER]
    if status == 503:  # the shared store is away (STORE_DOWN): as app.store_unavailable says it
        headers.append((b"retry-after", b"1"))
    if fault is not None:
        headers.append((b"x-mockgen-fault", fault))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_error(
    scope: Scope, receive: Receive, send: Send, backend: Backend, exc: ApiError, fault: Fault | None = None
) -> int:
    note_scope(scope, error=exc.msg)
    body = dumps({"code": exc.code, "msg": exc.msg, "data": None})
    return await _answer(scope, receive, send, backend, fault, body, exc.status)


async def _fault(
    scope: Scope,
    receive: Receive,
    send: Send,
    backend: Backend,
    route: str,
    account: Any,
    req: Submit | Probe | None = None,
) -> tuple[Fault | None, int | None]:
    """The fault injected into this request (header first, then the scenario's), if any, and the
    status it answered with. One that answers the request does so here; one that only delays, or
    loses the answer after the request is handled, comes back with None for the answer to carry out."""
    request = Request(scope, receive)
    fault = await find_fault(request, backend, route, account, req)
    if fault is not None:
        response = await fault_response(request, backend, fault, account)
        if response is not None:
            await response(scope, receive, send)
            return fault, response.status_code
    return fault, None


def _read_create(backend: Backend, raw: bytes) -> tuple[Submit | Probe, ApiError | None]:
    """The create request, or, when it is refused, what faults can read of it and why it is."""
    try:
        body = parse_json(raw)
    except ValueError as exc:
        return NO_PROBE, ApiError(Msg.NOT_JSON.format(detail=exc))
    try:
        return backend.validate(body), None
    except ApiError as exc:
        return backend.probe(body), exc


async def _answer(
    scope: Scope, receive: Receive, send: Send, backend: Backend, fault: Fault | None, body: bytes, status: int = 200
) -> int:
    """Send the answer, or lose it when the fault says so; returns the status the client saw."""
    if fault is None:
        return await _send_json(send, body, status)
    if fault.lose_answer is None:
        return await _send_json(send, body, status, fault.name.encode("latin-1", "replace"))
    response = lost_response(backend, fault)
    await response(scope, receive, send)
    return response.status_code


class CreateTask:
    """POST /api/v1/tasks/create"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, bytes]:
        """Answer the request; returns what the journal records: the status sent (0 when the
        client left before an answer) and the body read."""
        backend: Backend = scope["app"].backend
        incoming = Incoming(scope)
        raw = b""
        fault = None
        try:
            if incoming.host not in (hosts := scope["app"].hosts).ok:  # the guard's Host check, in one lookup
                hosts.check(incoming.host, scope)
            # Faults come from an X-Mockgen-Fault header or the scenario; with neither, skip building a Request.
            if incoming.steered or backend.has_faults:
                account = await backend.authenticate(incoming.authorization)
                world = backend.world  # the world may be replaced while the body or a fault's delay is awaited
                raw = await receive_body(receive, incoming.content_length)
                # Faults first, then validation, as behind a gateway: a create that will be refused
                # is delayed, throttled or failed (and counted) like any other.
                req, refused = _read_create(backend, raw)
                fault, answered = await _fault(scope, receive, send, backend, "create", account, req)
                if answered is not None:
                    return answered, raw
                steer = steering(Request(scope, receive)) if incoming.steered else NO_STEERING
                if refused is not None:
                    raise refused
                lost = fault.name if fault is not None and fault.lose_answer is not None else None
                task = await backend.submit(account, req, steer, lost, world)
            else:  # the hot path: the key's form checked, the body read, then the store (Backend.create)
                key = backend.key_of(incoming.authorization)
                world = backend.world
                try:
                    raw = await receive_body(receive, incoming.content_length)
                    body = parse_json(raw)
                except (BodyTooLarge, ValueError) as exc:
                    await backend.account_of(key)  # an unknown key is told so first, as on every route
                    if isinstance(exc, BodyTooLarge):
                        raise
                    raise ApiError(Msg.NOT_JSON.format(detail=exc)) from None
                task = await backend.create(key, body, world)  # (create validates it)
        except ApiError as exc:
            # A refused create loses its answer too: the fault is the gateway's, not the service's.
            status = await _send_error(scope, receive, send, backend, exc, fault)
            return status, exc.head if isinstance(exc, BodyTooLarge) else raw
        except ClientDisconnect:
            return 0, raw  # the client left mid-body: there is no one to answer
        except StoreUnavailable:
            return await _send_error(scope, receive, send, backend, STORE_DOWN, fault), raw
        note_scope(scope, task_id=task.task_id)
        render = submitted_compat if backend.compat else submitted
        created = render(task.task_id, task.request_id, task.credits)
        if fault is None:  # the hot path: no coroutine more than it needs
            return await _send_json(send, created), raw
        return await _answer(scope, receive, send, backend, fault, created), raw


class GetTask:
    """GET /api/v1/tasks/{task_id}"""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> tuple[int, bytes]:
        """Answer the request; returns the status sent and the body read (none), for the journal."""
        backend: Backend = scope["app"].backend
        incoming = Incoming(scope)
        fault = None
        try:
            if incoming.host not in (hosts := scope["app"].hosts).ok:  # the guard's Host check, in one lookup
                hosts.check(incoming.host, scope)
            task_id = scope["path_params"]["task_id"]
            if incoming.steered or backend.has_faults:
                account = await backend.authenticate(incoming.authorization)
                fault, answered = await _fault(scope, receive, send, backend, "query", account)
                if answered is not None:
                    return answered, b""
                task = await backend.query(account, task_id)
            else:  # the hot path: one store step (Backend.poll)
                task = await backend.poll(backend.key_of(incoming.authorization), task_id)
        except ApiError as exc:
            return await _send_error(scope, receive, send, backend, exc, fault), b""
        except StoreUnavailable:
            return await _send_error(scope, receive, send, backend, STORE_DOWN, fault), b""
        note_scope(scope, task_id=task.task_id)
        data = task_data(backend, task, _base_url(scope, incoming.host))
        body = polled_compat(data, task.message or task.failure_message) if backend.compat else polled(data)
        if fault is None:  # the hot path: no coroutine more than it needs
            return await _send_json(send, body), b""
        return await _answer(scope, receive, send, backend, fault, body), b""


routes = [
    Route(CREATE_PATH, CreateTask(), methods=["POST"], name="create_task"),
    Route(QUERY_PATH, GetTask(), methods=["GET"], name="get_task"),
]
