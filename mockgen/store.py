"""Where the emulated world lives: the Store interface and its in-memory implementation.

Everything that must stay consistent across processes goes through these few methods
(an atomic charge, a credit, tasks, the due-queue, the journal), so that a shared store
(e.g. Redis with a Lua script for ``charge``) can replace ``MemoryStore`` later without
touching the backend's logic.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice, repeat
from typing import Protocol

from .journal import MAX_BYTES as JOURNAL_BYTES
from .journal import Journal
from .models import NEVER, Account, Ledger, Task


class Store(Protocol):
    journal: Journal
    max_accounts: int

    def clear(self) -> None: ...
    def get_account(self, key: str) -> Account | None: ...
    def add_account(self, account: Account) -> None: ...
    def accounts(self, newest: int | None = None) -> Iterator[Account]: ...
    def account_count(self) -> int: ...
    def charge(self, key: str, amount: int, at: float, task_id: str) -> bool: ...
    def credit(self, key: str, amount: int, at: float, kind: str, task_id: str | None) -> int: ...
    def get_task(self, task_id: str) -> Task | None: ...
    def make_room(self) -> bool: ...
    def add_task(self, task: Task) -> None: ...
    def task_finished(self, task: Task) -> None: ...
    def tasks(self) -> Iterator[Task]: ...
    def task_count(self) -> int: ...
    def schedule(self, at: float, task_id: str) -> None: ...
    def pop_due(self, now: float) -> Iterator[tuple[float, str]]: ...
    def staged(self, accounts: Iterable[Account], tasks: Iterable[Task]) -> Store: ...
    def take(self, staged: Store) -> None: ...
    def release(self) -> None: ...


class MemoryStore:
    """The default store: plain dicts and a heap in this process (the fastest).

    Bounded, so a server left running for days stays flat: it holds at most ``max_tasks`` tasks
    (past it the oldest finished task goes, in the order they finished; when every task kept is
    unfinished ``make_room`` says no and the submit is refused), at most ``max_accounts`` accounts
    (the backend refuses a new key past it), and ledger entries at most ``ledger_limit`` per account
    and ``ledger_total`` in all (oldest first; a balance is never changed by a dropped entry). The
    journal keeps its newest ``journal_limit`` requests.
    """

    def __init__(
        self,
        max_tasks: int = 1_000_000,
        journal_limit: int = 10_000,
        ledger_limit: int | None = None,
        *,
        max_accounts: int = 100_000,
        ledger_total: int | None = None,
        journal_bytes: int = JOURNAL_BYTES,
    ) -> None:
        self.max_tasks = max_tasks
        self.max_accounts = max_accounts
        self.ledger_limit = ledger_limit or max_tasks
        # A task's charge and its refund: two entries for each task kept, across all accounts.
        self.ledger_total = ledger_total or 2 * max_tasks
        # Trimming an account's ledger a batch at a time (deleting a list's head moves the rest).
        self._batch = max(1, self.ledger_limit // 64)
        self._total_batch = max(1, self.ledger_total // 64)
        self.journal = Journal(journal_limit, journal_bytes)
        self._accounts: dict[str, Account] = {}
        self._tasks: dict[str, Task] = {}
        self._finished: deque[str] = deque()  # ids of finished tasks, in the order they finished
        self._due: list[tuple[float, str]] = []
        # One item per ledger entry logged, oldest first: the ledger it went to (see _drop_oldest_entries).
        # About 8 bytes an entry; at most ledger_total, so entries kept (fewer: some were trimmed) are too.
        self._entries: deque[Ledger] = deque()

    def clear(self) -> None:
        self._accounts.clear()
        self._tasks.clear()
        self._finished.clear()
        self._due.clear()
        self._entries.clear()
        self.journal.clear()

    # accounts and credits
    def get_account(self, key: str) -> Account | None:
        return self._accounts.get(key)

    def add_account(self, account: Account) -> None:
        """Store ``account`` (the backend checks ``max_accounts`` first, where the door is known)."""
        self._accounts[account.key] = account
        ledger = account.ledger  # e.g. from a state import: its entries count towards the total
        if len(ledger):
            ledger.queued = len(ledger)
            self._entries.extend(repeat(ledger, len(ledger)))
            if len(self._entries) > self.ledger_total:
                self._drop_oldest_entries()

    def accounts(self, newest: int | None = None) -> Iterator[Account]:
        """Every account, oldest first; or only the ``newest`` ones (still oldest first)."""
        values = self._accounts.values()
        if newest is None or newest >= len(values):
            return iter(list(values))
        return reversed(list(islice(reversed(values), newest)))

    def account_count(self) -> int:
        return len(self._accounts)

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
        ledger.queued += 1
        entries = self._entries
        entries.append(ledger)
        if len(ledger) > self.ledger_limit:
            del ledger[: len(ledger) - self.ledger_limit + min(self._batch, self.ledger_limit) - 1]
        if len(entries) > self.ledger_total:
            self._drop_oldest_entries()

    def _drop_oldest_entries(self) -> None:
        """Drop the oldest items of ``_entries``, down to a batch under the total bound, and with each
        the oldest ledger entry of all accounts (the balances they explained stay as they are).

        ``_entries`` holds a ledger once per entry logged to it, in order, so its head names the ledger
        of the oldest entry -- unless that entry was already trimmed by the per-account bound: a ledger
        with more items queued here than entries kept has lost its oldest ones already, and the item
        only goes. Each item goes once, and each ledger's head is cut once per batch: O(1) amortized.
        """
        entries = self._entries
        goal = self.ledger_total - min(self._total_batch, self.ledger_total)
        cut: dict[int, tuple[Ledger, int]] = {}  # id(ledger) -> (ledger, entries to cut from its head)
        while len(entries) > goal:
            ledger = entries.popleft()
            _, n = cut.get(id(ledger), (ledger, 0))
            if ledger.queued <= len(ledger) - n:  # this item is the ledger's oldest entry still kept
                cut[id(ledger)] = (ledger, n + 1)
            ledger.queued -= 1
        for ledger, n in cut.values():
            del ledger[:n]

    # tasks
    def get_task(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def make_room(self) -> bool:
        """Room for one more task: at ``max_tasks`` the oldest finished task goes; False when every
        task kept is unfinished (nothing may go: a client may still poll them)."""
        tasks = self._tasks
        if len(tasks) < self.max_tasks:
            return True
        return self._evict() and len(tasks) < self.max_tasks

    def _evict(self) -> bool:
        """Drop the task that finished first, if any; O(1) amortized (each id is queued once)."""
        tasks, finished = self._tasks, self._finished
        while finished:
            task_id = finished.popleft()
            task = tasks.get(task_id)
            if task is not None and task.final_status:  # (not a newer task that reused an evicted id)
                del tasks[task_id]
                return True
        return False

    def add_task(self, task: Task) -> None:
        """Keep ``task``; past ``max_tasks`` (a state import) the oldest finished ones go first."""
        tasks = self._tasks
        tasks[task.task_id] = task
        if task.final_status:
            self._finished.append(task.task_id)
        while len(tasks) > self.max_tasks and self._evict():
            pass

    def task_finished(self, task: Task) -> None:
        """``task`` has just finished: it may now be evicted, after those that finished before it."""
        self._finished.append(task.task_id)

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
        staged = MemoryStore(
            self.max_tasks, 1, self.ledger_limit, max_accounts=self.max_accounts, ledger_total=self.ledger_total
        )
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
        self._finished.clear()
        self._entries.clear()
