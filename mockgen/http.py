"""Shared HTTP helpers: JSON bodies with limits, the contract's envelope, journal notes."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError, ControlError

MAX_BODY_BYTES = 1024 * 1024


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status, headers, media_type="application/json")


def envelope(code: int, msg: str, data: Any = None, status: int = 200) -> Response:
    """The public contract's envelope: {"code", "msg", "data"}."""
    return json_response({"code": code, "msg": msg, "data": data}, status)


def note(request: Request, **fields: Any) -> None:
    """Leave facts for the journal entry of this request (task_id, error, fault)."""
    request.scope.setdefault("mockgen", {}).update(fields)


def api_error(request: Request, exc: ApiError) -> Response:
    note(request, error=exc.msg)
    return envelope(exc.code, exc.msg, None, exc.status)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit``."""
    too_big = ApiError(f"Request body too large: the limit is {limit} bytes.", code=413, status=413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup!r}")
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body strictly; ValueError says what is wrong, in words a person can act on."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8 (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise ValueError("the body is empty")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


async def read_json(request: Request) -> Any:
    """The request's JSON body for the public contract (ApiError code 0 / 413 on trouble)."""
    from .backend import Msg

    raw = await read_body(request)
    try:
        return parse_json(raw)
    except ValueError as exc:
        raise ApiError(Msg.NOT_JSON.format(detail=exc)) from None


async def read_control_json(request: Request) -> dict[str, Any]:
    """A control API body: a JSON object, or empty (ControlError 400 otherwise)."""
    try:
        raw = await read_body(request)
    except ApiError as exc:
        raise ControlError(exc.msg, 413) from None
    if not raw.strip():
        return {}
    try:
        body = parse_json(raw)
    except ValueError as exc:
        raise ControlError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError("body must be a JSON object")
    return body
