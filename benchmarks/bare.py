"""The reference: a bare Starlette app whose two routes answer fixed JSON bytes, served like mockgen.

The bytes come from the environment (BENCH_GET_BODY / BENCH_POST_BODY), so the reference sends
exactly what mockgen sent for the same requests. The POST route reads the request body, as any
route taking a JSON body must.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

GET_BODY = os.environ.get("BENCH_GET_BODY", '{"code":200,"msg":"ok","data":null}').encode()
POST_BODY = os.environ.get("BENCH_POST_BODY", '{"code":200,"msg":"ok","data":null}').encode()


async def poll(request: Request) -> Response:
    return Response(GET_BODY, media_type="application/json")


async def create(request: Request) -> Response:
    await request.body()
    return Response(POST_BODY, media_type="application/json")


app = Starlette(
    routes=[
        Route("/api/v1/tasks/create", create, methods=["POST"]),
        Route("/api/v1/tasks/{task_id}", poll, methods=["GET"]),
    ]
)


async def raw(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """A raw ASGI callable answering the same bytes: the floor under any framework."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        more = True
        while more:
            message = await receive()  # type: ignore[operator]
            more = message.get("more_body", False)
        body = POST_BODY
    else:
        body = GET_BODY
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]
