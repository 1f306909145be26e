"""Serving an app with uvicorn: the port bound before anything is announced, a prompt shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class BindError(OSError):
    """The address cannot be listened on (in use, not this machine's, not a name that resolves)."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port) that uvicorn then listens on and owns."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise BindError(f"cannot listen on {host}:{port}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, which ends the app's long-polls as soon as it starts shutting down.

    uvicorn waits for every open request before it sends the lifespan's shutdown, so a parked
    ``GET /_mock/requests/wait`` would otherwise hold the shutdown for its whole timeout.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self.config.app, "state", None)
        stopping = getattr(state, "shutdown", None)
        if stopping is not None:
            stopping.begin()
        await super().shutdown(sockets)


# Connections and slow clients (README, Limits). With MAX_CONNECTIONS connections open, a request on
# another one is answered 503 at once (uvicorn's plain-text "Service Unavailable"), and closed.
MAX_CONNECTIONS = 1000
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after this (uvicorn's default)
HEAD_SECONDS = 10  # a request line and headers must all arrive within this of their first byte
MAX_HEAD_BYTES = 64 * 1024  # the request line and headers together
BACKLOG = 2048  # connections the kernel queues before they are accepted (it caps this at somaxconn)

_HEAD_TOO_LARGE = json.dumps(
    {"code": 431, "msg": f"Request line and headers too large: the limit is {MAX_HEAD_BYTES} bytes.", "data": None}
).encode()


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the bounds httptools lacks on a request's head.

    httptools (uvicorn's parser when installed, as with uvicorn[standard]) takes a request line and
    headers of any size (an 8 MB header arrives whole), and uvicorn gives a head that trickles in
    no deadline (its keep-alive timer stops at the first byte). Here a head past MAX_HEAD_BYTES is
    answered 431 and the connection closed, and one not complete HEAD_SECONDS after its first byte
    (or a new connection that sends nothing for that long) is closed.
    """

    head_seconds: float = HEAD_SECONDS
    max_head_bytes: int = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: int | None = 0  # bytes of the current request's head so far; None once it is whole
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            super().data_received(data)
            return
        if self._deadline is None:
            self._start_deadline()  # the first byte of a request after a keep-alive pause
        super().data_received(data)
        if self._head is not None:  # still reading the head: what is buffered counts against the bound
            self._head += len(data)
            if self._head > self.max_head_bytes and not self.transport.is_closing():
                self._refuse()

    def on_headers_complete(self) -> None:
        self._head = None
        self._stop_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head = 0
        super().on_message_complete()

    def _refuse(self) -> None:
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_HEAD_TOO_LARGE)
        )
        self.logger.warning("Request head over %d bytes refused.", self.max_head_bytes)
        self.transport.write(head + _HEAD_TOO_LARGE)
        self.transport.close()

    def _start_deadline(self) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(self.head_seconds, self._too_slow)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self._head is not None and not self.transport.is_closing():
            self.transport.close()


def make_server(
    app: Any,
    *,
    access_log: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    head_seconds: float = HEAD_SECONDS,
    **options: Any,
) -> Server:
    """A ``Server`` for ``app`` that logs warnings, and uvicorn's access lines if ``access_log``,
    with the bounds above on connections and slow clients (``max_connections``: uvicorn's
    limit_concurrency)."""
    # ws="none": nothing here speaks WebSocket, and uvicorn's default imports the websockets package
    # at startup (~0.1 s of the 0.5 s budget from start to the first answer).
    options.setdefault("ws", "none")
    protocol: type[BoundedHttpTools] = BoundedHttpTools
    if head_seconds != HEAD_SECONDS:

        class protocol(BoundedHttpTools):  # type: ignore[no-redef]
            pass

        protocol.head_seconds = head_seconds
    options.setdefault("http", protocol)
    # uvicorn refuses a request when the open connections, its own included, reach the limit: + 1
    # so that max_connections connections are served.
    options.setdefault("limit_concurrency", max_connections + 1)
    options.setdefault("timeout_keep_alive", KEEP_ALIVE_SECONDS)
    options.setdefault("h11_max_incomplete_event_size", MAX_HEAD_BYTES)  # (for http="h11": 400 past it)
    options.setdefault("backlog", BACKLOG)
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, **options)
    if access_log:  # log_level="warning" also silences the access logger, which logs at info
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return Server(config)
