"""The request journal: a bounded record of what clients sent and got, with waiting for arrivals."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import deque
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, overload

Entry = dict[str, Any]
Headers = tuple[tuple[bytes, bytes | str], ...]  # a request's headers as the journal keeps them

# The bounds (README, Limits). An entry keeps the first PART_BYTES of its path, query, body, error and
# of each header's name and value, and its first ENTRY_HEADERS headers; the journal keeps its newest
# LIMIT entries within MAX_BYTES (sizes counted from the lengths kept, plus ENTRY_BYTES each).
PART_BYTES = 4096
ENTRY_HEADERS = 64
LIMIT = 10_000
MAX_BYTES = 64 * 1024 * 1024
ENTRY_BYTES = 512  # a Record's tuple, numbers and notes, beyond the strings counted by their lengths
HEADER_BYTES = 136  # a header's pair and the two objects in it, beyond their lengths
# Masked before it is cut, within a margin: a key that starts before the cut is still seen whole enough.
KEY_MARGIN = 256
# The header-set cache: at most HEADER_SETS sets of at most HEADER_SET_BYTES as sent (bigger ones are
# masked each time), each with its masked form: so at most ~2 * 256 * 8 KiB = 4 MiB.
HEADER_SETS = 256
HEADER_SET_BYTES = 8192
WAITERS = 64  # long-polls parked at once; past it a 503
WAIT_ENTRIES = 100  # the entries a long-poll's answer lists: the first ones it found (its count: all)


# Compact ASCII JSON, anything not JSON as its str: ``json.dumps(obj, separators=(",", ":"), default=str)``,
# with the C encoder built once (json.dumps builds one a call). How a shared store keeps what it writes
# (ASCII: its lengths are bytes): journal entries, tasks.
_ascii_encoder = c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", False, False, True)


def ascii_json(obj: Any) -> str:
    """``obj`` as compact ASCII JSON (anything not JSON as its str)."""
    return "".join(_ascii_encoder(obj, 0))


def mask_key(key: str) -> str:
    """Never keep a whole key: 'sk-abcd…wxyz'."""
    return f"{key[:7]}…{key[-4:]}" if len(key) > 12 else "sk-…"


def key_digest(key: str) -> bytes:
    """What the journal keeps to find a key's requests exactly (``?key=``) without keeping the key."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


# The journal's ``key``: the key as shown (masked) and its digest, or None when no key was sent.
KeyId = tuple[str, bytes]


def mask_authorization(value: bytes) -> tuple[str, KeyId | None]:
    """An Authorization header with its key masked ('Bearer sk-abcd…wxyz'), and the key's ``KeyId``.

    Whatever the form: any scheme or none, separated by spaces or tabs. Credentials that are not a
    key ('Basic …') are shown as '***'."""
    text = value.decode("latin-1")
    parts = text.split(None, 1)
    if len(parts) == 2:
        scheme, token = (parts[0] if parts[0].isalpha() else "***"), parts[1].strip()
    elif parts and _unescaped(parts[0]).startswith("sk-"):
        scheme, token = "", parts[0]  # a bare key, no scheme
    else:
        return (text if text.isalpha() else "***"), None  # a scheme alone, or credentials of no form we know
    shown = _unescaped(token)
    if not shown.startswith("sk-"):
        return f"{scheme} ***".strip(), None
    key = mask_key(shown)
    return f"{scheme} {key}".strip(), (key, key_digest(token))  # the digest of what was sent, exactly


def mask_headers(raw: Any) -> tuple[Headers, KeyId | None, int]:
    """Request headers as the journal keeps them, their ``KeyId`` and their approximate size in bytes.

    Every key is masked (in Authorization or anywhere else); only the first ENTRY_HEADERS headers are
    kept, each name and value cut to PART_BYTES. The key is found in Authorization wherever it comes.
    """
    key = None
    headers: list[tuple[bytes, bytes | str]] = []
    size = 40
    for name, value in raw:
        shown: bytes | str
        if name == b"authorization":
            # The whole value: the digest is of the key as sent (a cut one would match no key).
            shown, key = mask_authorization(value)
        elif len(headers) >= ENTRY_HEADERS:
            continue
        else:
            shown = scrub(value[: PART_BYTES + KEY_MARGIN])  # a key sent in another header is masked too
        if len(headers) < ENTRY_HEADERS:
            name, shown = name[:PART_BYTES], shown[:PART_BYTES]
            headers.append((name, shown))
            size += HEADER_BYTES + len(name) + len(shown)
    return tuple(headers), key, size


# A key-like 'sk-…' in any form a client may send it: each character as itself, percent-encoded
# ('sk%2D…' in a URL or form) or JSON-escaped ('sk\u002d…'), only those that stand for a key's characters.
_HEX_KEY_CHAR = r"(?:3[0-9]|[46][1-9A-Fa-f]|[57][0-9Aa]|5[Ff]|2[Dd])"  # 0-9 A-Z a-z _ -
_KEY_CHAR = rf"(?:[A-Za-z0-9_-]|%{_HEX_KEY_CHAR}|\\u00{_HEX_KEY_CHAR})"
KEY_IN_TEXT = re.compile(rf"(?:s|%73|\\u0073)(?:k|%6[Bb]|\\u006[Bb])(?:-|%2[Dd]|\\u002[Dd]){_KEY_CHAR}{{8,}}")
_PERCENT, _BACKSLASH = ord("%"), ord("\\")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})|\\u([0-9A-Fa-f]{4})")


def _unescaped(text: str) -> str:
    """``text`` with its percent-encodings and JSON \\u escapes decoded (only when it has some)."""
    if "%" not in text and "\\u" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text)


def _mask_match(m: re.Match[str]) -> str:
    return mask_key(_unescaped(m.group()))


@overload
def scrub(raw: str, encoding: str = ...) -> str: ...
@overload
def scrub(raw: bytes, encoding: str = ...) -> bytes | str: ...
def scrub(raw: bytes | str, encoding: str = "latin-1") -> bytes | str:
    """``raw`` unchanged, or as text with every key-like 'sk-…' in it masked, in whatever form it came."""
    # No regex runs unless one of these appears: every form of a key has 'sk-' as it is, or a '%' or a
    # backslash-u. find(), not `in`, for 'sk-': bytes.__contains__ first tries its operand as an int,
    # raising and clearing a TypeError each time; given an int (a byte), it is a bare memchr, cheaper
    # than a find() call ('sk' alone would send every poll's path, /api/v1/ta-sk-s/..., to the regex).
    if isinstance(raw, bytes):
        if raw.find(b"sk-") < 0 and _PERCENT not in raw and (_BACKSLASH not in raw or raw.find(b"\\u") < 0):
            return raw
        text = raw.decode(encoding, "replace")
    else:
        if raw.find("sk-") < 0 and "%" not in raw and "\\u" not in raw:
            return raw
        text = raw
    masked, found = KEY_IN_TEXT.subn(_mask_match, text)
    return masked if found else raw


@overload
def kept(raw: str, encoding: str = ...) -> str: ...
@overload
def kept(raw: bytes, encoding: str = ...) -> bytes | str: ...
def kept(raw: bytes | str, encoding: str = "latin-1") -> bytes | str:
    """``raw`` as the journal keeps it: ``scrub``bed, and cut to its first PART_BYTES."""
    if len(raw) <= PART_BYTES:
        return scrub(raw, encoding)
    return scrub(raw[: PART_BYTES + KEY_MARGIN], encoding)[:PART_BYTES]


def scrub_notes(notes: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's notes for the journal with any key in them masked and its ``error`` cut to PART_BYTES:
    an ``error`` may quote what the client sent (the path, a task id); the other notes are the server's
    own (task ids, fault names)."""
    if not notes or (error := notes.get("error")) is None or (masked := kept(error)) is error:
        return notes
    return {**notes, "error": masked}


def _text(value: bytes | str, encoding: str = "latin-1") -> str:
    return value if isinstance(value, str) else value.decode(encoding, "replace")


# One request as recorded on the hot path, raw and compact, rendered into an ``Entry`` when read:
# (at, method, path, query, headers, key, body, status, elapsed, notes). A tuple of strings, bytes,
# numbers and a dict of strings, so the garbage collector stops tracking it after one look: ten
# thousand of these never make the full collections that walk the whole heap come more often.
# It holds no whole key: the Authorization header is masked before it is stored.
Record = tuple[float, str, str, bytes | str, Headers, KeyId | None, bytes | str, int, float, Any]
Item = Record | Entry  # what the journal holds: a Record, or a ready Entry dict
Pred = Callable[[Item], bool]  # which items a reader wants, asked of each item as kept (before rendering)


def render(record: Record) -> Entry:
    at, method, path, query, headers, key, body, status, elapsed, notes = record
    notes = notes or {}
    return {
        "at": at,
        "method": method,
        "path": path,
        "query": _text(query),
        "headers": {n.decode("latin-1"): _text(v) for n, v in headers},
        "key": key[0] if key else None,
        "body": _text(body, "utf-8"),
        "status": status,
        "latency_ms": round(elapsed * 1000, 3),
        "task_id": notes.get("task_id"),
        "fault": notes.get("fault"),
        "error": notes.get("error"),
    }


class Filter:
    """Which entries a reader wants: to ``path`` (ending in '*': a prefix), with ``method``, only the near
    misses (``errors``: those with an ``error``), only those sent with exactly ``key`` (found by its digest).

    Asked of each entry as kept, before any rendering: a scan of the journal renders only what it finds.
    """

    __slots__ = ("path", "prefix", "method", "errors", "digest")

    def __init__(
        self, path: str | None = None, method: str | None = None, errors: bool = False, key: str | None = None
    ) -> None:
        self.path = path
        self.prefix = path[:-1] if path is not None and path.endswith("*") else None
        self.method = method
        self.errors = errors
        self.digest = key_digest(key) if key is not None else None

    def __call__(self, item: Item) -> bool:
        method: Any
        path: Any
        if isinstance(item, tuple):
            method, path, key, notes = item[1], item[2], item[5], item[9]
            error = notes.get("error") if notes else None
        else:
            method, path, key, error = item.get("method"), item.get("path"), item.get("key_id"), item.get("error")
        if self.path is not None and path != self.path:
            if self.prefix is None or not isinstance(path, str) or not path.startswith(self.prefix):
                return False
        if self.method is not None and method != self.method:
            return False
        if self.errors and error is None:
            return False
        if self.digest is not None:
            return key is not None and (key[1] if isinstance(key, tuple) else key) == self.digest
        return True


class WaitersFull(Exception):
    """A long-poll refused: ``Journal.max_waiters`` of them are parked already."""


class Waiter:
    """One long-poll: how many entries matching ``pred`` it wants, how many it has found (keeping the
    ids of the first WAIT_ENTRIES), and what it awaits. It is shown each entry once: those in the journal
    when it came, then each new one as it is added."""

    __slots__ = ("pred", "wanted", "found", "ids", "_future")

    def __init__(self, pred: Pred, wanted: int) -> None:
        self.pred = pred
        self.wanted = wanted
        self.found = 0
        self.ids: list[int] = []
        self._future: asyncio.Future[None] | None = None

    @property
    def satisfied(self) -> bool:
        return self.found >= self.wanted

    def see(self, seq: int, item: Item) -> bool:
        """Count ``item`` if it matches; True when the waiter has found enough (it is then woken)."""
        if not self.pred(item):
            return False
        self.found += 1
        if len(self.ids) < WAIT_ENTRIES:
            self.ids.append(seq)
        if self.found < self.wanted:
            return False
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)
        return True

    async def wait(self, timeout: float) -> bool:
        """Until enough entries have been found (True) or ``timeout`` seconds have passed (False)."""
        if self.satisfied:
            return True
        self._future = future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True


class Journal:
    """Newest last; bounded in entries and in bytes (the oldest entries go first); long-polls are shown
    each new entry as it arrives.

    Sizes are counted from the lengths an entry keeps (headers shared by many entries are counted in
    each): an upper bound on what the entries hold, in O(1) per entry. Each entry carries the bytes
    appended before it (a running total), so what the journal holds is the total less the oldest
    entry's mark, however the oldest went: by the deque's own length bound (in C, unseen) or by bytes.
    """

    def __init__(self, limit: int = LIMIT, max_bytes: int = MAX_BYTES, max_waiters: int = WAITERS) -> None:
        # (id, item, bytes appended before it), oldest first; ids consecutive
        self._items: deque[tuple[int, Item, int]] = deque(maxlen=limit)
        self.max_bytes = max_bytes
        self.max_waiters = max_waiters
        self._total = 0  # bytes ever appended
        # Past this total the oldest entries may have to go: the oldest one's mark plus max_bytes, or lower
        # (when the deque dropped entries unseen), and then _trim only moves it up.
        self._high = max_bytes
        self.seq = 0
        self._waiters: list[Waiter] = []
        # Header sets as sent -> as kept (``headers``). It holds whole keys, in memory only, like the
        # accounts do; entries only ever get the masked forms.
        self._seen: dict[tuple[Any, ...], tuple[Headers, KeyId | None, int]] = {}

    @property
    def limit(self) -> int | None:
        return self._items.maxlen

    @property
    def bytes(self) -> int:
        """About how many bytes the entries hold (what ``max_bytes`` bounds)."""
        return self._total - self._items[0][2] if self._items else 0

    @property
    def waiting(self) -> int:
        """How many long-polls are parked."""
        return len(self._waiters)

    @property
    def cached_header_sets(self) -> int:
        return len(self._seen)

    def __len__(self) -> int:
        return len(self._items)

    def headers(self, raw: Any) -> tuple[Headers, KeyId | None, int]:
        """``mask_headers(raw)``, with ENTRY_BYTES in its size (an entry's all but its path, query, body
        and error), each distinct small set of headers masked once and then shared by every entry that
        has it: clients send the same few sets over and over. Sets of more than HEADER_SET_BYTES are not
        kept; at HEADER_SETS sets, the cache starts again."""
        try:
            seen = self._seen.get(as_tuple := tuple(raw))
        except TypeError:  # header pairs as lists (the ASGI spec allows any iterable): no cache
            headers, key, size = mask_headers(raw)
            return headers, key, size + ENTRY_BYTES
        if seen is None:
            headers, key, size = mask_headers(as_tuple)
            seen = headers, key, size + ENTRY_BYTES
            if sum(len(name) + len(value) for name, value in as_tuple) <= HEADER_SET_BYTES:
                if len(self._seen) >= HEADER_SETS:
                    self._seen.clear()
                self._seen[as_tuple] = seen
        return seen

    def append(self, entry: Item, size: int = ENTRY_BYTES) -> None:
        """Add a ``Record`` (cheap: rendered only when read) or a ready ``Entry`` dict, of about ``size`` bytes."""
        self.seq += 1
        self._items.append((self.seq, entry, self._total))
        self._total += size
        if self._total > self._high:
            self._trim()
        if self._waiters:
            self._wake(self.seq, entry)

    def _trim(self) -> None:
        """Drop the oldest entries until the rest hold at most ``max_bytes``."""
        items, total, most = self._items, self._total, self.max_bytes
        while items and total - items[0][2] > most:
            items.popleft()
        self._high = (items[0][2] if items else total) + most

    @staticmethod
    def _render(seq: int, item: Item) -> Entry:
        entry = render(item) if isinstance(item, tuple) else dict(item)
        entry["id"] = seq
        return entry

    @property
    def entries(self) -> list[Entry]:
        """Every entry, oldest first."""
        return [self._render(seq, item) for seq, item, _ in self._items]

    def clear(self) -> None:
        """Forget every entry and every header set seen (parked long-polls go on waiting for new ones)."""
        self._items.clear()
        self._high = self._total + self.max_bytes
        self._seen.clear()

    async def read(self, pred: Pred | None = None) -> list[Entry]:
        """``select`` (every entry: None), awaited as a shared journal must (it reads Redis)."""
        return self.entries if pred is None else self.select(pred)

    async def wipe(self) -> None:
        """``clear``, awaited as a shared journal must (it clears Redis)."""
        self.clear()

    def select(self, pred: Pred) -> list[Entry]:
        """The entries matching ``pred`` (a ``Filter``), oldest first; only those are rendered."""
        return [self._render(seq, item) for seq, item, _ in self._items if pred(item)]

    def watch(self, pred: Pred, count: int) -> Waiter:
        """A long-poll for ``count`` entries matching ``pred``: those in the journal now are counted, in one
        scan, and from then on each new entry alone is shown to it. Unless it has found enough already it
        is parked until ``release``; WaitersFull when ``max_waiters`` are parked already."""
        if len(self._waiters) >= self.max_waiters:
            raise WaitersFull(self.max_waiters)
        waiter = Waiter(pred, count)
        for seq, item, _ in self._items:
            waiter.see(seq, item)
        if not waiter.satisfied:
            self._waiters.append(waiter)
        return waiter

    def release(self, waiter: Waiter) -> None:
        """Unpark ``waiter`` (answered, timed out or cancelled); its slot is free again."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def found(self, waiter: Waiter) -> list[Entry]:
        """The first entries ``waiter`` found (at most WAIT_ENTRIES) that are still in the journal, rendered."""
        items = self._items
        if not items:
            return []
        first, total = items[0][0], len(items)
        shown = []
        for seq in waiter.ids:
            if 0 <= seq - first < total:
                shown.append(self._render(seq, items[seq - first][1]))
        return shown

    def _wake(self, seq: int, item: Item) -> None:
        satisfied = False
        for waiter in self._waiters:
            if waiter.see(seq, item):
                satisfied = True
        if satisfied:  # their slots are free at once, before their answers go out
            self._waiters = [w for w in self._waiters if not w.satisfied]
