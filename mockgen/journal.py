"""The request journal: a bounded record of what clients sent and got, with waiting for arrivals."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable
from typing import Any

Entry = dict[str, Any]
Headers = tuple[tuple[bytes, bytes | str], ...]  # a request's headers as the journal keeps them


def mask_key(key: str) -> str:
    """Never keep a whole key: 'sk-abcd…wxyz'."""
    return f"{key[:7]}…{key[-4:]}" if len(key) > 12 else "sk-…"


def mask_authorization(value: bytes) -> tuple[str, str | None]:
    """An Authorization header with its key masked ('Bearer sk-abcd…wxyz'), and the masked key."""
    scheme, _, token = value.decode("latin-1").partition(" ")
    token = token.strip()
    key = mask_key(token) if token.startswith("sk-") else None
    return f"{scheme} {key or '***'}", key


def mask_headers(raw: Any) -> tuple[Headers, str | None]:
    """Request headers with every key masked (in Authorization or anywhere else), and the masked key."""
    key = None
    headers: list[tuple[bytes, bytes | str]] = []
    for name, value in raw:
        if name == b"authorization":
            shown, key = mask_authorization(value)
            headers.append((name, shown))
        else:
            headers.append((name, scrub(value)))  # a key sent in another header is masked too
    return tuple(headers), key


KEY_IN_TEXT = re.compile(r"sk-[A-Za-z0-9_-]{8,}")


def scrub(raw: bytes, encoding: str = "latin-1") -> bytes | str:
    """``raw`` unchanged, or decoded with every key-like 'sk-…' in it masked (a key sent anywhere else)."""
    # find(), not `in`: bytes.__contains__ first tries its operand as an int, raising and clearing a
    # TypeError each time (a few microseconds on every request).
    if raw.find(b"sk-") < 0:
        return raw
    return KEY_IN_TEXT.sub(lambda m: mask_key(m.group()), raw.decode(encoding, "replace"))


def _text(value: bytes | str, encoding: str = "latin-1") -> str:
    return value if isinstance(value, str) else value.decode(encoding, "replace")


# One request as recorded on the hot path, raw and compact, rendered into an ``Entry`` when read:
# (at, method, path, query, headers, key, body, status, elapsed, notes). A tuple of strings, bytes,
# numbers and a dict of strings, so the garbage collector stops tracking it after one look: ten
# thousand of these never make the full collections that walk the whole heap come more often.
# It holds no whole key: the Authorization header is masked before it is stored.
Record = tuple[float, str, str, bytes | str, Headers, str | None, bytes | str, int, float, Any]


def render(record: Record) -> Entry:
    at, method, path, query, headers, key, body, status, elapsed, notes = record
    notes = notes or {}
    return {
        "at": at,
        "method": method,
        "path": path,
        "query": _text(query),
        "headers": {n.decode("latin-1"): _text(v) for n, v in headers},
        "key": key,
        "body": _text(body, "utf-8"),
        "status": status,
        "latency_ms": round(elapsed * 1000, 3),
        "task_id": notes.get("task_id"),
        "fault": notes.get("fault"),
        "error": notes.get("error"),
    }


class Journal:
    """Newest last; bounded (the oldest entries go first); waiters are woken when an entry arrives."""

    def __init__(self, limit: int = 10_000) -> None:
        self._items: deque[tuple[int, Record | Entry]] = deque(maxlen=limit)
        self.seq = 0
        self._waiters: list[tuple[Callable[[Entry], bool], int, asyncio.Future[None]]] = []

    @property
    def limit(self) -> int | None:
        return self._items.maxlen

    def __len__(self) -> int:
        return len(self._items)

    def append(self, entry: Record | Entry) -> None:
        """Add a ``Record`` (cheap: rendered only when read) or a ready ``Entry`` dict."""
        self.seq += 1
        self._items.append((self.seq, entry))
        if self._waiters:
            self._wake(self._render(self.seq, entry))

    @staticmethod
    def _render(seq: int, item: Record | Entry) -> Entry:
        entry = render(item) if isinstance(item, tuple) else dict(item)
        entry["id"] = seq
        return entry

    @property
    def entries(self) -> list[Entry]:
        """Every entry, oldest first."""
        return [self._render(seq, item) for seq, item in self._items]

    def _wake(self, entry: Entry) -> None:
        remaining = []
        for pred, count, fut in self._waiters:
            if fut.done():
                continue
            if pred(entry):
                count -= 1
            if count <= 0:
                fut.set_result(None)
            else:
                remaining.append((pred, count, fut))
        self._waiters = remaining

    def clear(self) -> None:
        self._items.clear()

    def select(self, pred: Callable[[Entry], bool]) -> list[Entry]:
        return [e for e in self.entries if pred(e)]

    async def wait_for(self, pred: Callable[[Entry], bool], count: int, timeout: float) -> bool:
        """Wait until ``count`` entries matching ``pred`` are in the journal; False on timeout."""
        missing = count - len(self.select(pred))
        if missing <= 0:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, missing, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
