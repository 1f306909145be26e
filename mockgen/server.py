"""Serving an app with uvicorn: the port bound before anything is announced, a prompt shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import multiprocess


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
    """uvicorn's server, which ends the app's long-polls as soon as it starts shutting down, and
    closes the connections whose request head is overdue (``BoundedHttpTools``).

    uvicorn waits for every open request before it sends the lifespan's shutdown, so a parked
    ``GET /_mock/requests/wait`` would otherwise hold the shutdown for its whole timeout.
    """

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # once a second, as uvicorn refreshes its Date header
            now = asyncio.get_running_loop().time()
            for connection in list(self.server_state.connections):
                if isinstance(connection, BoundedHttpTools):
                    connection.close_if_late(now)
        return await super().on_tick(counter)

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
MAX_HEAD_BYTES = 64 * 1024  # the request line and headers together, while incomplete (so: plus one read)
BACKLOG = 2048  # connections the kernel queues before they are accepted (it caps this at somaxconn)

_HEAD_TOO_LARGE = json.dumps(
    {"code": 431, "msg": f"Request line and headers too large: the limit is {MAX_HEAD_BYTES} bytes.", "data": None}
).encode()


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the bounds httptools lacks on a request's head.

    httptools (uvicorn's parser when installed, as with uvicorn[standard]) takes a request line and
    headers of any size (an 8 MB header arrives whole), and uvicorn gives a head that trickles in
    no deadline (its keep-alive timer stops at the first byte). Here a head still incomplete past
    ``max_head_bytes`` is answered 431 and the connection closed (so httptools holds at most that
    and one read; a head that arrives whole in one read is answered), and ``Server`` closes, once a second, a connection
    whose head has not all arrived ``head_seconds`` after its first byte (or after connecting).
    A head that arrives whole in one read (nearly every request) costs one check, no timer.
    """

    head_seconds: float = HEAD_SECONDS
    max_head_bytes: int = MAX_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_scope: object = None  # the request whose head is being read (its scope)
        self._head = 0  # the bytes of it read so far
        self.head_since = self.loop.time()  # when it began (at first: when the connection was made)

    def data_received(self, data: bytes) -> None:
        HttpToolsProtocol.data_received(self, data)
        scope = self.scope
        if scope is not None and "method" in scope:
            return  # no head under way (uvicorn sets the method once the head is whole): the usual case
        if scope is not self._head_scope:  # a new request's head, not whole in this read
            self._head_scope, self._head, self.head_since = scope, 0, self.loop.time()
        self._head += len(data)  # what httptools holds of it, at most a read past the bound
        if self._head > self.max_head_bytes and not self.transport.is_closing():
            self._refuse()

    def _refuse(self) -> None:
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_HEAD_TOO_LARGE)
        )
        self.logger.warning("Request head over %d bytes refused.", self.max_head_bytes)
        self.transport.write(head + _HEAD_TOO_LARGE)
        self.transport.close()

    def close_if_late(self, now: float) -> None:
        """Close the connection if a head is overdue (``Server`` asks every connection once a second)."""
        scope = self.scope
        if (scope is None or "method" not in scope) and now - self.head_since > self.head_seconds:
            if not self.transport.is_closing():
                self.transport.close()


def make_server(app: Any, **options: Any) -> Server:
    """A ``Server`` for ``app`` (``server_config``)."""
    return Server(server_config(app, **options))


def server_config(
    app: Any,
    *,
    access_log: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    head_seconds: float = HEAD_SECONDS,
    **options: Any,
) -> uvicorn.Config:
    """uvicorn's config for ``app`` that logs warnings, and uvicorn's access lines if ``access_log``,
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
    return config


class WorkerProcess(multiprocess.Process):
    """uvicorn's worker process, serving with our ``Server`` (prompt long-poll shutdown, head deadlines)."""

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = Server(config=self.config)
        return self._server  # type: ignore[return-value]


def run_workers(factory: str, sock: socket.socket, workers: int, **options: Any) -> None:
    """Serve on ``sock`` from ``workers`` processes, each building its app with ``factory`` (an
    import string "module:function"), under uvicorn's supervisor, which restarts a worker that dies."""
    config = server_config(factory, factory=True, workers=workers, **options)
    # uvicorn's supervisor makes its workers from the module's Process (no parameter for it).
    default, multiprocess.Process = multiprocess.Process, WorkerProcess  # type: ignore[misc]
    try:
        multiprocess.Multiprocess(config, sockets=[sock]).run()
    finally:
        multiprocess.Process = default  # type: ignore[misc]
