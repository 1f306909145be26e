"""The public contract's routes: create a task, query a task (thin: parse, call backend, render)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .backend import Backend, Msg, Steering
from .errors import ApiError
from .faults import fault_response, header_fault
from .http import api_error, envelope, note, read_json


def base_url(request: Request) -> str:
    public = request.app.state.public_url
    if public:
        return public
    host = request.headers.get("host") or "127.0.0.1"
    return f"{request.url.scheme}://{host}"


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


async def create_task(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        account = backend.authenticate(request.headers.get("authorization"))
        forced = header_fault(request)
        if forced is not None:
            return await fault_response(request, backend, forced, account)
        body = await read_json(request)
        steer = steering(request)
        req = backend.validate(body)
        fault = backend.fault_for("create", account, req)
        if fault is not None:
            response = await fault_response(request, backend, fault, account)
            if response is not None:
                return response
        task = backend.submit(account, body, steer)
    except ApiError as exc:
        return api_error(request, exc)
    note(request, task_id=task.task_id)
    return envelope(
        200, Msg.SUBMITTED, {"task_id": task.task_id, "request_id": task.request_id, "credits": task.credits}
    )


async def get_task(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        account = backend.authenticate(request.headers.get("authorization"))
        forced = header_fault(request)
        if forced is not None:
            return await fault_response(request, backend, forced, account)
        fault = backend.fault_for("query", account)
        if fault is not None:
            response = await fault_response(request, backend, fault, account)
            if response is not None:
                return response
        task = backend.query(account, request.path_params["task_id"])
    except ApiError as exc:
        return api_error(request, exc)
    note(request, task_id=task.task_id)
    return envelope(200, Msg.OK, backend.task_data(task, base_url(request)))


routes = [
    Route("/api/v1/tasks/create", create_task, methods=["POST"]),
    Route("/api/v1/tasks/{task_id}", get_task, methods=["GET"]),
]
