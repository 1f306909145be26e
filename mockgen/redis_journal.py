"""The request journal of a shared store: one bounded Redis stream that every replica writes and reads.

``RedisJournal`` is the in-process ``Journal``'s interface on a stream ``{prefix}:w:journal``. A
request is recorded as in memory (masked and cut by the journal middleware, the header sets masked
once each) and put in a bounded buffer: nothing waits for Redis on the request's way. A flusher task
writes what the buffer holds, in one script call a batch (``_APPEND``): each entry gets the next
number of the world's journal (kept in ``{prefix}:w:jstate``, never given twice) as its id
(``<n>-0``; the ``id`` shown), the stream is cut to its newest ``limit`` entries (``XADD MAXLEN ~``)
and to ``max_bytes`` (each entry carries the bytes appended before it, as in memory, so the script
drops the oldest until the rest fit). When Redis does not answer, the batch is lost, with one log
line for the whole outage (and one when it is back), and the client never sees it.

Readers flush their own replica's buffer first, so a replica sees its own requests at once, and
another replica's within about one round trip of their answer (a read or a clear waits SETTLE first,
for those). ``read`` takes the newest ``limit`` entries (the approximate trim may leave a few more);
``wipe`` deletes the stream; a long-poll (``watch``) scans the stream once, then follows it with
``XREAD BLOCK`` on a pool of its own (at most ``max_waiters`` connections: a parked long-poll never
holds one of the store's).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

import redis.asyncio as aredis
from redis import exceptions as rx

from .journal import (
    ENTRY_BYTES,
    LIMIT,
    MAX_BYTES,
    WAITERS,
    Entry,
    Headers,
    Item,
    Journal,
    Pred,
    Waiter,
    WaitersFull,
    _text,
    ascii_json,
)
from .resp import RespClient
from .store import StoreUnavailable

__all__ = ["BUFFER", "RedisJournal"]

log = logging.getLogger("mockgen")

BUFFER = 10_000  # entries recorded and not yet written, at most (past it the oldest are lost)
BATCH_ENTRIES = 500  # entries written by one script call at most
BATCH_BYTES = 1 << 20  # and their encoded bytes, about
PAGE = 1_000  # entries read by one command
LINGER = 0.002  # seconds a busy server's next batch waits for more entries
# Seconds a read or a clear waits first, so that the entries of requests another replica answered
# just before it have been written (each replica writes right after an answer, or LINGER later).
SETTLE = 0.005
STEP_TIMEOUT = 1.5  # seconds for one write or read (as the store's steps)
_CACHED = 256  # encoded (and decoded) header sets remembered

# KEYS: the stream, its state ("<last id given> <bytes ever appended> <past this total, look at the
# oldest>"); ARGV: limit, max bytes, then the batch in two strings (one argument each is far cheaper to
# send than three an entry): "<size> <headers' length> <rest's length> " for each entry, and their texts
# one after the other (ASCII: lengths are bytes). Returns the last id given.
_APPEND = """
local stream, limit, most = KEYS[1], ARGV[1], tonumber(ARGV[2])
local sizes, texts = ARGV[3], ARGV[4]
local seq, total, high = 0, 0, most
local state = redis.call('GET', KEYS[2])
if state then
  local s, t, h = string.match(state, '^(%d+) (%d+) (%d+)$')
  seq, total, high = tonumber(s), tonumber(t), tonumber(h)
end
local at = 1
for size, h, e in string.gmatch(sizes, '(%d+) (%d+) (%d+) ') do
  seq = seq + 1
  local rest = at + tonumber(h)
  at = rest + tonumber(e)
  redis.call('XADD', stream, 'MAXLEN', '~', limit, string.format('%d-0', seq), 'm', string.format('%d', total),
             'h', string.sub(texts, rest - tonumber(h), rest - 1), 'e', string.sub(texts, rest, at - 1))
  total = total + tonumber(size)
end
-- The bytes held are the total less the oldest entry's mark: past max bytes, the oldest go. As in
-- memory, the oldest is looked at only past 'high' (its mark plus max bytes when last looked at: the
-- entries MAXLEN drops unseen only ever raise the real one).
if total > high then
  local floor = total - most
  high = total + most  -- (none left)
  local from = '-'
  while true do
    local page = redis.call('XRANGE', stream, from, '+', 'COUNT', 100)
    if #page == 0 then redis.call('DEL', stream); break end
    local kept = nil
    for _, e in ipairs(page) do
      if tonumber(e[2][2]) >= floor then kept = e; break end
    end
    if kept then
      if from ~= '-' or kept ~= page[1] then redis.call('XTRIM', stream, 'MINID', kept[1]) end
      high = tonumber(kept[2][2]) + most
      break
    end
    from = '(' .. page[#page][1]
  end
end
redis.call('SET', KEYS[2], string.format('%d %d %d', seq, total, high))
return seq
"""
# KEYS: the stream; ARGV: the newest id wanted ('+', or '(<id>' for those before it), how many. A page,
# newest first, as two strings: "<id> <headers' length> <rest's length>" for each entry, and their
# texts one after the other. (redis-py parses each string of a reply in Python: 7 an entry would make
# reading a full journal ten times slower.)
_PAGE = """
local heads, texts = {}, {}
for i, e in ipairs(redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', ARGV[2])) do
  local f = e[2]  -- m, its mark, h, the headers, e, the rest
  heads[i] = e[1] .. ' ' .. #f[4] .. ' ' .. #f[6]
  texts[#texts + 1] = f[4]
  texts[#texts + 1] = f[6]
end
return {table.concat(heads, ' '), table.concat(texts)}
"""
_json = ascii_json  # JSON as the stream keeps it: compact, ASCII (its lengths are bytes), anything odd as its str


class StreamWaiter(Waiter):
    """A long-poll on the shared journal: it keeps the first WAIT_ENTRIES entries it found, rendered
    (another replica may have trimmed them from the stream by the time it answers)."""

    __slots__ = ("journal", "entries")

    def __init__(self, journal: RedisJournal, pred: Pred, wanted: int) -> None:
        super().__init__(pred, wanted)
        self.journal = journal
        self.entries: list[Entry] = []

    def show(self, seq: int, item: Item) -> None:
        """``see`` the entry, keeping it rendered if it is one of the first it found."""
        self.see(seq, item)
        if len(self.ids) > len(self.entries):
            self.entries.append(RedisJournal._render(seq, item))

    async def wait(self, timeout: float) -> bool:
        return await self.journal._follow(self, timeout)


class RedisJournal(Journal):
    """The journal every replica of one world shares, in Redis (see the module's docstring).

    ``client`` is the store's (decoded responses); ``url`` and ``options`` make the long-polls' pool.
    ``append`` is as cheap as in memory; reading is async: ``read``, ``wipe`` and ``watch``'s waiters.
    """

    def __init__(
        self,
        client: aredis.Redis,
        url: str,
        root: str,
        limit: int = LIMIT,
        max_bytes: int = MAX_BYTES,
        max_waiters: int = WAITERS,
        *,
        options: dict[str, Any],
        fast: RespClient | None = None,
    ) -> None:
        super().__init__(limit, max_bytes, max_waiters)
        self.url = url
        self._client = client
        self._options = options
        self._stream = root + "journal"
        self._keys = [self._stream, root + "jstate"]
        self._script = client.register_script(_APPEND)
        self._fast = fast  # the store's pipelined connection, for the batches (resp.py), if it has one
        self._page = client.register_script(_PAGE)
        self._buffer: deque[tuple[Item, int]] = deque(maxlen=BUFFER)
        self._flusher: asyncio.Task[None] | None = None
        self._blocking: aredis.Redis | None = None  # the long-polls' client, made when first needed
        self._lost = 0  # entries lost since Redis last took a batch
        self._down = False  # whether the outage was logged
        self._encoded: dict[int, tuple[Headers, str]] = {}  # header sets by id (they are shared): as JSON
        self._decoded: dict[str, Headers] = {}

    # --- writing ----------------------------------------------------------------------------------

    def append(self, entry: Item, size: int = ENTRY_BYTES) -> None:
        """Keep the entry for the flusher (started if it is not running): no I/O here."""
        buffer = self._buffer
        if len(buffer) == BUFFER:
            self._lost += 1  # the oldest goes (Redis has been slow for 10,000 requests)
        buffer.append((entry, size))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_all())

    async def _flush_all(self) -> None:
        """Write what the buffer holds: at once when it comes alone; when more came while a batch was
        being written (a busy server), after LINGER, so that a batch carries many entries."""
        try:
            while self._buffer:
                await self._write_batch()
                if self._buffer:
                    await asyncio.sleep(LINGER)
        finally:
            self._flusher = None

    async def _write_batch(self) -> None:
        buffer = self._buffer
        sizes: list[str] = []
        texts: list[str] = []
        count = length = 0
        while buffer and count < BATCH_ENTRIES and length < BATCH_BYTES:
            item, size = buffer.popleft()
            headers, entry = self._encode(item)
            sizes.append(f"{size} {len(headers)} {len(entry)} ")
            texts += (headers, entry)
            count += 1
            length += len(headers) + len(entry)
        args: list[str | int] = [self.limit or 0, self.max_bytes, "".join(sizes), "".join(texts)]
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                if self._fast is not None:
                    await self._fast.script(_APPEND, self._keys, (), args)
                else:
                    await self._script(self._keys, args)
        except (rx.RedisError, OSError) as error:
            # What waits goes too: a frozen Redis must not hold a flush (or a shutdown) a timeout a batch.
            self._lost += count + len(buffer)
            buffer.clear()
            if not self._down:
                self._down = True
                log.warning("request journal: Redis does not take entries, they are dropped until it does: %s", error)
            return
        if self._down:
            self._down = False
            log.warning("request journal: Redis takes entries again (%d were lost meanwhile)", self._lost)
        self._lost = 0

    async def flush(self) -> None:
        """Until what this process recorded so far has been written (or dropped)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    def _encode(self, item: Item) -> tuple[str, str]:
        """An entry as the stream keeps it: its header set and the rest, each as JSON."""
        if not isinstance(item, tuple):
            return "", _json(item)
        at, method, path, query, headers, key, body, status, elapsed, notes = item
        cached = self._encoded.get(id(headers))
        if cached is None or cached[0] is not headers:
            if len(self._encoded) >= _CACHED:
                self._encoded.clear()
            shown = [[n.decode("latin-1"), _text(v)] for n, v in headers]
            cached = self._encoded[id(headers)] = (headers, _json(shown))
        masked, digest = key if key else (None, None)
        rest = [
            at, method, path, _text(query), masked, digest.hex() if digest else None, _text(body, "utf-8"),
            status, elapsed, notes or None,
        ]  # fmt: skip
        return cached[1], _json(rest)

    def _decode(self, text: str, rest: str) -> Item:
        """An entry from what the stream keeps: its header set's text and the rest's."""
        entry = json.loads(rest)
        if isinstance(entry, dict):
            return entry
        at, method, path, query, masked, digest, body, status, elapsed, notes = entry
        headers = self._decoded.get(text)
        if headers is None:
            if len(self._decoded) >= _CACHED:
                self._decoded.clear()
            headers = self._decoded[text] = tuple((n.encode("latin-1"), v) for n, v in json.loads(text))
        key = (masked, bytes.fromhex(digest)) if digest is not None else None
        return (at, method, path, query, headers, key, body, status, elapsed, notes)

    # --- reading ----------------------------------------------------------------------------------

    def _unavailable(self, error: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"the Redis store at {self.url} is unavailable: {error}")

    async def _newest(self) -> list[tuple[int, Item]]:
        """The newest ``limit`` entries of every replica, oldest first (this one's flushed first)."""
        await self.flush()
        wanted = self.limit or 0
        found: list[tuple[int, Item]] = []
        top = "+"
        try:
            async with asyncio.timeout(STEP_TIMEOUT * (1 + wanted // PAGE)):
                while len(found) < wanted:
                    count = min(PAGE, wanted - len(found))
                    heads, texts = await self._page([self._stream], [top, count])
                    numbers = heads.split()
                    at = 0
                    for i in range(0, len(numbers), 3):
                        sid, rest = numbers[i], at + int(numbers[i + 1])
                        end = rest + int(numbers[i + 2])
                        found.append((int(sid.partition("-")[0]), self._decode(texts[at:rest], texts[rest:end])))
                        at = end
                    if len(numbers) < 3 * count:
                        break
                    top = "(" + numbers[-3]
        except (rx.RedisError, OSError) as error:
            raise self._unavailable(error) from error
        found.reverse()
        return found

    async def read(self, pred: Pred | None = None) -> list[Entry]:
        """The entries of every replica matching ``pred`` (all: None), oldest first."""
        await asyncio.sleep(SETTLE)
        return [self._render(seq, item) for seq, item in await self._newest() if pred is None or pred(item)]

    async def wipe(self) -> None:
        """Forget every replica's entries (and this one's header sets); long-polls go on waiting."""
        self._buffer.clear()
        self._seen.clear()
        await asyncio.sleep(SETTLE)
        await self.flush()  # a batch under way lands before the stream goes
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                await self._client.delete(self._stream)
        except (rx.RedisError, OSError) as error:
            raise self._unavailable(error) from error

    def watch(self, pred: Pred, count: int) -> Waiter:
        """A long-poll on every replica's entries: its ``wait`` scans the stream, then follows it."""
        if len(self._waiters) >= self.max_waiters:
            raise WaitersFull(self.max_waiters)
        waiter = StreamWaiter(self, pred, count)
        self._waiters.append(waiter)
        return waiter

    def found(self, waiter: Waiter) -> list[Entry]:
        return waiter.entries if isinstance(waiter, StreamWaiter) else []

    async def _follow(self, waiter: StreamWaiter, timeout: float) -> bool:
        """Until ``waiter`` has found enough (True) or ``timeout`` seconds have passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "0-0"  # entries after the scan: XREAD hands out those past this id
        for seq, item in await self._newest():
            waiter.show(seq, item)
            last = f"{seq}-0"
        if self._blocking is None:
            pool = aredis.BlockingConnectionPool.from_url(
                self.url, max_connections=self.max_waiters, timeout=STEP_TIMEOUT, **self._options
            )
            self._blocking = aredis.Redis(connection_pool=pool)
        while not waiter.satisfied:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining + STEP_TIMEOUT):
                    reply: Any = await self._blocking.xread(
                        {self._stream: last}, count=PAGE, block=max(1, int(remaining * 1000))
                    )
            except (rx.RedisError, OSError) as error:
                raise self._unavailable(error) from error
            for _, entries in reply:
                for sid, fields in entries:
                    waiter.show(int(sid.partition("-")[0]), self._decode(fields["h"], fields["e"]))
                    last = sid
        return True

    async def close(self) -> None:
        """Write what is left (or drop it, if Redis does not take it) and close the long-polls' pool."""
        await self.flush()
        if self._blocking is not None:
            await self._blocking.aclose()
            await self._blocking.connection_pool.disconnect()
            self._blocking = None

    # --- what only an in-process journal can answer without waiting ---------------------------------

    def _in_redis(self) -> TypeError:
        return TypeError("a shared journal is in Redis: read it with 'await journal.read()'")

    @property
    def entries(self) -> list[Entry]:
        raise self._in_redis()

    def select(self, pred: Pred) -> list[Entry]:
        raise self._in_redis()

    def __len__(self) -> int:
        raise self._in_redis()

    @property
    def bytes(self) -> int:
        raise self._in_redis()

    def clear(self) -> None:
        raise TypeError("a shared journal is in Redis: clear it with 'await journal.wipe()'")
