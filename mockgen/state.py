"""A world's state as data: its export (``state_at``, ``export_state``), and its import, checked
field by field (``check_state``) and built aside (``prepare_state``) before it is put in force."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from .backend import Backend
from .errors import ControlError, show
from .models import (
    FAILED,
    NEVER,
    SUCCEEDED,
    TASK_FIELDS,
    Account,
    Ledger,
    LedgerEntry,
    NextOutcome,
    Plan,
    Task,
    TasksAt,
)
from .scenario import KEY_RE, MAX_INT, MAX_TIME
from .spec import KINDS, RATIOS
from .store import NEXT_LIMIT, run_now

if TYPE_CHECKING:
    from .store import Store

STATE_VERSION = 1


class StateAt(NamedTuple):
    """The whole world at one moment (``state_at``); ``as_dict`` is its export, and reads nothing live."""

    scenario: str
    clock: dict[str, Any]
    accounts: list[Account]
    credits: list[int]  # each account's balance then
    ledgers: list[Ledger]  # and a copy of its ledger
    tasks: TasksAt
    next: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "scenario": self.scenario,
            "clock": self.clock,
            "accounts": [self.account(i) for i in range(len(self.accounts))],
            "tasks": [state_task(self.tasks.task(i)) for i in range(len(self.tasks))],
            "next": self.next,
        }

    def account(self, i: int, ledger: bool = True) -> dict[str, Any]:
        """The i-th account of the export (without its ledger: ``ledger=False``)."""
        a = self.accounts[i]
        view: dict[str, Any] = {"key": a.key, "name": a.name, "credits": self.credits[i]}
        if ledger:
            view["ledger"] = [e.as_dict() for e in self.ledgers[i]]
        return view


async def state_at(backend: Backend) -> StateAt:
    """The world now (due tasks settled first), for an export rendered later."""
    accounts, _ = await backend.accounts_page()  # (settled)
    tasks, _ = await backend.tasks_page()
    return StateAt(
        backend.scenario_name,
        {"kind": backend.clock.kind, "now": backend.now()},
        accounts,
        [a.credits for a in accounts],
        [await backend.ledger(a.key) for a in accounts],
        TasksAt(tasks.tasks),
        [{f: getattr(e, f) for f in NextOutcome.__slots__} for e in await backend.queued_next()],  # type: ignore[attr-defined]
    )


def state_task(task: Task) -> dict[str, Any]:
    """One task of a state export: every field Task() takes, as JSON."""
    fields = task.fields()
    fields["image_urls"] = list(task.image_urls)
    fields["finish_at"] = None if task.finish_at == NEVER else task.finish_at
    return fields


async def export_state(backend: Backend) -> dict[str, Any]:
    """Accounts, ledger, tasks, clock and queued outcomes as plain JSON-able data."""
    return (await state_at(backend)).as_dict()


class LoadedState(NamedTuple):
    """A checked state (``prepare_state``), built into a store aside if that store never waits
    (else ``install_state`` builds it), ready to put in force."""

    accounts: list[Account]
    tasks: list[Task]
    next: list[NextOutcome]
    now: float
    store: Store | None

    def release(self) -> None:
        """Empty the world this holds (after ``install_state``: the old one), in small steps."""
        if self.store is not None:
            self.store.release()


def prepare_state(backend: Backend, state: Mapping[str, Any]) -> LoadedState:
    """Check an exported state and build its world aside; a malformed one is refused whole (ControlError).

    It changes nothing in force, so it may run in a thread while the server goes on serving.
    """
    check_state(state)
    accounts = []
    for a in state["accounts"]:
        ledger = [LedgerEntry(e["kind"], e["amount"], float(e["at"]), e.get("task_id")) for e in a["ledger"]]
        accounts.append(Account(a["key"], a["credits"], a.get("name"), Ledger(ledger)))
    tasks = []
    for row in state["tasks"]:
        fields = {f: row[f] for f in TASK_FIELDS if f in row}
        fields["image_urls"] = tuple(fields.get("image_urls") or ())
        if fields.get("finish_at") is None:
            fields["finish_at"] = NEVER
        tasks.append(Task.from_fields(**fields))
    queued = [NextOutcome(**n) for n in state.get("next", [])]
    store = backend.store
    staged = run_now(store.staged(accounts, tasks, queued)) if store.immediate else None
    return LoadedState(accounts, tasks, queued, state["clock"]["now"], staged)


async def install_state(backend: Backend, world: LoadedState) -> LoadedState:
    """Put a prepared state in force, in one step: no request sees half of it. Returns what holds
    the old world now (for the caller to ``release``)."""
    staged = world.store
    if staged is None:
        staged = await backend.store.staged(world.accounts, world.tasks, world.next)
    await backend.install(staged, world.now)
    return world._replace(store=staged)


async def import_state(backend: Backend, state: Mapping[str, Any]) -> None:
    """Replace the world with an exported state; a malformed one is refused whole (ControlError)."""
    (await install_state(backend, prepare_state(backend, state))).release()


# --- what a state must hold, field by field ---------------------------------------------------------


class _Expect(NamedTuple):
    """What a field's JSON value must be: a test, and the words for it in an error message."""

    ok: Callable[[Any], bool]
    what: str


def _finite(v: Any) -> bool:
    """A JSON number within MAX_INT either side of 0 (not a bool, not inf or NaN: JSON's 1e400 is inf)."""
    return (type(v) is int or type(v) is float) and -MAX_INT <= v <= MAX_INT


def _integer(v: Any, low: int = -MAX_INT) -> bool:
    """An integer from ``low`` to MAX_INT: what the dashboard's JavaScript reads exactly, and far below
    Python's 4,300-digit limit for turning integers into text (past it, every export would fail)."""
    return type(v) is int and low <= v <= MAX_INT


def _plain(v: Any) -> bool:
    """JSON data whose every number is ``_finite`` (a rule's ``extra``: it is sent and saved again)."""
    todo = [v]
    while todo:
        x = todo.pop()
        if isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
        elif isinstance(x, int | float) and not isinstance(x, bool) and not _finite(x):
            return False
    return True


def _one_of(*values: object) -> _Expect:
    """Exactly one of ``values`` (3.0 is not 3, true is not 1)."""
    allowed = {(type(x), x) for x in values}

    def ok(v: Any) -> bool:
        try:
            return (type(v), v) in allowed
        except TypeError:  # a list or an object: none of these
            return False

    return _Expect(ok, "one of " + ", ".join(map(repr, values)))


def _or_null(e: _Expect) -> _Expect:
    return _Expect(lambda v: v is None or e.ok(v), e.what + " or null")


def _matching(pattern: re.Pattern[str], what: str) -> _Expect:
    return _Expect(lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None, what)


TASK_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it goes into /api/v1/tasks/{id} and /files/{id}.png
STR = _Expect(lambda v: isinstance(v, str), "a string")
INT = _Expect(_integer, f"an integer from {-MAX_INT} to {MAX_INT}")
COUNT = _Expect(lambda v: _integer(v, 0), f"an integer from 0 to {MAX_INT}")
NUMBER = _Expect(_finite, f"a finite number from {-MAX_INT} to {MAX_INT}")
# The manual clock's bound (README, Limits): past it every advance is refused and a date cannot be shown.
TIME = _Expect(lambda v: _finite(v) and 0 <= v <= MAX_TIME, f"Unix seconds from 0 to {MAX_TIME} (the end of 9999)")
KEY = _matching(KEY_RE, "'sk-' followed by 32 letters or digits")
TASK_ID = _matching(TASK_ID_RE, "1 to 64 letters, digits, '-' or '_'")
ARRAY = _Expect(lambda v: isinstance(v, list), "an array")
OBJECT = _Expect(lambda v: isinstance(v, Mapping), "an object")
STRINGS = _Expect(lambda v: isinstance(v, list) and all(isinstance(u, str) for u in v), "an array of strings")
OUTCOME = _one_of("success", "failed")

# Each object of a state: its fields' expectations, and which of them it must have.
STATE_FIELDS = {
    "version": INT, "scenario": STR, "clock": OBJECT, "accounts": ARRAY, "tasks": ARRAY, "next": ARRAY,
}  # fmt: skip
STATE_REQUIRED = {"version", "clock", "accounts", "tasks"}
CLOCK_FIELDS = {"kind": _one_of("real", "manual"), "now": TIME}
ACCOUNT_FIELDS = {"key": KEY, "name": _or_null(STR), "credits": COUNT, "ledger": ARRAY}
ACCOUNT_REQUIRED = {"key", "credits", "ledger"}
LEDGER_FIELDS = {"kind": _one_of("charge", "refund", "topup"), "amount": INT, "at": NUMBER, "task_id": _or_null(STR)}
LEDGER_REQUIRED = {"kind", "amount", "at"}
TASK_CHECKS = {
    "task_id": TASK_ID, "key": KEY, "model_id": STR, "task_type": _one_of(*KINDS), "prompt": STR,
    "aspect_ratio": _one_of(*RATIOS), "image_urls": STRINGS, "credits": COUNT, "created_at": NUMBER,
    "request_id": STR, "running_at": NUMBER, "finish_at": _or_null(NUMBER), "outcome": OUTCOME,
    "failure_message": STR, "progress": _one_of("time", "polls", "manual"), "polls_queued": COUNT,
    "polls_running": COUNT, "polls": COUNT, "final_status": _one_of(0, SUCCEEDED, FAILED),
    "settled_at": _or_null(NUMBER), "message": _or_null(STR), "rule": _or_null(STR),
    "results": _one_of("local", "cdn"),
    "extra": _or_null(_Expect(lambda v: isinstance(v, Mapping) and _plain(v), "an object (of finite numbers)")),
    "lost_answer": _or_null(STR),
}  # fmt: skip
# What Task.from_fields has no default for (finish_at may be null: it never finishes by time).
TASK_REQUIRED = {n for n, p in inspect.signature(Task).parameters.items() if p.default is p.empty} - {"plan"} | {
    f for f in Plan._fields if f not in Plan._field_defaults
}
NEXT_FIELDS = {
    "outcome": OUTCOME, "count": _Expect(lambda v: _integer(v, 1), f"an integer from 1 to {MAX_INT}"),
    "model_id": _or_null(STR), "key": _or_null(STR), "message": _or_null(STR),
}  # fmt: skip
NEXT_REQUIRED = {"outcome", "count"}


def _refuse(problem: str) -> NoReturn:
    raise ControlError(f"state is malformed: {problem}")


Where = tuple[object, ...]  # a place in a state, ("accounts", 2, "ledger", 5): made into words only for an error


def _place(where: Where) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).removeprefix(".")


def _check_object(where: Where, obj: object, fields: Mapping[str, _Expect], required: Collection[str]) -> None:
    """``obj`` must be an object with the ``required`` fields, each of ``fields`` as expected, and no other."""
    if not isinstance(obj, Mapping):
        _refuse(f"{_place(where)} must be an object, got {show(obj)}")
    for name, (ok, what) in fields.items():  # (a state may hold a million objects: no work unless wrong)
        if name in obj:
            if not ok(obj[name]):
                _refuse(f"{_place((*where, name))} must be {what}, got {show(obj[name])}")
        elif name in required:
            _refuse(f"{_place((*where, name))} is missing")
    if not obj.keys() <= fields.keys():
        name = next(name for name in obj if name not in fields)
        _refuse(f"unknown field {show(name)} in {_place(where) or 'the top level'}")


def _check_unique(where: Where, value: str, seen: dict[str, Where]) -> None:
    first = seen.setdefault(value, where)
    if first is not where:
        _refuse(f"{_place(where)} {show(value)} repeats {_place(first)}")


def check_state(state: Mapping[str, Any]) -> None:
    """Refuse (ControlError) a state that is not an export as ``export_state`` writes it: the message
    names the first field found wrong and what it must be. Unknown fields are refused, at every level."""
    version = state.get("version") if isinstance(state, Mapping) else None
    if type(version) is not int or version != STATE_VERSION:
        raise ControlError(f"state must be an export with version {STATE_VERSION}")
    _check_object((), state, STATE_FIELDS, STATE_REQUIRED)
    _check_object(("clock",), state["clock"], CLOCK_FIELDS, {"now"})
    keys: dict[str, Where] = {}
    for i, account in enumerate(state["accounts"]):
        _check_object(("accounts", i), account, ACCOUNT_FIELDS, ACCOUNT_REQUIRED)
        _check_unique(("accounts", i, "key"), account["key"], keys)
        for j, entry in enumerate(account["ledger"]):
            _check_object(("accounts", i, "ledger", j), entry, LEDGER_FIELDS, LEDGER_REQUIRED)
    task_ids: dict[str, Where] = {}
    for i, row in enumerate(state["tasks"]):
        _check_object(("tasks", i), row, TASK_CHECKS, TASK_REQUIRED)
        _check_unique(("tasks", i, "task_id"), row["task_id"], task_ids)
    if len(state.get("next", ())) > NEXT_LIMIT:
        _refuse(f"next has {len(state['next'])} entries, past the limit of {NEXT_LIMIT}")
    for i, entry in enumerate(state.get("next", ())):
        _check_object(("next", i), entry, NEXT_FIELDS, NEXT_REQUIRED)
