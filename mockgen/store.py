"""Where the emulated world lives: the Store interface and its in-memory implementation.

Every piece of a world is behind these methods, and every change to it is one of them, atomic:
the charge with its balance check, the refund of a task (once, whoever asks), the finish of a
task (once: a compare-and-set from unfinished), poll counts, rule and fault counters, rate-limit
buckets, the next-outcome queue, the sequence that seeds each request's randomness, the clock,
the due-queue and the journal. The Backend decides *what* happens; a Store only holds the world
and makes each step whole, so a shared store (Redis, with a script per step) can hold one world
for many processes without the Backend's logic changing.

The interface is async, for a store that must do I/O. ``MemoryStore`` never waits: each of its
coroutines completes on its first step, which is what keeps it the fastest (``run_now`` drives
one from plain code, e.g. to build a world before any event loop runs).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Coroutine, Iterable, Iterator
from itertools import islice, repeat
from typing import Any, NamedTuple, Protocol, TypeVar

from .clock import Clock, ManualClock, SystemClock
from .journal import MAX_BYTES as JOURNAL_BYTES
from .journal import Journal
from .models import FAILED, NEVER, SUCCEEDED, Account, Ledger, NextOutcome, Task, newest

__all__ = [
    "MAX_BUCKETS", "MAX_COUNTERS", "NEXT_LIMIT", "MemoryStore", "NextQueue", "Reserved", "Store", "StoreUnavailable",
    "open_store", "run_now",
]  # fmt: skip

MAX_BUCKETS = 100_000  # rate-limit buckets kept (scope, key), least recently used dropped first
MAX_COUNTERS = 100_000  # rule and fault counters kept (scope, key), first seen dropped first
NEXT_LIMIT = 1_000  # entries in the queue of next outcomes (README, Limits)

T = TypeVar("T")


class Reserved(NamedTuple):
    """What ``reserve`` found and handed out."""

    account: Account | None  # the key's stored account (None: there is none, and nothing was used)
    now: float  # the world's time of the step
    seq: int  # the number handed out; 0 when none was (short of credits, or no room)
    queued: NextOutcome | None  # the queued outcome the submit takes, if any
    room: bool  # False: every task kept is unfinished (max_tasks)


class StoreUnavailable(Exception):
    """A shared store cannot be reached now (down, unreachable or too slow): the step did not happen,
    or its answer was lost. The store reconnects by itself; a server answers 503 meanwhile."""


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that completes without waiting (every MemoryStore step does), run
    from plain code; RuntimeError if it would wait (it needs an event loop: await it instead)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("this store waits for I/O: await it on an event loop")


class Store(Protocol):
    """One world's state. Each method is one atomic step on it (see the module's docstring).

    Accounts and tasks handed out are the store's view of them at that moment: read them, never
    change them (a change is a store step). ``immediate`` is True for a store whose steps never
    wait (``run_now`` may drive them); ``clock`` is the clock the world reads its time from.
    """

    journal: Journal
    max_tasks: int
    max_accounts: int
    immediate: bool
    clock: Clock
    kind: str  # "memory", "redis": what /_mock/health reports
    # The world's generation (``set_meta``'s "generation") as last seen: a shared store brings it up to
    # date with every step that begins a request (``get_account``, ``poll``, ``reserve``), so a replica
    # sees a reset or a scenario swap elsewhere at once.
    generation: str

    async def clear(self) -> None:
        """An empty world: no accounts, tasks, counters, buckets or queued outcomes; the sequence at 0."""
        ...

    async def get_meta(self) -> dict[str, Any] | None:
        """The world's own facts as ``set_meta`` left them (its seed, its scenario's name); None when
        the store holds no world yet. A replica that starts joins a world that is there."""
        ...

    async def set_meta(self, meta: dict[str, Any], only_new: bool = False) -> bool:
        """Record the world's facts; with ``only_new``, only if there are none yet (False: there were)."""
        ...

    async def close(self) -> None:
        """Let go of connections (a later step opens new ones)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers now (StoreUnavailable when it does not)."""
        ...

    # accounts and credits
    async def get_account(self, key: str) -> Account | None: ...
    async def add_account(self, account: Account) -> Account | None:
        """Store ``account`` unless its key has one already (then that one); None at ``max_accounts``."""
        ...

    async def accounts(self, newest: int | None = None) -> list[Account]:
        """Every account, oldest first; or only the ``newest`` ones (still oldest first)."""
        ...

    async def account_count(self) -> int: ...
    async def ledger(self, key: str) -> Ledger:
        """A copy of the account's ledger entries as they are now, oldest first (none: no account)."""
        ...

    async def credit(self, key: str, amount: int, at: float, kind: str, task_id: str | None = None) -> int:
        """Add ``amount`` (negative: take away, never below zero) with a ledger entry; the new balance."""
        ...

    async def refund(self, task: Task, at: float) -> bool:
        """Give back ``task``'s charge, once: a second refund of the same task does nothing (False)."""
        ...

    # tasks
    async def submit(self, task: Task) -> bool | None:
        """Charge ``task.credits`` to ``task.key`` if the balance covers it, keep the task and, when it
        finishes by time, queue it to finish then: all of it (True), or nothing: False when the
        balance is short (or the key has no stored account), None when a task has its id already."""
        ...

    async def make_room(self) -> bool:
        """Room for one more task (at ``max_tasks`` the task that finished first goes); False when
        every task kept is unfinished."""
        ...

    async def get_task(self, task_id: str) -> Task | None: ...
    async def tasks(self) -> list[Task]: ...
    async def task_count(self) -> int: ...
    async def count_poll(self, task_id: str) -> int:
        """One more poll of the task; its poll count now (0, nothing counted, for a task not kept)."""
        ...

    async def poll(
        self, task_id: str, key: str, generation: str | None, open_keys: bool
    ) -> tuple[Account | None, Task | None] | None:
        """A poll's step, in one, by the world's clock: what is due settled (as ``settle``), ``key``'s
        account read, and the task read with this poll counted when it is kept and ``key``'s (else
        None: nothing counted). Without a stored account nothing is counted unless ``open_keys``.
        None, and nothing done, when the world's generation is not ``generation`` (None: any)."""
        ...

    async def finish(self, task_id: str, status: int, at: float, message: str | None = None) -> bool:
        """Set an unfinished task's final status (SUCCEEDED or FAILED) and when; a failure keeps
        ``message`` and is refunded. A compare-and-set: False, and nothing changed, if it had finished
        (or is not kept)."""
        ...

    async def settle(self, now: float) -> int:
        """Finish the tasks due by ``now`` as planned (a failure keeps its plan's failure message and is
        refunded), each once whoever asks, earliest first; how many this step finished."""
        ...

    # counters, buckets, the sequence
    async def count(self, scope: str, key: str) -> int:
        """One more for the counter (scope, key); its count now (at most MAX_COUNTERS are kept)."""
        ...

    async def take_token(self, scope: str, key: str, burst: int, rate: float, now: float) -> bool:
        """A token from the bucket (scope, key) of ``burst`` tokens filling at ``rate`` a second; False when empty."""
        ...

    async def next_seq(self) -> int:
        """The next number of the world's sequence (1, 2, ...): what each request's random draws come from."""
        ...

    # the next-outcome queue
    async def queue_next(self, entry: NextOutcome) -> int | None:
        """Queue ``entry`` last; the queue's length now, or None when it is full (NEXT_LIMIT)."""
        ...

    async def take_next(self, model_id: str, key: str) -> NextOutcome | None:
        """The oldest queued entry that a submit of ``model_id`` with ``key`` matches, one of its count used."""
        ...

    async def reserve(self, key: str, model_id: str, cost: int, generation: str | None) -> Reserved | None:
        """A submit's steps before its charge, in one, by the world's clock: what is due settled, ``key``'s
        account read, and when its balance covers ``cost`` and there is room (``make_room``), the next
        number and a queued outcome (``take_next``); nothing is used up otherwise. None, and nothing
        done, when the world's generation is not ``generation`` (None: any)."""
        ...

    async def queued(self, limit: int | None = None) -> list[NextOutcome]:
        """The queued entries, oldest first (only the newest ``limit``: ``limit``)."""
        ...

    async def clear_next(self) -> None: ...

    # the clock
    async def set_clock(self, clock: Clock) -> None:
        """The world's clock from now on."""
        ...

    async def advance_clock(self, seconds: float) -> float:
        """Move a manual clock on (ValueError if it is real or ``seconds`` < 0); the time now."""
        ...

    # a whole world replaced (PUT /_mock/state): built aside, then put in force at once
    async def staged(
        self, accounts: Iterable[Account], tasks: Iterable[Task], next_outcomes: Iterable[NextOutcome]
    ) -> Store:
        """A store with this one's bounds holding these (due tasks queued), and an empty journal."""
        ...

    async def take(self, staged: Store) -> None:
        """Hold what ``staged`` holds instead of this world, in one step: its accounts, tasks (due ones
        queued) and next outcomes. What a state does not hold stays: the clock, the sequence, rule and
        fault counters and rate-limit buckets; the journal stays too, cleared. ``staged`` gets the old
        world (``release`` it)."""
        ...

    def release(self) -> None:
        """Empty this store (accounts, tasks, due-queue, next outcomes) in many small steps (in a thread:
        the event loop stays free)."""
        ...


def ledger_bounds(max_tasks: int, ledger_limit: int | None, ledger_total: int | None) -> tuple[int, int]:
    """A store's ledger bounds, per account and in all, by default from ``max_tasks``: every store alike."""
    # In all: a task's charge and its refund, two entries for each task kept, across all accounts.
    return ledger_limit or max_tasks, ledger_total or 2 * max_tasks


class NextQueue:
    """The outcomes queued for the next submits (``POST /_mock/next``), oldest first, at most ``limit``.

    Kept in buckets by what they match (a model or any, a key or any), each in the order they came,
    so a submit looks only at the oldest entry of the four buckets that can match it and takes the
    oldest of those: what a scan of the whole queue in order finds, at a cost that does not grow with it.
    """

    def __init__(self, entries: Iterable[NextOutcome] = (), limit: int = NEXT_LIMIT) -> None:
        self.limit = limit
        self._seq = 0
        self._order: dict[int, NextOutcome] = {}  # the whole queue, in the order it came
        self._buckets: dict[tuple[str | None, str | None], deque[tuple[int, NextOutcome]]] = {}
        for entry in entries:
            self._add(entry)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[NextOutcome]:
        return iter(list(self._order.values()))

    def append(self, entry: NextOutcome) -> bool:
        """Queue ``entry`` last; False (nothing queued) when the queue is full."""
        if len(self._order) >= self.limit:
            return False
        self._add(entry)
        return True

    def _add(self, entry: NextOutcome) -> None:
        self._seq += 1
        self._order[self._seq] = entry
        self._buckets.setdefault((entry.model_id, entry.key), deque()).append((self._seq, entry))

    def take(self, model_id: str, key: str) -> NextOutcome | None:
        """The oldest entry for a submit of ``model_id`` with ``key``, one of its count used (gone at 0)."""
        buckets = self._buckets
        best: deque[tuple[int, NextOutcome]] | None = None
        where: tuple[str | None, str | None] = (None, None)
        for candidate in ((model_id, key), (model_id, None), (None, key), (None, None)):
            bucket = buckets.get(candidate)
            if bucket is not None and (best is None or bucket[0][0] < best[0][0]):
                best, where = bucket, candidate
        if best is None:
            return None
        seq, entry = best[0]
        entry.count -= 1
        if entry.count <= 0:
            best.popleft()
            del self._order[seq]
            if not best:
                del buckets[where]
        return entry


class MemoryStore:
    """The default store: plain dicts and a heap in this process (the fastest; it never waits).

    Bounded, so a server left running for days stays flat: it holds at most ``max_tasks`` tasks
    (past it the oldest finished task goes, in the order they finished; when every task kept is
    unfinished ``make_room`` says no and the submit is refused), at most ``max_accounts`` accounts
    (``add_account`` refuses a new key past it), and ledger entries at most ``ledger_limit`` per
    account and ``ledger_total`` in all (oldest first; a balance is never changed by a dropped
    entry). The journal keeps its newest ``journal_limit`` requests.
    """

    immediate = True
    kind = "memory"

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
        self.ledger_limit, self.ledger_total = ledger_bounds(max_tasks, ledger_limit, ledger_total)
        # Trimming an account's ledger a batch at a time (deleting a list's head moves the rest).
        self._batch = max(1, self.ledger_limit // 64)
        self._total_batch = max(1, self.ledger_total // 64)
        self.journal = Journal(journal_limit, journal_bytes)
        self.clock: Clock = SystemClock()
        self._meta: dict[str, Any] | None = None
        self.generation = ""
        self._new_world()

    def _new_world(self) -> None:
        self._accounts: dict[str, Account] = {}
        self._tasks: dict[str, Task] = {}
        self._finished: deque[str] = deque()  # ids of finished tasks, in the order they finished
        self._refunded: set[str] = set()  # ids of tasks refunded (of those kept)
        self._due: list[tuple[float, str]] = []
        # One item per ledger entry logged, oldest first: the ledger it went to (see _drop_oldest_entries).
        # About 8 bytes an entry; at most ledger_total, so entries kept (fewer: some were trimmed) are too.
        self._entries: deque[Ledger] = deque()
        self._counters: dict[tuple[str, str], int] = {}
        # Rate-limit buckets (tokens, when last taken from), least recently used first.
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._next = NextQueue()
        self._seq = 0

    async def clear(self) -> None:
        self._new_world()
        self.journal.clear()

    async def get_meta(self) -> dict[str, Any] | None:
        return self._meta

    async def set_meta(self, meta: dict[str, Any], only_new: bool = False) -> bool:
        if only_new and self._meta is not None:
            return False
        self._meta = dict(meta)
        self.generation = str(meta.get("generation", ""))
        return True

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    # accounts and credits
    async def get_account(self, key: str) -> Account | None:
        return self._accounts.get(key)

    async def add_account(self, account: Account) -> Account | None:
        kept = self._accounts.get(account.key)
        if kept is not None:
            return kept
        if len(self._accounts) >= self.max_accounts:
            return None
        self._add_account(account)
        return account

    def _add_account(self, account: Account) -> None:
        account.stored = True
        self._accounts[account.key] = account
        ledger = account.ledger  # e.g. from a state import: its entries count towards the total
        if len(ledger):
            ledger.queued = len(ledger)
            self._entries.extend(repeat(ledger, len(ledger)))
            if len(self._entries) > self.ledger_total:
                self._drop_oldest_entries()

    async def accounts(self, newest: int | None = None) -> list[Account]:
        values = self._accounts.values()
        if newest is None or newest >= len(values):
            return list(values)
        return list(reversed(list(islice(reversed(values), newest))))

    async def account_count(self) -> int:
        return len(self._accounts)

    async def ledger(self, key: str) -> Ledger:
        account = self._accounts.get(key)
        return Ledger() if account is None else account.ledger.copy()

    async def credit(self, key: str, amount: int, at: float, kind: str, task_id: str | None = None) -> int:
        account = self._accounts[key]
        applied = max(amount, -account.credits)
        account.credits += applied
        self._log(account, kind, applied, at, task_id)
        return account.credits

    async def refund(self, task: Task, at: float) -> bool:
        return self._refund(task, at)

    def _refund(self, task: Task, at: float) -> bool:
        task_id = task.task_id
        account = self._accounts.get(task.key)
        if task_id in self._refunded or account is None or not task.credits:
            return False
        self._refunded.add(task_id)
        account.credits += task.credits
        self._log(account, "refund", task.credits, at, task_id)
        return True

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
    async def submit(self, task: Task) -> bool | None:
        if task.task_id in self._tasks:
            return None
        account = self._accounts.get(task.key)
        cost = task.credits
        if account is None or account.credits < cost:
            return False
        account.credits -= cost
        self._log(account, "charge", cost, task.created_at, task.task_id)
        self._tasks[task.task_id] = task
        if task.finish_at != NEVER:
            heapq.heappush(self._due, (task.finish_at, task.task_id))
        return True

    async def make_room(self) -> bool:
        return self._room()

    def _room(self) -> bool:
        tasks = self._tasks
        return len(tasks) < self.max_tasks or (self._evict() and len(tasks) < self.max_tasks)

    def _evict(self) -> bool:
        """Drop the task that finished first, if any; O(1) amortized (each id is queued once)."""
        tasks, finished = self._tasks, self._finished
        while finished:
            task_id = finished.popleft()
            task = tasks.get(task_id)
            if task is not None and task.final_status:  # (not a newer task that reused an evicted id)
                del tasks[task_id]
                self._refunded.discard(task_id)
                return True
        return False

    def _add_task(self, task: Task) -> None:
        """Keep ``task`` as it is (a state import); past ``max_tasks`` the oldest finished ones go first."""
        tasks = self._tasks
        tasks[task.task_id] = task
        if task.final_status:
            self._finished.append(task.task_id)
            if task.final_status == FAILED and task.credits:
                self._refunded.add(task.task_id)  # a failed task was refunded when it finished
        elif task.finish_at != NEVER:
            heapq.heappush(self._due, (task.finish_at, task.task_id))
        while len(tasks) > self.max_tasks and self._evict():
            pass

    async def get_task(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    async def tasks(self) -> list[Task]:
        return list(self._tasks.values())

    async def task_count(self) -> int:
        return len(self._tasks)

    async def count_poll(self, task_id: str) -> int:
        task = self._tasks.get(task_id)
        if task is None:  # evicted since it was read (by another replica, on a shared store)
            return 0
        task.polls += 1
        return task.polls

    async def poll(
        self, task_id: str, key: str, generation: str | None, open_keys: bool
    ) -> tuple[Account | None, Task | None] | None:
        if generation is not None and generation != self.generation:
            return None
        due = self._due
        if due and due[0][0] <= (now := self.clock.now()):
            self._settle(now)
        account = self._accounts.get(key)
        if account is None and not open_keys:
            return None, None
        task = self._tasks.get(task_id)
        if task is None or task.key != key:
            return account, None
        task.polls += 1
        return account, task

    async def finish(self, task_id: str, status: int, at: float, message: str | None = None) -> bool:
        task = self._tasks.get(task_id)
        if task is None or task.final_status:
            return False
        self._finish(task, status, at, message)
        return True

    def _finish(self, task: Task, status: int, at: float, message: str | None) -> None:
        task.final_status = status
        task.settled_at = at
        self._finished.append(task.task_id)  # it may be evicted now, after those that finished before it
        if status == FAILED:
            task.message = message
            self._refund(task, at)

    async def settle(self, now: float) -> int:
        return self._settle(now)

    def _settle(self, now: float) -> int:
        due, tasks = self._due, self._tasks
        done = 0
        while due and due[0][0] <= now:
            at, task_id = heapq.heappop(due)
            task = tasks.get(task_id)
            # (one finished meanwhile, or evicted and its id used again, is passed over)
            if task is not None and not task.final_status and task.finish_at == at:
                plan = task.plan
                if plan.outcome == "success":
                    self._finish(task, SUCCEEDED, at, None)
                else:
                    self._finish(task, FAILED, at, plan.failure_message)
                done += 1
        return done

    # counters, buckets, the sequence
    async def count(self, scope: str, key: str) -> int:
        counters = self._counters
        counter = (scope, key)
        n = counters.get(counter, 0) + 1
        if n == 1 and len(counters) >= MAX_COUNTERS:
            del counters[next(iter(counters))]  # the counter first seen longest ago goes (its key starts over)
        counters[counter] = n
        return n

    async def take_token(self, scope: str, key: str, burst: int, rate: float, now: float) -> bool:
        # A bucket that is not kept is a full one: unused that long, it has almost always refilled.
        buckets = self._buckets
        tokens, last = buckets.pop((scope, key), (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        taken = tokens >= 1
        buckets[(scope, key)] = (tokens - 1 if taken else tokens, now)  # (last: the most recently used)
        if len(buckets) > MAX_BUCKETS:
            buckets.popitem(last=False)
        return taken

    async def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # the next-outcome queue
    async def queue_next(self, entry: NextOutcome) -> int | None:
        return len(self._next) if self._next.append(entry) else None

    async def take_next(self, model_id: str, key: str) -> NextOutcome | None:
        return self._next.take(model_id, key) if self._next else None

    async def reserve(self, key: str, model_id: str, cost: int, generation: str | None) -> Reserved | None:
        if generation is not None and generation != self.generation:
            return None
        now = self.clock.now()
        due = self._due
        if due and due[0][0] <= now:
            self._settle(now)
        account = self._accounts.get(key)
        if account is None or account.credits < cost:
            return Reserved(account, now, 0, None, True)
        if not self._room():
            return Reserved(account, now, 0, None, False)
        self._seq += 1
        return Reserved(account, now, self._seq, self._next.take(model_id, key) if self._next else None, True)

    async def queued(self, limit: int | None = None) -> list[NextOutcome]:
        return newest(list(self._next), limit)

    async def clear_next(self) -> None:
        self._next = NextQueue()

    # the clock
    async def set_clock(self, clock: Clock) -> None:
        self.clock = clock

    async def advance_clock(self, seconds: float) -> float:
        clock = self.clock
        if not isinstance(clock, ManualClock):
            raise ValueError("the clock is real")
        return clock.advance(seconds)

    # a whole world replaced
    async def staged(
        self, accounts: Iterable[Account], tasks: Iterable[Task], next_outcomes: Iterable[NextOutcome]
    ) -> MemoryStore:
        """Nothing is shared with this store, so it may be built in a thread (``run_now``)."""
        staged = MemoryStore(
            self.max_tasks, 1, self.ledger_limit, max_accounts=self.max_accounts, ledger_total=self.ledger_total
        )
        for account in accounts:
            staged._add_account(account)
        for task in tasks:
            staged._add_task(task)
        staged._next = NextQueue(next_outcomes)
        return staged

    async def take(self, staged: Store) -> None:
        assert isinstance(staged, MemoryStore)
        mine, theirs = vars(self).copy(), vars(staged).copy()
        vars(self).update(theirs)
        vars(staged).update(mine)
        # What a state does not hold stays (as it did when counters and buckets lived on the Backend).
        for name in ("journal", "clock", "_seq", "_counters", "_buckets", "_meta", "generation"):
            setattr(self, name, mine[name])
            setattr(staged, name, theirs[name])
        self.journal.clear()

    def release(self) -> None:
        for items in (self._tasks, self._accounts):
            while items:
                items.popitem()
        self._due.clear()
        self._finished.clear()
        self._entries.clear()
        self._refunded.clear()
        self._next = NextQueue()


def open_store(url: str | None = None, prefix: str = "mockgen", **bounds: Any) -> Store:
    """The store a URL names: ``memory`` (or None) for MemoryStore, ``redis://``, ``rediss://`` or
    ``unix://`` for a RedisStore under ``prefix``; ``bounds`` as MemoryStore takes them.
    ValueError for another URL, or when the Redis client is not installed."""
    if url is None or url == "memory":
        return MemoryStore(**bounds)
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .redis_store import RedisStore
        except ImportError:
            raise ValueError(f"--store {url} needs the Redis client: pip install 'mockgen[redis]'") from None
        return RedisStore(url, prefix, **bounds)
    raise ValueError(f"a store is 'memory' or a redis://, rediss:// or unix:// URL, not {url!r}")
