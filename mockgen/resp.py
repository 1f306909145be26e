"""A small pipelined RESP2 client: RedisStore's steps on one connection, many in flight at once.

Why: a step through redis-py's asyncio client costs about 100-140 us of CPU on the benchmark machine
(its pool, retry wrapper, stream writer and encoder, per command), a command on a bare asyncio Protocol
12-15 us, and 6 us with 32 in flight (benchmarks/README.md, Redis). A request makes several steps, so
this is most of what a request on Redis costs. Here each step is one command written to a shared
connection (the writes of one event-loop turn go out in one send) and answered in order: Redis
answers a connection's commands in the order they came, so the replies are matched first in, first out.

Failure, as RedisStore promises: connecting has ``connect_timeout``; a step's deadline is the caller's
(``asyncio.timeout``). A step abandoned at its deadline leaves its reply to be read and dropped, so
the connection stays in step; but when nothing at all has come back for ``stall`` seconds while steps
wait, the connection is given up (Redis frozen, or the network lost) and its waiting steps fail with
TimeoutError, not retried (they may have run). A connection that the server or the OS breaks (Redis
restarted) fails its waiting steps with ConnectionError; ``call`` retries such a step once on a new
connection, as redis-py's retry did. Error replies become redis-py's exception classes, so callers
read them as they did.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url

__all__ = ["RespClient"]

_CRLF = b"\r\n"


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


class _Error:
    """An error reply (kept apart from a string reply until it is raised)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _encode(value: Any) -> bytes:
    """An argument as redis-py sends it: bytes as they are, text as UTF-8, numbers as their repr."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    raise rx.DataError(f"cannot send {type(value).__name__} to Redis: {value!r}")


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n%b" % (len(args), _items(args))


def _items(args: Sequence[Any]) -> bytes:
    """Arguments as RESP bulk strings, one after the other."""
    parts = []
    for arg in args:
        data = _encode(arg)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """The reply starting at ``pos`` and where the next one starts (_Incomplete: not all here yet)."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _Incomplete
        return buf[end + 2 : stop].decode("utf-8", "surrogatepass"), stop + 2
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        items = []
        at = end + 2
        for _ in range(n):
            item, at = _parse(buf, at)
            items.append(item)
        return items, at
    if kind == 43:  # + simple string
        return buf[pos + 1 : end].decode("utf-8", "surrogatepass"), end + 2
    if kind == 45:  # - error
        return _Error(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    raise rx.InvalidResponse(f"Redis sent a reply of unknown kind {bytes([kind])!r}")


class _Connection(asyncio.Protocol):
    """One connection: commands written in order, replies handed to their waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        self.broken: Exception | None = None  # why it can no longer be used
        self.progress = 0.0  # when a reply last came (or the first waiter of an idle connection was sent)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.broken is None:
            self.broken = rx.ConnectionError(f"Redis closed the connection ({exc or 'end of stream'})")
        waiters, self.waiters = self.waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(self.broken)

    def data_received(self, data: bytes) -> None:
        # Parsed from bytes (a third faster to slice than a bytearray): the data itself when nothing was
        # left over, as is usual (a reply comes whole); else what was left with the data after it.
        if self.buffer:
            self.buffer += data
            buf = bytes(self.buffer)
        else:
            buf = data
        pos = 0
        waiters = self.waiters
        try:
            while pos < len(buf):
                reply, pos = _parse(buf, pos)
                self.progress = self.loop.time()
                waiter = waiters.popleft()
                if not waiter.done():  # (done: abandoned at its deadline; its reply is dropped)
                    if isinstance(reply, _Error):
                        waiter.set_exception(BaseParser.parse_error(reply.message))
                    else:
                        waiter.set_result(reply)
        except _Incomplete:
            pass
        except (rx.InvalidResponse, ValueError, IndexError) as error:  # out of step: give the connection up
            self.give_up(rx.ConnectionError(f"Redis sent what cannot be read: {error}"))
        if pos < len(buf):
            self.buffer = bytearray(buf[pos:])
        elif self.buffer:
            self.buffer.clear()

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Queue ``command`` (sent at the end of this loop turn, with the others queued in it); its reply."""
        if not self.waiters:
            self.progress = self.loop.time()
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        if not self.outgoing:
            self.loop.call_soon(self._flush)
        self.outgoing.append(command)
        return waiter

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if self.transport is not None and self.broken is None:
            self.transport.write(b"".join(outgoing))

    def give_up(self, why: Exception) -> None:
        """Fail every waiting step with ``why`` and close (a later step connects afresh)."""
        self.broken = why
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(None)


class RespClient:
    """Steps on one shared connection to the Redis of a ``redis://`` or ``unix://`` URL (connected
    when first needed, and again after it broke)."""

    def __init__(self, url: str, connect_timeout: float, stall: float) -> None:
        options = parse_url(url)
        self.host: str = options.get("host", "localhost")
        self.port: int = int(options.get("port", 6379))
        self.path: str | None = options.get("path")
        self.db = int(options.get("db", 0))
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")
        self.connect_timeout = connect_timeout
        self.stall = stall
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._shas: dict[str, str] = {}
        self._starts: dict[tuple[Any, ...], tuple[int, bytes]] = {}  # see script

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            if self.path is not None:
                _, connection = await loop.create_unix_connection(lambda: _Connection(loop), self.path)
            else:
                _, connection = await loop.create_connection(lambda: _Connection(loop), self.host, self.port)
            hello = []
            if self.password is not None:
                auth = (self.username, self.password) if self.username else (self.password,)
                hello.append(connection.send(pack(("AUTH", *auth))))
            if self.db:
                hello.append(connection.send(pack(("SELECT", self.db))))
            try:
                for reply in hello:
                    await reply
            except BaseException:
                connection.give_up(rx.ConnectionError("Redis refused AUTH or SELECT"))
                raise
        return connection

    async def _ready(self) -> _Connection:
        """The connection, connected now if there is none (one connect however many steps ask)."""
        connection = self._connection
        loop = asyncio.get_running_loop()
        if connection is not None and connection.broken is None:
            if connection.loop is loop:
                return connection
            if not connection.loop.is_closed() and connection.transport is not None:
                connection.transport.close()  # (another event loop's, e.g. a test's before this one)
        connecting = self._connecting
        if connecting is None or connecting.get_loop() is not loop:
            connecting = self._connecting = asyncio.ensure_future(self._connect())
        try:
            connection = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        self._connection = connection
        return connection

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (retried once on a connection that broke)."""
        return await self._send(pack(args))

    async def _send(self, command: bytes) -> Any:
        for attempt in (0, 1):
            connection = await self._ready()
            waiter = connection.send(command)
            try:
                return await waiter
            except rx.ConnectionError:
                if attempt or connection.broken is None or isinstance(connection.broken, rx.TimeoutError):
                    raise
            except asyncio.CancelledError:  # the caller's deadline
                if connection.waiters and connection.loop.time() - connection.progress > self.stall:
                    connection.give_up(rx.TimeoutError(f"Redis answered nothing for {self.stall} s"))
                raise
        raise AssertionError("unreachable")

    async def script(self, source: str, keys: Sequence[Any], head: tuple[Any, ...], args: Sequence[Any]) -> Any:
        """EVALSHA of ``source`` (loaded with EVAL when Redis does not have it yet) on ``keys``, with the
        arguments ``head`` then ``args``. The command up to ``args`` is packed once for each script, keys
        and head (a step's keys and first arguments mostly stay the same: packing is much of its cost)."""
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()
        known = (sha, *keys, None, *head)
        start = self._starts.get(known)
        if start is None:
            if len(self._starts) >= 1024:
                self._starts.clear()
            start = self._starts[known] = (3 + len(keys) + len(head), _items(("EVALSHA", sha, len(keys), *keys, *head)))
        count, packed = start
        try:
            return await self._send(b"*%d\r\n%b%b" % (count + len(args), packed, _items(args)))
        except rx.NoScriptError:
            return await self.call("EVAL", source, len(keys), *keys, *head, *args)

    def close(self) -> None:
        """Close the connection (waiting steps fail; a later step connects again)."""
        connection, self._connection = self._connection, None
        if connection is not None and connection.broken is None:
            connection.give_up(rx.ConnectionError("the store was closed"))
