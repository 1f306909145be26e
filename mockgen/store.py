"""Where the emulated world lives: the Store interface and its in-memory implementation.

Everything that must stay consistent across processes goes through these few methods
(an atomic charge, a credit, tasks, the due-queue, the journal), so that a shared store
(e.g. Redis with a Lua script for ``charge``) can replace ``MemoryStore`` later without
touching the backend's logic.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Protocol

from .journal import Journal
from .models import NEVER, Account, Task


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
    def staged(self, accounts: Iterable[Account], tasks: Iterable[Task]) -> Store: ...
    def take(self, staged: Store) -> None: ...
    def release(self) -> None: ...


class MemoryStore:
    """The default store: plain dicts and a heap in this process (the fastest).

    Bounded, so a server left running for days stays flat: past ``max_tasks`` the oldest finished
    tasks are dropped (unfinished ones are kept: a client may still poll them), each account keeps
    its newest ``ledger_limit`` ledger entries (balances are kept whole), and the journal its
    newest ``journal_limit`` requests.
    """

    def __init__(
        self, max_tasks: int = 1_000_000, journal_limit: int = 10_000, ledger_limit: int | None = None
    ) -> None:
        self.max_tasks = max_tasks
        self.ledger_limit = ledger_limit or max_tasks
        # Evicting scans from the oldest task; doing it for a batch at a time (a 64th of the limit,
        # 1 under 128) keeps a submit past the limit O(1) on average instead of a scan each.
        self._batch = max(1, max_tasks // 64)
        self._scan_at = 0  # after a scan that found too few finished tasks, wait for this many
        self.journal = Journal(journal_limit)
        self._accounts: dict[str, Account] = {}
        self._tasks: dict[str, Task] = {}
        self._due: list[tuple[float, str]] = []

    def clear(self) -> None:
        self._accounts.clear()
        self._tasks.clear()
        self._due.clear()
        self._scan_at = 0
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
        self._log(account, "charge", amount, at, task_id)
        return True

    def credit(self, key: str, amount: int, at: float, kind: str, task_id: str | None) -> int:
        """Add ``amount`` (negative to take away, never below zero); returns the new balance."""
        account = self._accounts[key]
        applied = max(amount, -account.credits)
        account.credits += applied
        self._log(account, kind, applied, at, task_id)
        return account.credits

    def _log(self, account: Account, kind: str, amount: int, at: float, task_id: str | None) -> None:
        ledger = account.ledger
        ledger.add(kind, amount, at, task_id)
        if len(ledger) > self.ledger_limit:
            # Trim a batch at once (deleting a list's head moves the rest).
            del ledger[: len(ledger) - self.ledger_limit + min(self._batch, self.ledger_limit) - 1]

    # tasks
    def get_task(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def add_task(self, task: Task) -> None:
        tasks = self._tasks
        tasks[task.task_id] = task
        if len(tasks) > self.max_tasks and len(tasks) >= self._scan_at:
            self._evict()

    def _evict(self) -> None:
        """Drop the oldest finished tasks, down to a batch under the limit, so the next scan waits."""
        tasks = self._tasks
        wanted = len(tasks) - self.max_tasks + self._batch - 1
        doomed = []
        for task_id, task in tasks.items():  # a dict keeps insertion order: oldest first
            if task.final_status:
                doomed.append(task_id)
                if len(doomed) >= wanted:
                    break
        for task_id in doomed:
            del tasks[task_id]
        # Too few finished tasks to drop (many still running): scan again only a batch later.
        self._scan_at = 0 if len(doomed) >= wanted else len(tasks) + self._batch

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

    # a whole world replaced (PUT /_mock/state): built aside, in any thread, then put in force at once
    def staged(self, accounts: Iterable[Account], tasks: Iterable[Task]) -> MemoryStore:
        """A store with this one's bounds holding ``accounts`` and ``tasks`` (due ones scheduled), and
        an empty journal. Nothing is shared with this store, so it may be built in a thread."""
        staged = MemoryStore(self.max_tasks, 1, self.ledger_limit)
        for account in accounts:
            staged.add_account(account)
        for task in tasks:
            staged.add_task(task)
            if not task.final_status and task.finish_at != NEVER:
                staged.schedule(task.finish_at, task.task_id)
        return staged

    def take(self, staged: Store) -> None:
        """Hold what ``staged`` holds instead of this world, in one step (no request sees half of
        either); the journal stays this one's, cleared. ``staged`` gets the old world, to drop."""
        assert isinstance(staged, MemoryStore)
        journal = self.journal
        mine, theirs = vars(self).copy(), vars(staged).copy()
        vars(self).update(theirs)
        vars(staged).update(mine)
        self.journal, staged.journal = journal, theirs["journal"]
        journal.clear()

    def release(self) -> None:
        """Empty this store (not its journal) in many small steps rather than one long one, so that a
        thread doing it leaves the event loop free between them: how a replaced world is dropped."""
        for items in (self._tasks, self._accounts):
            while items:
                items.popitem()
        self._due.clear()
