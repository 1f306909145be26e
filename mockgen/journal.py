"""The request journal: a bounded record of what clients sent and got, with waiting for arrivals."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

Entry = dict[str, Any]


def mask_key(key: str) -> str:
    """Never keep a whole key: 'sk-abcd…wxyz'."""
    return f"{key[:7]}…{key[-4:]}" if len(key) > 12 else "sk-…"


class Journal:
    """Newest last; bounded; waiters are woken when an entry arrives."""

    def __init__(self, limit: int = 10_000) -> None:
        self.entries: deque[Entry] = deque(maxlen=limit)
        self.seq = 0
        self._waiters: list[tuple[Callable[[Entry], bool], int, asyncio.Future[None]]] = []

    def append(self, entry: Entry) -> None:
        self.seq += 1
        entry["id"] = self.seq
        self.entries.append(entry)
        if self._waiters:
            self._wake(entry)

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
        self.entries.clear()

    def select(self, pred: Callable[[Entry], bool]) -> list[Entry]:
        return [e for e in self.entries if pred(e)]

    async def wait_for(self, pred: Callable[[Entry], bool], count: int, timeout: float) -> bool:
        """Wait until ``count`` entries matching ``pred`` are in the journal; False on timeout."""
        missing = count - sum(1 for e in self.entries if pred(e))
        if missing <= 0:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, missing, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
