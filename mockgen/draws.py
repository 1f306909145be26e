"""Random draws as a function of a world's seed and a number: the same seed and number give the
same draws in any process, so several processes sharing one world (each request numbered by the
Store's sequence) stay as deterministic as one."""

from __future__ import annotations

from hashlib import blake2b
from typing import Protocol

__all__ = ["Draws", "Uniform"]

_FLOAT = 2.0**-53


class Uniform(Protocol):
    """What a scenario's durations and weighted outcomes draw from."""

    def uniform(self, a: float, b: float) -> float: ...


class Draws:
    """The draws of one request: bytes and floats from BLAKE2b of (seed, number, block).

    One hash gives a block of 64 bytes, enough for a submit's ids (24 bytes) and five floats; a
    draw past a block hashes the next. Drawn in order, so the n-th draw is always the same."""

    __slots__ = ("_prefix", "_block", "_pos", "_blocks")

    def __init__(self, seed: int, number: int) -> None:
        self._prefix = b"%d:%d:" % (seed, number)
        self._block = b""
        self._pos = 0
        self._blocks = 0

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes (at most 64)."""
        if self._pos + n > len(self._block):
            self._block = blake2b(self._prefix + b"%d" % self._blocks).digest()
            self._blocks += 1
            self._pos = 0
        start = self._pos
        self._pos = start + n
        return self._block[start : start + n]

    def random(self) -> float:
        """The next float in [0, 1)."""
        return (int.from_bytes(self.bytes(8), "big") >> 11) * _FLOAT

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()
