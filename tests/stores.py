"""The Store implementations the suite runs on, and how to make an empty one of each.

A kind of store is one line in ``STORES``: its name, and how to make an empty store of it with the
bounds a test asks for (``max_tasks``, ``max_accounts``, ``journal_limit``, ``ledger_limit``,
``ledger_total``), awaited on the test's own event loop. ``MOCKGEN_TEST_STORES=memory,redis`` picks
the kinds that run, and each of them must run; unset, every kind does, and one whose factory cannot
run here (no ``redis-server``, say) skips its tests with the reason (under ``CI=true`` it fails them).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import pytest

from mockgen.store import MemoryStore, Store

ENV = "MOCKGEN_TEST_STORES"
Factory = Callable[..., Awaitable[Store]]  # (**bounds) -> an empty store


class Kind(NamedTuple):
    """How to make an empty store of one kind, and what the suite may assume of it."""

    make: Factory
    # Reads mockgen.store's MAX_COUNTERS and MAX_BUCKETS at each call, so a test can lower those bounds.
    reads_bounds: bool = True
    # Fixtures to start first (a session-wide server, say), by name.
    fixtures: tuple[str, ...] = ()


async def make_memory_store(**bounds: Any) -> Store:
    return MemoryStore(**bounds)


def imported(module: str, name: str) -> Factory:
    """The factory ``module.name``, imported when first used: a kind's dependencies load only when it runs."""

    async def make(**bounds: Any) -> Store:
        try:
            factory: Factory = getattr(importlib.import_module(module), name)
        except ImportError as e:
            if os.environ.get("CI") == "true":
                raise
            pytest.skip(f"{module}.{name} cannot run here: {e}")
        return await factory(**bounds)

    return make


STORES: dict[str, Kind] = {
    "memory": Kind(make_memory_store),
    "redis": Kind(imported("tests.redis_server", "make_redis_store"), reads_bounds=False),
}


def selected(choice: str | None = None, known: Sequence[str] | None = None) -> list[str]:
    """The kinds of ``known`` (all in STORES) named in ``choice`` (None: ``MOCKGEN_TEST_STORES``); all of
    them if it names none."""
    if choice is None:
        choice = os.environ.get(ENV, "")
    if known is None:
        known = tuple(STORES)
    names = [name.strip() for name in choice.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{ENV}: no store kind {', '.join(map(repr, unknown))}; the kinds are {', '.join(known)}")
    return list(dict.fromkeys(names)) if names else list(known)


async def close(store: Store) -> None:
    """Empty ``store`` and let go of what it holds open (a connection), if it has anything to close."""
    await store.clear()
    for name in ("aclose", "close"):
        closer = getattr(store, name, None)
        if callable(closer):
            result = closer()
            if inspect.isawaitable(result):
                await result
            return


def chosen() -> bool:
    """Whether ``MOCKGEN_TEST_STORES`` names the kinds to run (then none of them may be skipped)."""
    return bool(os.environ.get(ENV, "").strip())


class Stores:
    """Runs a test's coroutine with fresh stores of one kind, on an event loop of its own.

    ``required``: the kind was asked for, so a factory that cannot run here fails the test, not skips it.
    """

    TIMEOUT = 30.0  # seconds a whole check may take: a store that hangs fails the test, not the suite

    def __init__(self, name: str, kind: Kind, required: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.required = required

    def refuse_skip(self, skipped: BaseException) -> None:
        """Fail instead of skipping when this kind was asked for."""
        if self.required:
            pytest.fail(f"{ENV} asks for the {self.name} store, which cannot run here: {skipped}")

    def run(self, check: Callable[[Store], Awaitable[None]], **bounds: Any) -> None:
        """Make an empty store with ``bounds``, await ``check(store)`` on it, then close it."""

        async def main() -> None:
            try:
                store = await self.kind.make(**bounds)
            except pytest.skip.Exception as skipped:
                self.refuse_skip(skipped)
                raise
            try:
                await asyncio.wait_for(check(store), self.TIMEOUT)
            finally:
                await close(store)

        asyncio.run(main())
