"""Injected faults rendered as HTTP: latency, error statuses, rate limits, truncated or cut answers."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .backend import Backend, Msg, Submit
from .errors import ApiError
from .http import dumps, json_response, note
from .models import Account
from .scenario import FAULT_STATUSES, Fault, Match

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
    """A fault asked for by the client itself with ``X-Mockgen-Fault: <status>|truncate|close``."""
    value = request.headers.get("x-mockgen-fault")
    if value is None:
        return None
    value = value.strip().lower()
    if value.isascii() and value.isdigit() and int(value) in FAULT_STATUSES:  # (str.isdigit takes '²' too)
        return Fault(name=f"header:{value}", match=Match(), status=int(value))
    if value in ("truncate", "close"):
        return Fault(name=f"header:{value}", match=Match(), truncate=value == "truncate", close=value == "close")
    expected = f"one of {sorted(FAULT_STATUSES)}, 'truncate' or 'close'"
    raise ApiError(Msg.BAD_STEER.format(header="X-Mockgen-Fault", expected=expected, value=value))


async def injected_fault(
    request: Request, backend: Backend, route: str, account: Account | None, req: Submit | None = None
) -> Response | None:
    """The answer of a fault injected into this request (its header first, then the scenario's), or None."""
    fault = header_fault(request) or backend.fault_for(route, account, req)
    return None if fault is None else await fault_response(request, backend, fault, account)


async def fault_response(request: Request, backend: Backend, fault: Fault, account: Account | None) -> Response | None:
    """The response a fault gives, or None when it only adds latency and the request goes on."""
    note(request, fault=fault.name)
    if fault.latency is not None:
        await asyncio.sleep(fault.latency.sample(backend.rng))
    headers = {"x-mockgen-fault": fault.name}
    status = 429 if fault.rate_limit is not None else fault.status
    if status is not None:
        if status in (429, 503):
            headers["retry-after"] = str(backend.retry_after(fault, account))
        body = fault.body if fault.body is not None else {"code": status, "msg": FAULT_TEXT[status], "data": None}
        if isinstance(body, str):
            return Response(body, status, headers, media_type="text/plain")
        return json_response(body, status, headers)
    if fault.truncate:
        whole = dumps({"code": 200, "msg": "ok", "data": {"task_id": "", "task_status": 1}})
        return Response(whole[: len(whole) // 2], 200, headers, media_type="application/json")
    if fault.close:
        return CutResponse(headers)
    return None


class CutResponse(Response):
    """Promises a body, sends part of it, then stops: uvicorn closes the connection mid-answer."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__(b"", 200, headers, media_type="application/json")
        self.headers["content-length"] = "64"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b'{"code":200,', "more_body": True})
