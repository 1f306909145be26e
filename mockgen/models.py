"""The emulated world's records: accounts, ledger entries and tasks, with status read off a clock."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar, overload

from .spec import FAILED, QUEUED, RUNNING, SUCCEEDED

NEVER = float("inf")

T = TypeVar("T")


def newest(items: list[T], limit: int | None) -> list[T]:
    """The last ``limit`` of ``items`` (all of them: None), as a ``?limit=`` listing shows them."""
    return items if limit is None else items[max(len(items) - limit, 0) :]


@dataclass(slots=True)
class LedgerEntry:
    kind: str  # "charge" | "refund" | "topup"
    amount: int
    at: float
    task_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "amount": self.amount, "at": self.at}
        if self.task_id is not None:
            d["task_id"] = self.task_id
        return d


class Ledger:
    """An account's ledger entries, oldest first, kept by column: a charge per task costs about 32
    bytes here, not the 72 of a LedgerEntry in a list. Reads as a sequence of LedgerEntry."""

    __slots__ = ("_kinds", "_amounts", "_ats", "_task_ids", "queued")

    def __init__(self, entries: Iterable[LedgerEntry] = ()) -> None:
        self.queued = 0  # the store's bookkeeping for its bound on entries in all ledgers (store.py)
        self._kinds: list[str] = []
        self._amounts: list[int] = []
        self._ats = array("d")  # a float's value, without a float object each
        self._task_ids: list[str | None] = []
        for entry in entries:
            self.append(entry)

    def add(self, kind: str, amount: int, at: float, task_id: str | None = None) -> None:
        self._kinds.append(kind)
        self._amounts.append(amount)
        self._ats.append(at)
        self._task_ids.append(task_id)

    def append(self, entry: LedgerEntry) -> None:
        self.add(entry.kind, entry.amount, entry.at, entry.task_id)

    def __len__(self) -> int:
        return len(self._kinds)

    def _entry(self, i: int) -> LedgerEntry:
        return LedgerEntry(self._kinds[i], self._amounts[i], self._ats[i], self._task_ids[i])

    @overload
    def __getitem__(self, index: int) -> LedgerEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[LedgerEntry]: ...
    def __getitem__(self, index: int | slice) -> LedgerEntry | list[LedgerEntry]:
        if isinstance(index, slice):
            return [self._entry(i) for i in range(len(self))[index]]
        return self._entry(range(len(self))[index])

    def __delitem__(self, index: slice) -> None:
        for column in (self._kinds, self._amounts, self._ats, self._task_ids):
            del column[index]

    def __iter__(self) -> Iterator[LedgerEntry]:
        return map(LedgerEntry, self._kinds, self._amounts, self._ats, self._task_ids)

    def copy(self) -> Ledger:
        """The entries as they are now (four list copies in C: cheap enough to take on the event loop)."""
        copy = Ledger.__new__(Ledger)
        copy._kinds = self._kinds.copy()
        copy._amounts = self._amounts.copy()
        copy._ats = array("d", self._ats)
        copy._task_ids = self._task_ids.copy()
        return copy

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ledger | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Ledger({list(self)!r})"


@dataclass(slots=True)
class Account:
    key: str
    credits: int
    name: str | None = None
    ledger: Ledger = field(default_factory=Ledger)
    # False for an open-mode key's account before anything changed it: used and shown, not stored, so
    # a request that changes nothing (a poll, a refused submit) costs no memory (Backend._keep).
    stored: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.ledger, Ledger):  # e.g. a list of LedgerEntry from a state import
            self.ledger = Ledger(self.ledger)


class Plan(NamedTuple):
    """What a task will do, fixed at submit. Most tasks share one: a store of a million tasks holds
    a handful of plans, and each task keeps only what is its own (about 140 bytes, not 220)."""

    model_id: str
    task_type: str
    credits: int
    outcome: str  # the planned outcome, "success" | "failed"
    failure_message: str
    progress: str = "time"  # "time" | "polls" | "manual"
    polls_queued: int = 0
    polls_running: int = 0
    rule: str | None = None
    results: str = "local"
    extra: dict[str, Any] | None = None
    lost_answer: str | None = None  # the fault that lost the create's answer (the task exists, charged)


# Every field of a task, in order: what Task() takes, what a state export holds.
TASK_FIELDS = (
    "task_id", "key", "model_id", "task_type", "prompt", "aspect_ratio", "image_urls", "credits", "created_at",
    "request_id", "running_at", "finish_at", "outcome", "failure_message", "progress", "polls_queued",
    "polls_running", "polls", "final_status", "settled_at", "message", "rule", "results", "extra", "lost_answer",
)  # fmt: skip


def _planned(name: str) -> property:
    index = Plan._fields.index(name)
    return property(lambda task: task.plan[index], doc=f"The plan's {name} (fixed at submit).")


@dataclass(slots=True, eq=False)
class Task:
    """One generation task: its own fields, and the ``plan`` it shares with other tasks (never
    changed once made). Its status is computed when read, from the clock and the plan."""

    plan: Plan
    task_id: str
    key: str
    prompt: str
    aspect_ratio: str
    image_urls: tuple[str, ...]
    created_at: float
    request_id: str
    running_at: float  # when status 2 begins
    finish_at: float  # when it finishes by time; NEVER when it progresses by polls or by hand
    polls: int = 0
    final_status: int = 0  # 0 until settled, then SUCCEEDED or FAILED
    settled_at: float | None = None
    message: str | None = None  # the failure message it ended with

    @classmethod
    def from_fields(cls, **fields: Any) -> Task:
        """The task with these fields (TASK_FIELDS, as ``fields()`` gives them and a state holds them)."""
        defaults = Plan._field_defaults
        plan = Plan(*(fields.pop(f) if f in fields else defaults[f] for f in Plan._fields))
        return cls(plan, **fields)

    model_id = _planned("model_id")
    task_type = _planned("task_type")
    credits = _planned("credits")
    outcome = _planned("outcome")
    failure_message = _planned("failure_message")
    progress = _planned("progress")
    polls_queued = _planned("polls_queued")
    polls_running = _planned("polls_running")
    rule = _planned("rule")
    results = _planned("results")
    extra = _planned("extra")
    lost_answer = _planned("lost_answer")

    def fields(self) -> dict[str, Any]:
        """Every field by name (TASK_FIELDS), as ``from_fields`` takes them."""
        return {name: getattr(self, name) for name in TASK_FIELDS}

    def copy(self) -> Task:
        """The task as it is now (the plan is shared: it never changes)."""
        return Task(
            self.plan, self.task_id, self.key, self.prompt, self.aspect_ratio, self.image_urls, self.created_at,
            self.request_id, self.running_at, self.finish_at, self.polls, self.final_status, self.settled_at,
            self.message,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self.fields() == other.fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Task({self.task_id!r}, {self.model_id!r}, status={self.final_status})"

    def status_at(self, now: float) -> int:
        """The status a client sees at ``now`` (settled tasks keep their final status)."""
        if self.final_status:
            return self.final_status
        plan = self.plan
        if plan.progress == "polls":
            if self.polls <= plan.polls_queued:
                return QUEUED
            if self.polls <= plan.polls_queued + plan.polls_running:
                return RUNNING
            return SUCCEEDED if plan.outcome == "success" else FAILED
        if now < self.running_at:
            return QUEUED
        if now < self.finish_at:
            return RUNNING
        return SUCCEEDED if plan.outcome == "success" else FAILED

    @property
    def polls_to_finish(self) -> int:
        return self.plan.polls_queued + self.plan.polls_running + 1


@dataclass(slots=True)
class NextOutcome:
    """An outcome for the next ``count`` submits of ``model_id`` with ``key`` (None: any)."""

    outcome: str
    count: int
    model_id: str | None = None
    key: str | None = None
    message: str | None = None


class TasksAt:
    """Tasks as they are at one moment, to render later (in chunks, or in a thread) as of then.

    What can change (polls, final_status, settled_at, message; the account) is copied by column:
    a few lists, not an object per task, so taking it on the event loop is quick and leaves the
    garbage collector nothing new to walk. ``task(i)`` is a copy of the i-th as it was.
    """

    __slots__ = ("tasks", "_polls", "_final", "_settled", "_messages", "_accounts")

    def __init__(self, tasks: list[Task], account: Callable[[str], Account | None] | None = None) -> None:
        self.tasks = tasks
        self._polls = [t.polls for t in tasks]
        self._final = [t.final_status for t in tasks]
        self._settled = [t.settled_at for t in tasks]
        self._messages = [t.message for t in tasks]
        self._accounts = [account(t.key) for t in tasks] if account is not None else None

    def __len__(self) -> int:
        return len(self.tasks)

    def task(self, i: int) -> Task:
        copy = self.tasks[i].copy()
        copy.polls, copy.final_status = self._polls[i], self._final[i]
        copy.settled_at, copy.message = self._settled[i], self._messages[i]
        return copy

    def account(self, i: int) -> Account | None:
        """The task's account at that moment (None if there was none, or accounts were not taken)."""
        return self._accounts[i] if self._accounts is not None else None
