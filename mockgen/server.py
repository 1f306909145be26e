"""Serving an app with uvicorn: the port bound before anything is announced, a prompt shutdown."""

from __future__ import annotations

import logging
import socket
from typing import Any

import uvicorn


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


def make_server(app: Any, *, access_log: bool = False, **options: Any) -> Server:
    """A ``Server`` for ``app`` that logs warnings, and uvicorn's access lines if ``access_log``."""
    # ws="none": nothing here speaks WebSocket, and uvicorn's default imports the websockets package
    # at startup (~0.1 s of the 0.5 s budget from start to the first answer).
    options.setdefault("ws", "none")
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, **options)
    if access_log:  # log_level="warning" also silences the access logger, which logs at info
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return Server(config)
