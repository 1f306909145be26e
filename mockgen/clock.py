"""Clocks: the real one, and a manual one that moves only when told to."""

from __future__ import annotations

import time
from typing import Literal, Protocol

ClockKind = Literal["real", "manual"]


class Clock(Protocol):
    kind: ClockKind

    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time (Unix seconds)."""

    kind: ClockKind = "real"

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that starts at a given instant and moves only through ``advance``/``set``."""

    kind: ClockKind = "manual"

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        return self._now

    def set(self, instant: float) -> None:
        self._now = float(instant)
