"""Injected faults rendered as HTTP: latency, error statuses, rate limits, truncated, cut or lost answers."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .backend import Backend, Msg, Probe, Submit
from .errors import ApiError
from .http import dumps, json_response, note
from .models import Account
from .scenario import FAULT_STATUSES, LOST_STATUSES, Fault, Match

FAULT_TEXT = {
    400: "Bad request (injected by mockgen).",
    403: "Forbidden (injected by mockgen).",
    408: "Request timeout (injected by mockgen).",
    409: "Conflict (injected by mockgen).",
    429: "Too many requests: slow down and retry after the time in Retry-After.",
    500: "Internal server error (injected by mockgen).",
    502: "Bad gateway (injected by mockgen).",
    503: "Service unavailable (injected by mockgen): retry later.",
    504: "Gateway timeout (injected by mockgen).",
}


def header_fault(request: Request) -> Fault | None:
    """A fault asked for by the client itself with ``X-Mockgen-Fault``: a status, ``truncate``,
    ``close``, or ``lost`` / ``lost-<5xx>`` (handled as usual, then the answer is lost)."""
    value = request.headers.get("x-mockgen-fault")
    if value is None:
        return None
    value = value.strip().lower()
    name = f"header:{value}"
    if (status := _status(value)) in FAULT_STATUSES:
        return Fault(name=name, match=Match(), status=status)
    if value in ("truncate", "close"):
        return Fault(name=name, match=Match(), truncate=value == "truncate", close=value == "close")
    if value == "lost":
        return Fault(name=name, match=Match(), lose_answer="close")
    if value.startswith("lost-") and (lost := _status(value[5:])) in LOST_STATUSES:
        return Fault(name=name, match=Match(), lose_answer=lost)
    lost_ones = ", ".join(f"'lost-{s}'" for s in sorted(LOST_STATUSES))
    expected = f"one of {sorted(FAULT_STATUSES)}, 'truncate', 'close', 'lost', {lost_ones}"
    raise ApiError(Msg.BAD_STEER.format(header="X-Mockgen-Fault", expected=expected, value=value))


def _status(text: str) -> int | None:
    # isascii(): '²' is a digit to str.isdigit() but not to int().
    return int(text) if text.isascii() and text.isdigit() and len(text) == 3 else None


async def find_fault(
    request: Request, backend: Backend, route: str, account: Account | None, req: Submit | Probe | None = None
) -> Fault | None:
    """The fault injected into this request: its X-Mockgen-Fault header first, then the scenario's."""
    return header_fault(request) or await backend.fault_for(route, account, req)


async def fault_response(request: Request, backend: Backend, fault: Fault, account: Account | None) -> Response | None:
    """The response a fault gives, or None when the request goes on: after a latency, or to be
    handled before its answer is lost (``lost_response``)."""
    note(request, fault=fault.name)
    if fault.latency is not None:
        await asyncio.sleep(await backend.latency(fault))
    headers = {"x-mockgen-fault": fault.name}
    status = 429 if fault.rate_limit is not None else fault.status
    if status is not None:
        return _status_response(backend, fault, account, status, headers)
    if fault.truncate:
        whole = dumps({"code": 200, "msg": "ok", "data": {"task_id": "", "task_status": 1}})
        return Response(whole[: len(whole) // 2], 200, headers, media_type="application/json")
    if fault.close:
        return CutResponse(headers)
    return None


def lost_response(backend: Backend, fault: Fault) -> Response:
    """What the client gets instead of the answer of a request that was handled: a cut connection,
    or the fault's 5xx (as a gateway that lost the service's answer sends)."""
    headers = {"x-mockgen-fault": fault.name}
    if fault.lose_answer == "close" or fault.lose_answer is None:
        return CutResponse(headers)
    return _status_response(backend, fault, None, fault.lose_answer, headers)


def _status_response(
    backend: Backend, fault: Fault, account: Account | None, status: int, headers: dict[str, str]
) -> Response:
    if status in (429, 503):
        headers["retry-after"] = str(backend.retry_after(fault, account))
    body = fault.body if fault.body is not None else {"code": status, "msg": FAULT_TEXT[status], "data": None}
    if isinstance(body, str):
        return Response(body, status, headers, media_type="text/plain")
    return json_response(body, status, headers)


class CutResponse(Response):
    """Promises a body, sends part of it, then stops: uvicorn closes the connection mid-answer."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__(b"", 200, headers, media_type="application/json")
        self.headers["content-length"] = "64"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b'{"code":200,', "more_body": True})
