"""Where the emulated world lives: the Store interface and its in-memory implementation.

Everything that must stay consistent across processes goes through these few methods
(an atomic charge, a credit, tasks, the due-queue, the journal), so that a shared store
(e.g. Redis with a Lua script for ``charge``) can replace ``MemoryStore`` later without
touching the backend's logic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol

from .journal import Journal
from .models import Account, LedgerEntry, Task


class Store(Protocol):
    journal: Journal

    def clear(self) -> None: ...
    def get_account(self, key: str) -> Account | None: ...
    def add_account(self, account: Account) -> None: ...
    def accounts(self) -> Iterator[Account]: ...
    def charge(self, key: str, amount: int, at: float, task_id: str) -> bool: ...
    def credit(self, key: str, amount: int, at: float, kind: str, task_id: str | None) -> int: ...
    def get_task(self, task_id: str) -> Task | None: ...
    def add_task(self, task: Task) -> None: ...
    def tasks(self) -> Iterator[Task]: ...
    def task_count(self) -> int: ...
    def schedule(self, at: float, task_id: str) -> None: ...
    def pop_due(self, now: float) -> Iterator[tuple[float, str]]: ...


class MemoryStore:
    """The default store: plain dicts and a heap in this process (the fastest)."""

    def __init__(self, max_tasks: int = 1_000_000, journal_limit: int = 10_000) -> None:
        self.max_tasks = max_tasks
        self.journal = Journal(journal_limit)
        self._accounts: dict[str, Account] = {}
        self._tasks: dict[str, Task] = {}
        self._due: list[tuple[float, str]] = []

    def clear(self) -> None:
        self._accounts.clear()
        self._tasks.clear()
        self._due.clear()
        self.journal.clear()

    # accounts and credits
    def get_account(self, key: str) -> Account | None:
        return self._accounts.get(key)

    def add_account(self, account: Account) -> None:
        self._accounts[account.key] = account

    def accounts(self) -> Iterator[Account]:
        return iter(list(self._accounts.values()))

    def charge(self, key: str, amount: int, at: float, task_id: str) -> bool:
        """Debit ``amount`` if the balance covers it; atomic (no await between check and debit)."""
        account = self._accounts[key]
        if account.credits < amount:
            return False
        account.credits -= amount
        account.ledger.append(LedgerEntry("charge", amount, at, task_id))
        return True

    def credit(self, key: str, amount: int, at: float, kind: str, task_id: str | None) -> int:
        """Add ``amount`` (negative to take away, never below zero); returns the new balance."""
        account = self._accounts[key]
        applied = max(amount, -account.credits)
        account.credits += applied
        account.ledger.append(LedgerEntry(kind, applied, at, task_id))
        return account.credits

    # tasks
    def get_task(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def add_task(self, task: Task) -> None:
        self._tasks[task.task_id] = task
        if len(self._tasks) > self.max_tasks:
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest finished tasks until the retention limit holds again."""
        excess = len(self._tasks) - self.max_tasks
        doomed = []
        for task_id, task in self._tasks.items():
            if len(doomed) >= excess:
                break
            if task.final_status:
                doomed.append(task_id)
        for task_id in doomed:
            del self._tasks[task_id]

    def tasks(self) -> Iterator[Task]:
        return iter(list(self._tasks.values()))

    def task_count(self) -> int:
        return len(self._tasks)

    # the due-queue: when time-driven tasks finish, so no timer per task is needed
    def schedule(self, at: float, task_id: str) -> None:
        heapq.heappush(self._due, (at, task_id))

    def pop_due(self, now: float) -> Iterator[tuple[float, str]]:
        due = self._due
        if not due or due[0][0] > now:
            return iter(())  # the common case on every request: nothing due, no generator made
        return self._pop_due(now)

    def _pop_due(self, now: float) -> Iterator[tuple[float, str]]:
        due = self._due
        while due and due[0][0] <= now:
            yield heapq.heappop(due)
