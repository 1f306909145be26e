"""Shared HTTP helpers: JSON bodies with limits, the contract's envelope, journal notes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, NamedTuple, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope

from .errors import ApiError, ControlError

MAX_BODY_BYTES = 1024 * 1024
MAX_STATE_BYTES = 256 * 1024 * 1024  # PUT /_mock/state: a whole world, so that every export loads back
JSON_HEADER = (b"content-type", b"application/json")


def _not_json(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# json.dumps builds a new encoder on every call, which costs more than encoding a small answer;
# this is the same C encoder with the same options, built once (no circular check: answers are trees).
_encode = (
    c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", False, False, True) if c_make_encoder else None
)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON: byte for byte ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))``."""
    if _encode is None:  # pragma: no cover - only without CPython's _json accelerator
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    else:
        text = "".join(_encode(obj, 0))
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A client's string with a lone surrogate ("\ud800" in its JSON) has no UTF-8 form: escape it.
        return json.dumps(obj, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status, headers, media_type="application/json")


class Sliceable(Protocol):
    """What ``Items`` renders from: a list, or anything with a length that slices into items."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> Iterable[Any]: ...


class Items(NamedTuple):
    """A JSON array of ``render(item)`` for each of ``items``, rendered ``CHUNK_ITEMS`` at a time."""

    items: Sliceable
    render: Callable[[Any], Any]


Part = bytes | Items  # a piece of a JSON text: bytes as they are, or an array to render
CHUNK_ITEMS = 100  # items rendered in one go (100 tasks of a state: a few milliseconds)
PAUSE_BYTES = 64 * 1024  # rendered between two turns of the event loop


def _pieces(parts: Iterable[Part]) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, bytes):
            yield part
            continue
        items, render = part
        yield b"["
        for start in range(0, len(items), CHUNK_ITEMS):
            chunk = dumps([render(item) for item in items[start : start + CHUNK_ITEMS]])
            yield chunk[1:-1] if start == 0 else b"," + chunk[1:-1]
        yield b"]"


def _take(pieces: Iterator[bytes]) -> tuple[bytes, bool]:
    """The next PAUSE_BYTES or so of ``pieces``, and whether that was the last of them."""
    taken: list[bytes] = []
    size = 0
    for piece in pieces:
        taken.append(piece)
        size += len(piece)
        if size >= PAUSE_BYTES:
            return b"".join(taken), False
    return b"".join(taken), True


def streamed_json(parts: Iterable[Part], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The JSON text that ``parts`` make, byte for byte ``dumps`` of the same data, never blocking the
    event loop for long: a small answer is one Response, as ``json_response``'s; a big one streams,
    rendered a chunk at a time with a turn of the event loop between chunks, so other clients are
    served meanwhile. ``parts`` must read a snapshot (what they render must not change as they go)."""
    pieces = _pieces(parts)
    first, last = _take(pieces)
    if last:
        return Response(first, status, headers, media_type="application/json")

    async def chunks() -> AsyncIterator[bytes]:
        yield first
        done = False
        while not done:
            await asyncio.sleep(0)  # let the other clients in
            chunk, done = _take(pieces)
            if chunk:
                yield chunk

    return StreamingResponse(chunks(), status, headers, media_type="application/json")


def envelope(code: int, msg: str, data: Any = None, status: int = 200) -> Response:
    """The public contract's envelope: {"code", "msg", "data"}."""
    return json_response({"code": code, "msg": msg, "data": data}, status)


def note(request: Request, **fields: Any) -> None:
    """Leave facts for the journal entry of this request (task_id, error, fault)."""
    request.scope.setdefault("mockgen", {}).update(fields)


def note_scope(scope: Scope, **fields: Any) -> None:
    """``note`` for code that holds the ASGI scope rather than a Request."""
    scope.setdefault("mockgen", {}).update(fields)


def noted_fault(scope: Scope) -> bytes | None:
    """The X-Mockgen-Fault value for a fault noted on this request, if any."""
    notes = scope.get("mockgen")
    fault = notes.get("fault") if notes else None
    return fault.encode("latin-1", "replace") if fault else None


class BodyTooLarge(ApiError):
    """413: the body passed ``limit``; ``head`` is what had arrived by then (for the journal)."""

    def __init__(self, limit: int, head: bytes = b"") -> None:
        super().__init__(f"Request body too large: the limit is {limit} bytes.", code=413, status=413)
        self.head = head


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:  # (str.isdigit takes '²' too)
        raise BodyTooLarge(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_body(receive: Receive, declared: bytes | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """``read_body`` for raw ASGI code, given the Content-Length header (ClientDisconnect if the client left)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, b"".join([*chunks, chunk]))
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup!r}")
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


# Built once: json.loads with options builds a new decoder on every call.
_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
_scan = _decoder.scan_once  # type: ignore[attr-defined]
JSON_SPACE = " \t\n\r"  # JSON's whitespace (str.strip() would take Unicode spaces too)


def parse_json(raw: bytes) -> Any:
    """Decode a JSON body strictly; ValueError says what is wrong, in words a person can act on."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8 (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise ValueError("the body is empty")
    # The common case, a well-formed body, straight through the C scanner (decode() adds two regex
    # matches and a Python frame); anything else goes through decode() for its exact error.
    trimmed = text.strip(JSON_SPACE)
    try:
        obj, end = _scan(trimmed, 0)
        if end == len(trimmed):
            return obj
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's guard against very long integers
            raise ValueError("a number has too many digits") from None
        raise


async def read_control_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """A control API body, read in chunks: ControlError 413 as soon as it is known to pass ``limit``."""
    try:
        return await read_body(request, limit)
    except ApiError as exc:
        raise ControlError(exc.msg, 413) from None


async def read_control_json(request: Request) -> dict[str, Any]:
    """A control API body: a JSON object, or empty (ControlError 400 otherwise)."""
    return control_object(await read_control_body(request))


def control_object(raw: bytes) -> dict[str, Any]:
    """A control API body's JSON object ({} for an empty body; ControlError 400 for anything else)."""
    if not raw or raw.isspace():  # (as raw.strip() would say, without copying a big body)
        return {}
    try:
        body = parse_json(raw)
    except ValueError as exc:
        raise ControlError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError("body must be a JSON object")
    return body
