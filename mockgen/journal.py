"""The request journal: a bounded record of what clients sent and got, with waiting for arrivals."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import deque
from collections.abc import Callable
from typing import Any, overload

Entry = dict[str, Any]
Headers = tuple[tuple[bytes, bytes | str], ...]  # a request's headers as the journal keeps them


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


def mask_headers(raw: Any) -> tuple[Headers, KeyId | None]:
    """Request headers with every key masked (in Authorization or anywhere else), and the key's ``KeyId``."""
    key = None
    headers: list[tuple[bytes, bytes | str]] = []
    for name, value in raw:
        if name == b"authorization":
            shown, key = mask_authorization(value)
            headers.append((name, shown))
        else:
            headers.append((name, scrub(value)))  # a key sent in another header is masked too
    return tuple(headers), key


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


def scrub_notes(notes: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's notes for the journal with any key in them masked: an ``error`` may quote what the
    client sent (the path's task id); the other notes are the server's own (task ids, fault names)."""
    if not notes or (error := notes.get("error")) is None or (masked := scrub(error)) is error:
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


class Journal:
    """Newest last; bounded (the oldest entries go first); waiters are woken when an entry arrives."""

    def __init__(self, limit: int = 10_000) -> None:
        self._items: deque[tuple[int, Record | Entry]] = deque(maxlen=limit)
        self.seq = 0
        self._waiters: list[tuple[Callable[[Entry], bool], bytes | None, int, asyncio.Future[None]]] = []

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
            self._wake(self.seq, entry)

    @staticmethod
    def _render(seq: int, item: Record | Entry) -> Entry:
        entry = render(item) if isinstance(item, tuple) else dict(item)
        entry["id"] = seq
        return entry

    @staticmethod
    def _sent_by(item: Record | Entry, digest: bytes | None) -> bool:
        """Whether ``item`` came with the key of this digest (any item, when there is no digest)."""
        if digest is None:
            return True
        key = item[5] if isinstance(item, tuple) else item.get("key_id")
        return key is not None and (key[1] if isinstance(key, tuple) else key) == digest

    @property
    def entries(self) -> list[Entry]:
        """Every entry, oldest first."""
        return [self._render(seq, item) for seq, item in self._items]

    def _wake(self, seq: int, item: Record | Entry) -> None:
        entry = None
        remaining = []
        for pred, digest, count, fut in self._waiters:
            if fut.done():
                continue
            if self._sent_by(item, digest):
                entry = entry or self._render(seq, item)
                if pred(entry):
                    count -= 1
            if count <= 0:
                fut.set_result(None)
            else:
                remaining.append((pred, digest, count, fut))
        self._waiters = remaining

    def clear(self) -> None:
        self._items.clear()

    def select(self, pred: Callable[[Entry], bool], key: str | None = None) -> list[Entry]:
        """The entries matching ``pred``, oldest first; with ``key``, only those sent with exactly that key."""
        digest = key_digest(key) if key is not None else None
        rendered = (self._render(seq, item) for seq, item in self._items if self._sent_by(item, digest))
        return [e for e in rendered if pred(e)]

    async def wait_for(self, pred: Callable[[Entry], bool], count: int, timeout: float, key: str | None = None) -> bool:
        """Wait until ``count`` entries matching ``pred`` (and ``key``) are in the journal; False on timeout."""
        missing = count - len(self.select(pred, key))
        if missing <= 0:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, key_digest(key) if key is not None else None, missing, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
