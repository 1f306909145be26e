"""Clocks: the real one, a manual one that moves only when told to, and the choice between them."""

from __future__ import annotations

import time
from typing import Literal, Protocol

__all__ = ["Clock", "ClockKind", "ManualClock", "SystemClock"]

ClockKind = Literal["real", "manual"]
CLOCK_KINDS: tuple[ClockKind, ...] = ("real", "manual")


class Clock(Protocol):
    """What a world reads its time from (Unix seconds).

    ``kind`` is what ``/_mock/health`` and state exports report; a ``"manual"`` clock is a
    ManualClock (or a subclass), which ``POST /_mock/clock/advance`` moves."""

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


def check_clock(clock: Clock | str | None) -> Clock | str | None:
    """``clock`` if a world can run on it: None (the scenario's), "real", "manual" or a Clock.

    ValueError for another string, TypeError for an object without ``now()`` and a known ``kind``
    (``"manual"`` only for a ManualClock: that is the clock the control API can move)."""
    if clock is None:
        return None
    if isinstance(clock, str):
        if clock not in CLOCK_KINDS:
            raise ValueError(f"clock must be one of {', '.join(CLOCK_KINDS)} or a Clock, not {clock!r}")
        return clock
    kind = getattr(clock, "kind", None)
    if not callable(getattr(clock, "now", None)) or kind not in CLOCK_KINDS:
        raise TypeError(f"a Clock has now() and a kind ('real' or 'manual'); {type(clock).__name__} has not")
    if kind == "manual" and not isinstance(clock, ManualClock):
        raise TypeError(f"{type(clock).__name__} says kind 'manual' but is no ManualClock: subclass ManualClock")
    return clock


def make_clock(choice: Clock | str | None, kind: ClockKind, start: float | None) -> Clock:
    """The clock a world runs on: the Clock given (kept as it is), else a new one of the kind chosen
    ("real" or "manual"), else of the scenario's ``kind``; a new manual clock starts at ``start``."""
    if choice is not None and not isinstance(choice, str):
        return choice
    return ManualClock(start) if (choice or kind) == "manual" else SystemClock()
