"""The public contract's routes: create a task, query a task (thin: parse, call backend, render)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .backend import Backend, Msg, Steering
from .errors import ApiError
from .faults import injected_fault
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
        body = await read_json(request)
        steer = steering(request)
        req = backend.validate(body)
        faulted = await injected_fault(request, backend, "create", account, req)
        if faulted is not None:
            return faulted
        task = backend.submit(account, req, steer)
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
        faulted = await injected_fault(request, backend, "query", account)
        if faulted is not None:
            return faulted
        task = backend.query(account, request.path_params["task_id"])
    except ApiError as exc:
        return api_error(request, exc)
    note(request, task_id=task.task_id)
    return envelope(200, Msg.OK, backend.task_data(task, base_url(request)))


routes = [
    Route("/api/v1/tasks/create", create_task, methods=["POST"]),
    Route("/api/v1/tasks/{task_id}", get_task, methods=["GET"]),
]
