"""The emulated service: accounts, submits, polls, charges and refunds, driven by a scenario."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import string
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

from .clock import Clock, ManualClock, check_clock, make_clock
from .draws import Draws
from .errors import ApiError, ControlError, show
from .journal import Journal
from .models import FAILED, NEVER, SUCCEEDED, Account, Ledger, LedgerEntry, NextOutcome, Plan, Task, TasksAt, newest
from .scenario import ENVELOPES, KEY_RE, Behaviour, Fault, Match, ModelSpec, Scenario, parse_scenario
from .spec import DEFAULT_RATIO, FILES_PREFIX, KIND_RATIOS, REQUEST_ID_PREFIX, RESULT_EXT, Msg
from .store import NEXT_LIMIT, MemoryStore, Reserved, Store, StoreUnavailable, run_now

log = logging.getLogger("mockgen")
UNJOINED = "(not joined yet)"  # a Backend's generation until it has joined its shared store's world
ID_ALPHABET = string.ascii_lowercase + string.digits
# Random bytes -> id characters in one C call (rng.choices costs a Python call per character).
ID_BYTES = bytes(ord(ID_ALPHABET[b % len(ID_ALPHABET)]) for b in range(256))
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_BYTES = bytes(ord(KEY_ALPHABET[b % len(KEY_ALPHABET)]) for b in range(256))
URL_RE = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)
# The ratios a create may send for each kind, for one hash lookup per submit.
_RATIOS = {kind: frozenset(ratios) for kind, ratios in KIND_RATIOS.items()}


@dataclass(frozen=True, slots=True)
class Steering:
    """Per-request overrides sent as X-Mockgen-* headers."""

    outcome: str | None = None
    delay: float | None = None


NO_STEERING = Steering()


class Course:
    """What every submit for one model under one rule gets: the rule's name, the merged behaviour,
    the cost, and the plans its tasks share (a million tasks hold a handful of plans)."""

    __slots__ = ("model", "rule", "behaviour", "cost", "by_time", "_plans")

    def __init__(self, model: ModelSpec, rule: str | None, behaviour: Behaviour) -> None:
        self.model = model
        self.rule = rule
        self.behaviour = behaviour
        self.cost: int = model.cost if behaviour.cost is None else behaviour.cost
        self.by_time = (behaviour.progress or "time") == "time"  # finishes by the clock, not by polls or by hand
        self._plans: dict[tuple[str, str], Plan] = {}

    def plan(self, outcome: str, message: str) -> Plan:
        """The plan of a task with this outcome and failure message; shared unless it carries extra fields."""
        plan = self._plans.get((outcome, message))
        if plan is None:
            b = self.behaviour
            polls = b.polls or (1, 1)
            extra = dict(b.extra) if b.extra else None
            plan = Plan(
                self.model.model_id,  # the scenario's string, not one more copy per task
                self.model.task_type,
                self.cost,
                outcome,
                message,
                b.progress or "time",
                polls[0],
                polls[1],
                self.rule,
                b.results or "local",
                extra,
            )
            if extra is None and len(self._plans) < 64:  # messages come from the scenario or /_mock/next
                self._plans[(outcome, message)] = plan
        return plan


@dataclass(frozen=True, slots=True)
class Submit:
    """A validated create request."""

    model_id: str
    prompt: str
    aspect_ratio: str
    image_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Probe:
    """A create body that failed validation, as fault matching reads it: each field read leniently
    from the JSON object, None where it cannot be read (and a match key on it then does not match)."""

    model_id: str | None = None
    prompt: str | None = None
    aspect_ratio: str | None = None
    image_urls: tuple[object, ...] | None = None


NO_PROBE = Probe()  # a body that is not a JSON object: nothing can be read


def _key(raw: bytes) -> str:
    return "sk-" + raw.translate(KEY_BYTES).decode("ascii")


class Backend:
    """The whole emulated world's rules: the only door into it. Pure domain logic, no HTTP in here;
    everything of the world is in the Store, changed only through its atomic steps (store.py)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Clock | str | None = None,
        store: Store | None = None,
        envelope: str | None = None,
    ) -> None:
        self.clock_override = check_clock(clock)  # a Clock given is kept: reset and load never replace it
        if envelope is not None and envelope not in ENVELOPES:
            raise ValueError(f"envelope must be one of {', '.join(ENVELOPES)}, not {envelope!r}")
        self.envelope_override = envelope  # like the clock: a flag or MOCKGEN_ENVELOPE beats the scenario
        self.store: Store = store or MemoryStore()
        # The store keeps its journal for its whole life (``take`` and ``clear`` empty it in place):
        # a plain attribute, read by the journal middleware on every request.
        self.journal: Journal = self.store.journal
        # The world's number: one more each time a reset, a state load or a scenario swap replaces
        # the world. A request notes it when it authenticates, and a submit that finds another one
        # (it awaited its body or a fault's delay meanwhile) is told to retry: see ``submit``.
        self.world = 0
        self.generation = ""  # the world's generation this replica serves (see follow)
        self._use(scenario)
        if self.store.immediate:  # a store that never waits: the world is ready now
            run_now(self.reset())

    # --- setup ---------------------------------------------------------------------------------

    def _use(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.has_faults = bool(scenario.faults)  # read on every submit and poll: a plain attribute
        self.envelope = self.envelope_override or scenario.envelope
        self.compat = self.envelope == "compat"  # read on every answer of the contract's two routes
        self._courses: dict[tuple[str, int], Course] = {}  # see _course
        self._rule_scopes = [f"rule:{i}" for i in range(len(scenario.rules))]
        self.open_keys = scenario.auth_mode == "open"  # any well-formed key is an account (``_open_account``)
        # Which rules need a store step to match (a counter or a draw); with none, and none matching an
        # account's name, a create's course is known from its key and body alone, before any store step.
        self._rules_by_store = [r.match.counted or r.match.probability is not None for r in scenario.rules]
        self.pure_rules = not any(self._rules_by_store) and all(r.match.accounts is None for r in scenario.rules)

    async def load(self, scenario: Scenario) -> None:
        """Put ``scenario`` in force and go back to its starting state."""
        self.scenario = scenario
        await self.reset()

    async def reset(self) -> None:
        """Back to the scenario's starting state: a new world (``world`` moves on)."""
        await self._start(self._new_meta())

    def _new_meta(self) -> dict[str, Any]:
        """What another replica needs to serve a new world of the scenario as this one does (``follow``)."""
        s = self.scenario
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(8), "big")
        return {
            "generation": os.urandom(8).hex(), "seed": seed, "scenario": s.name, "source": s.source,
            "path": s.path, "envelope": self.envelope_override,
        }  # fmt: skip

    async def _start(self, meta: dict[str, Any]) -> None:
        """Start the world ``meta`` describes; its meta is written last, when the world is whole (the
        replicas that follow it, or wait for it to be ready, then find it whole)."""
        self.world += 1
        s = self.scenario
        self._use(s)
        self.seed = int(meta["seed"])
        self._faker: Any = None
        self.generation = meta["generation"]
        store = self.store
        await store.clear()
        await store.set_clock(make_clock(self.clock_override, s.clock, s.start_time))
        for spec in s.accounts:
            await store.add_account(Account(spec.key, spec.credits, spec.name))
        await store.set_meta(meta)

    async def open(self) -> None:
        """Join the world the store holds (a shared store that another replica started, or this one
        before a restart), or start it on the scenario when there is none. Joining changes nothing
        and draws nothing: only a reset or a scenario swap starts a world over. When the store does
        not answer (StoreUnavailable), the first request that reaches it later does this."""
        self.generation = UNJOINED  # (so the first answer of the store makes authenticate follow)
        meta = await self.store.get_meta()
        if meta is None:
            new = self._new_meta()
            # Two replicas starting at once: one claims the world and starts it, the other waits for it.
            if await self.store.set_meta({**new, "ready": False}, only_new=True):
                await self._start(new)
                return
            meta = await self._ready_meta()
        elif not meta.get("ready", True):  # claimed, and being started: joined once it is whole
            meta = await self._ready_meta()
        if meta.get("scenario") != self.scenario.name:
            log.warning(
                "joined the world in the store, which runs the scenario %r (not %r): "
                "PUT /_mock/scenario on any replica changes it for all",
                meta.get("scenario"),
                self.scenario.name,
            )
        self._adopt(meta)

    async def follow(self) -> None:
        """Serve the world's current generation: after a reset or a scenario swap through another
        replica of a shared store (the scenario in force comes from the store). A store that holds
        no world (a new one, or one that lost its data) gets the scenario's starting world."""
        meta = await self.store.get_meta()
        if meta is None:
            await self.reset()
        elif meta.get("generation") != self.generation and meta.get("ready", True):
            self._adopt(meta)

    async def _ready_meta(self, timeout: float = 10.0) -> dict[str, Any]:
        """The meta of a world another replica is starting, once it has started it (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            meta = await self.store.get_meta()
            late = time.monotonic() > deadline
            if meta is not None and (meta.get("ready", True) or late):
                return meta
            if late:
                raise StoreUnavailable(f"no world appeared in the store within {timeout:g} s")
            await asyncio.sleep(0.02)  # (another process's work: no clock of ours would move it)

    def _adopt(self, meta: dict[str, Any]) -> None:
        self.world += 1  # (submits authenticated in the old generation are told to retry)
        source = meta.get("source")
        if isinstance(source, str) and source != self.scenario.source:
            self._use(parse_scenario(source, meta.get("path") or "<the shared store's scenario>"))
        self.seed = int(meta["seed"])
        self._faker = None
        self.generation = str(meta.get("generation", ""))

    @property
    def clock(self) -> Clock:
        """The clock the world reads its time from."""
        return self.store.clock

    @property
    def shared(self) -> bool:
        """Whether the world is in a shared store (others may change it: ``open`` joins, ``follow`` keeps up)."""
        return not self.store.immediate

    async def close(self) -> None:
        """Let go of the store's connections (a later request opens new ones)."""
        await self.store.close()

    async def store_status(self) -> dict[str, Any]:
        """The store's kind and whether it answers: ``{"store": kind, "up": bool}`` (and why not). A
        shared store's world is followed first (``follow``): that one step shows whether it answers."""
        status: dict[str, Any] = {"store": self.store.kind, "up": True}
        try:
            await (self.follow() if self.shared else self.store.ping())
        except StoreUnavailable as exc:
            status.update(up=False, error=str(exc))
        return status

    @property
    def scenario_name(self) -> str:
        """The name of the scenario in force."""
        return self.scenario.name

    def has_model(self, model_id: str) -> bool:
        """Whether the scenario in force has this model."""
        return model_id in self.scenario.models

    @property
    def faker(self) -> Any:
        """A Faker of this scenario's own, seeded from it (imported only when first needed)."""
        if self._faker is None:
            from faker import Faker

            self._faker = Faker()
            self._faker.seed_instance(self.seed)
        return self._faker

    def now(self) -> float:
        return self.store.clock.now()

    async def draws(self) -> Draws:
        """Random draws of their own for one request: from the seed and the store's next number."""
        return Draws(self.seed, await self.store.next_seq())

    async def new_key(self) -> str:
        """A new key from the world's draws."""
        return _key((await self.draws()).bytes(32))

    async def ready_key(self) -> str:
        """A key a person can use right away: the first listed account, or else the world's own open
        key, drawn from number 0, which the sequence never hands out: so it is the same for every
        replica, and starting one (or asking again) never shifts the ids the world draws."""
        for account in await self.store.accounts():
            return account.key
        key = _key(Draws(self.seed, 0).bytes(32))
        with contextlib.suppress(ControlError):  # (409: another replica made it first, the same key)
            await self.create_account(self.scenario.default_credits, key)
        return key

    # --- auth ----------------------------------------------------------------------------------

    def key_of(self, authorization: str | None) -> str:
        """The key of an Authorization header (``Bearer sk-...``), or ApiError 401 (no store step)."""
        if not authorization:
            raise ApiError(Msg.NO_AUTH, code=401, status=401)
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise ApiError(Msg.BAD_SCHEME, code=401, status=401)
        key = key.strip()
        if not KEY_RE.fullmatch(key):
            raise ApiError(Msg.BAD_KEY, code=401, status=401)
        return key

    async def authenticate(self, authorization: str | None) -> Account:
        """The account behind an Authorization header, or ApiError 401."""
        return await self.account_of(self.key_of(authorization))

    async def account_of(self, key: str) -> Account:
        """The account of a well-formed key, or ApiError 401."""
        # Found by the key's hash (SipHash, keyed per process), so a wrong key is never compared
        # character by character with a stored one: refusing it takes the same time whatever it shares.
        store = self.store
        account = await store.get_account(key)
        if store.generation != self.generation:  # a shared store's world was reset or swapped elsewhere
            await self.follow()
            account = await store.get_account(key)  # (as the world it follows has it)
        account = account or self._open_account(key)  # (not stored: see _keep)
        if account is None:
            raise ApiError(Msg.UNKNOWN_KEY, code=401, status=401)
        return account

    def _open_account(self, key: str) -> Account | None:
        """In open mode, the account a well-formed new key gets: default credits, and not stored
        (looking, polling or a refused submit creates nothing). It is stored at its first charge
        (``submit``) or top-up (``_keep``)."""
        if self.open_keys and KEY_RE.fullmatch(key):
            return Account(key, self.scenario.default_credits, stored=False)
        return None

    async def _keep(self, account: Account, control: bool = False) -> Account:
        """The stored account of a new key: ``account`` itself, stored now, unless another request
        stored one first. Past the store's ``max_accounts`` a new key is refused (ApiError, or ControlError 409
        for the control API) rather than an old account dropped: that would lose a balance silently."""
        kept = await self.store.add_account(account)
        if kept is None:
            msg = Msg.TOO_MANY_ACCOUNTS.format(limit=self.store.max_accounts)
            raise ControlError(msg, 409) if control else ApiError(msg)
        return kept

    # --- the public contract -------------------------------------------------------------------

    def validate(self, body: object) -> Submit:
        """Check a create body; ApiError (code 0) names the first thing to fix."""
        if not isinstance(body, dict):
            kind = "null" if body is None else type(body).__name__.replace("dict", "object")
            raise ApiError(Msg.NOT_OBJECT.format(kind={"list": "an array", "str": "a string"}.get(kind, kind)))
        scenario = self.scenario
        models = scenario.models
        model_id = body.get("model_id")
        model = models.get(model_id) if isinstance(model_id, str) else None
        if model is None:
            if model_id is None or model_id == "":
                raise ApiError(Msg.NO_MODEL.format(models=", ".join(models)))
            raise ApiError(Msg.BAD_MODEL.format(value=show(model_id), models=", ".join(models)))
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt or prompt.isspace():
            raise ApiError(Msg.NO_PROMPT)
        limits = scenario.limits
        if len(prompt) > limits.max_prompt_length:
            raise ApiError(Msg.LONG_PROMPT.format(length=len(prompt), limit=limits.max_prompt_length))
        ratio = body.get("aspect_ratio")
        if ratio is None:
            ratio = DEFAULT_RATIO[model.task_type]
        elif not isinstance(ratio, str) or ratio not in _RATIOS[model.task_type]:
            ratios = ", ".join(KIND_RATIOS[model.task_type])
            raise ApiError(Msg.BAD_RATIO.format(value=show(ratio), ratios=ratios))
        urls = body.get("image_urls")
        if urls is None or urls == []:
            return Submit(model.model_id, prompt, ratio, ())
        if not isinstance(urls, list):
            raise ApiError(Msg.BAD_IMAGES.format(detail=f"got {show(urls)}"))
        if len(urls) > limits.max_image_urls:
            detail = f"at most {limits.max_image_urls} are allowed, got {len(urls)}"
            raise ApiError(Msg.BAD_IMAGES.format(detail=detail))
        for i, url in enumerate(urls):
            if not isinstance(url, str) or len(url) > 2048 or not URL_RE.fullmatch(url):
                raise ApiError(Msg.BAD_IMAGES.format(detail=f"item {i} is {show(url)}"))
        return Submit(model.model_id, prompt, ratio, tuple(urls))

    def probe(self, body: object) -> Probe:
        """What fault matching can read of a create body that failed validation (see ``Probe``).

        A string field is read as sent; an absent ``aspect_ratio`` is the known model's default;
        absent or empty ``image_urls`` is no images, a list is images, anything else unreadable.
        """
        if not isinstance(body, dict):
            return NO_PROBE
        model_id, prompt, ratio, urls = (body.get(k) for k in ("model_id", "prompt", "aspect_ratio", "image_urls"))
        model = self.scenario.models.get(model_id) if isinstance(model_id, str) else None
        if ratio is None and model is not None:
            ratio = DEFAULT_RATIO[model.task_type]
        return Probe(
            model_id if isinstance(model_id, str) else None,
            prompt if isinstance(prompt, str) else None,
            ratio if isinstance(ratio, str) else None,
            () if urls is None else tuple(urls) if isinstance(urls, list) else None,
        )

    async def create(self, key: str, body: object, world: int | None = None) -> Task:
        """A create on the hot path (no faults, no steering; ``key`` well-formed): the body checked, then
        one store step authenticates the key, settles what is due and reserves (one round trip on
        Redis), and one more charges and keeps the task. Anything unusual goes the way of ``submit``.
        ``world``: ``self.world`` when the request began (a world replaced since: Msg.RESET, as ``submit``)."""
        if world is not None and world != self.world:
            raise ApiError(Msg.RESET)
        try:
            req = self.validate(body)
        except ApiError:
            await self.account_of(key)  # an unknown key is told so before what its body lacks
            raise
        if self.pure_rules:  # the course needs no store step and no account's name: known before any
            course = await self.course_for(key, None, req)
            if not course.behaviour.reject:
                reserved = await self.store.reserve(key, req.model_id, course.cost, self.generation)
                if reserved is not None and reserved.account is not None:
                    return await self._keep_task(reserved, req, course)
        # A reject (told once the key is known), another generation (followed), no stored account
        # (401, or an open key's first charge), or rules that count or draw: the general way.
        return await self.submit(await self.account_of(key), body)

    async def submit(
        self,
        account: Account,
        body: object,
        steering: Steering = NO_STEERING,
        lost_answer: str | None = None,
        world: int | None = None,
    ) -> Task:
        """Create a task: validate (unless given a Submit), apply the scenario, charge, schedule.

        Nothing is charged on error. ``lost_answer`` names the fault that will lose the answer
        (the task is marked with it). ``world`` is ``self.world`` when ``account`` was authenticated:
        if a reset, a state load or a scenario swap has replaced the world since, the submit gets
        code 0 "retry" (Msg.RESET), and nothing of the old world (its account, its validated body,
        its fault) is charged to the new one.
        """
        if world is not None and world != self.world:
            raise ApiError(Msg.RESET)
        req = body if isinstance(body, Submit) else self.validate(body)
        course = await self.course_for(account.key, account.name, req)
        behaviour = course.behaviour
        if behaviour.reject:
            raise ApiError(behaviour.reject)
        cost = course.cost
        store = self.store
        if account.stored:  # settling, the balance, room, the number and a queued outcome: one store step
            reserved = await store.reserve(account.key, req.model_id, cost, self.generation)
            if reserved is None or reserved.account is None:  # the world was replaced meanwhile, elsewhere
                raise ApiError(Msg.RESET)
        else:  # an open key's first charge: its account is stored once there is room, before anything is used
            if account.credits < cost:
                raise ApiError(Msg.NO_CREDITS.format(cost=cost, balance=account.credits))
            now = store.clock.now()
            await self.settle(now)
            room, seq, queued = await store.make_room(), 0, None
            if room:
                account = await self._keep(account)
                seq, queued = await store.next_seq(), await store.take_next(req.model_id, account.key)
            reserved = Reserved(account, now, seq, queued, room)
        return await self._keep_task(reserved, req, course, steering, lost_answer)

    async def _keep_task(
        self,
        reserved: Reserved,
        req: Submit,
        course: Course,
        steering: Steering = NO_STEERING,
        lost_answer: str | None = None,
    ) -> Task:
        """The task a reserved number draws, charged and kept (ApiError when it cannot be)."""
        account, now, seq, queued, room = reserved
        assert account is not None
        cost = course.cost
        if not seq:  # refusals come before anything is used up (a queued outcome, a number of the sequence)
            if not room:
                raise ApiError(Msg.TOO_MANY_TASKS.format(limit=await self.store.task_count()))
            raise ApiError(Msg.NO_CREDITS.format(cost=cost, balance=account.credits))
        behaviour = course.behaviour
        draws = Draws(self.seed, seq)
        ids = draws.bytes(24)
        queued_for = behaviour.queued.sample(draws)  # type: ignore[union-attr]
        running_for = behaviour.running.sample(draws)  # type: ignore[union-attr]
        outcome = behaviour.outcome.pick(draws)  # type: ignore[union-attr]
        message = behaviour.failure_message or ""
        if queued is not None:
            outcome, message = queued.outcome, queued.message or message
        if steering is not NO_STEERING:
            if steering.outcome:
                outcome = steering.outcome
            if steering.delay is not None:
                queued_for = min(queued_for, steering.delay)
                running_for = steering.delay - queued_for
        plan = course.plan(outcome, message)
        if lost_answer is not None:
            plan = plan._replace(lost_answer=lost_answer)
        aspect_ratio = sys.intern(req.aspect_ratio)  # one of a few validated values: share them
        finish_at = now + queued_for + running_for if course.by_time else NEVER
        store = self.store
        while True:
            chars = ids.translate(ID_BYTES).decode("ascii")
            task = Task(
                plan, chars[:12], account.key, req.prompt, aspect_ratio, req.image_urls, now,
                REQUEST_ID_PREFIX + chars[12:], now + queued_for, finish_at,
            )  # fmt: skip
            charged = await store.submit(task)
            if charged is not None:
                break
            ids = (await self.draws()).bytes(24)  # the id is taken (a seeded world after a state load): another
        if not charged:
            balance = (await store.get_account(account.key) or account).credits
            raise ApiError(Msg.NO_CREDITS.format(cost=cost, balance=balance))
        return task

    async def poll(self, key: str, task_id: str) -> Task:
        """A poll on the hot path (no faults, no steering; ``key`` well-formed): one store step
        authenticates the key, settles what is due, reads the task and counts the poll."""
        got = await self.store.poll(task_id, key, self.generation, self.open_keys)
        if got is None:  # the world's generation moved on elsewhere: follow it, the general way
            return await self.query(await self.account_of(key), task_id)
        account, task = got
        if account is None and self._open_account(key) is None:
            raise ApiError(Msg.UNKNOWN_KEY, code=401, status=401)
        return await self._polled(task, task_id)

    async def query(self, account: Account, task_id: str) -> Task:
        """A task of this account, brought up to date; another account's task is 'not found'."""
        got = await self.store.poll(task_id, account.key, None, True)
        return await self._polled(got[1] if got else None, task_id)

    async def _polled(self, task: Task | None, task_id: str) -> Task:
        """The polled task (ApiError when not found), finished when this was the poll it waited for."""
        if task is None:
            raise ApiError(Msg.NOT_FOUND.format(task_id=show(task_id[:64])))
        plan = task.plan
        if not task.final_status and plan.progress == "polls" and task.polls >= task.polls_to_finish:
            await self.finish(task, plan.outcome, self.now())
            task = await self.store.get_task(task_id) or task
        return task

    # --- the scenario's rules ------------------------------------------------------------------

    async def matches(self, match: Match, key: str, name: str | None, req: Submit | Probe | None, scope: str) -> bool:
        """Whether a request of the account ``key`` (named ``name``) meets ``match``; counters advance
        for requests meeting the rest.

        ``req`` is None for a request that is not a create: then no request key matches."""
        return self._meets(match, key, name, req) and await self._counted_and_drawn(match, key, scope)

    async def _counted_and_drawn(self, match: Match, key: str, scope: str) -> bool:
        """``matches``'s store steps, for a request that meets the rest: its counter, then its draw."""
        if match.counted:
            n = await self.store.count(scope, key if match.count_per == "key" else "")
            if match.first_n is not None and n > match.first_n:
                return False
            if match.after_n is not None and n <= match.after_n:
                return False
            if match.every_nth is not None and n % match.every_nth:
                return False
        return match.probability is None or (await self.draws()).random() < match.probability

    @staticmethod
    def _meets(match: Match, key: str, name: str | None, req: Submit | Probe | None) -> bool:
        """``matches`` without its counters and its draw: the request's own fields, no store step."""
        if match.keys is not None and key not in match.keys:
            return False
        if match.accounts is not None and name not in match.accounts:
            return False
        if match.on_body:
            if req is None:
                return False
            if match.model_ids is not None and req.model_id not in match.model_ids:
                return False
            if match.prompt_contains is not None:
                prompt = req.prompt
                if prompt is None:
                    return False
                for part in match.prompt_contains:
                    if part in prompt:
                        break
                else:
                    return False
            if match.prompt_regex is not None and (req.prompt is None or not match.prompt_regex.search(req.prompt)):
                return False
            if match.aspect_ratios is not None and req.aspect_ratio not in match.aspect_ratios:
                return False
            if match.has_images is not None and (req.image_urls is None or bool(req.image_urls) != match.has_images):
                return False
        return True

    async def course_for(self, key: str, name: str | None, req: Submit) -> Course:
        """What a submit of the account ``key`` (named ``name``) gets: the course of its model under the
        first matching rule (or none)."""
        meets, by_store = self._meets, self._rules_by_store
        for i, rule in enumerate(self.scenario.rules):
            match = rule.match
            # (a rule that neither counts nor draws is matched without a coroutine: the hot path's)
            if meets(match, key, name, req) and (
                not by_store[i] or await self._counted_and_drawn(match, key, self._rule_scopes[i])
            ):
                return self._course(req.model_id, i)
        return self._course(req.model_id, -1)

    def _course(self, model_id: str, rule_index: int) -> Course:
        """The course for a model under a rule (-1: none), merged once per scenario and kept."""
        course = self._courses.get((model_id, rule_index))
        if course is None:
            model = self.scenario.models[model_id]
            merged = self.scenario.defaults
            if model.queued or model.running:
                merged = replace(merged, queued=model.queued or merged.queued, running=model.running or merged.running)
            rule = None
            if rule_index >= 0:
                rule = self.scenario.rules[rule_index]
                fields = Behaviour.__slots__  # type: ignore[attr-defined]
                given = rule.behaviour
                merged = replace(merged, **{f: getattr(given, f) for f in fields if getattr(given, f) is not None})
            course = self._courses[(model_id, rule_index)] = Course(model, rule.name if rule else None, merged)
        return course

    async def fault_for(self, route: str, account: Account | None, req: Submit | Probe | None = None) -> Fault | None:
        """The first scenario fault that applies to this request, if any. Faults come before
        validation: a create that will be refused is matched by ``probe(body)``, and counted."""
        for i, fault in enumerate(self.scenario.faults):
            if fault.match.route not in ("any", route):
                continue
            if account is None:
                if fault.match.keys or fault.match.accounts or fault.match.counted:
                    continue
                account = Account("", 0)
            scope = f"fault:{i}"
            if await self.matches(fault.match, account.key, account.name, req, scope):
                rl = fault.rate_limit
                if rl is not None and await self.store.take_token(
                    scope, account.key, rl.burst, rl.limit / rl.per_seconds, self.now()
                ):
                    continue  # a token was there: the request may pass
                return fault
        return None

    async def latency(self, fault: Fault) -> float:
        """Seconds a fault holds its request (0: it has no latency), drawn from the world's random draws."""
        return 0.0 if fault.latency is None else fault.latency.sample(await self.draws())

    def retry_after(self, fault: Fault, account: Account | None) -> int:
        """Seconds a client should wait: the fault's own, or until the bucket has a token."""
        if fault.retry_after is not None:
            return fault.retry_after
        if fault.rate_limit is not None:
            rl = fault.rate_limit
            return max(1, int(rl.per_seconds / rl.limit + 0.999))
        return 1

    async def queue_next(self, entry: NextOutcome) -> int:
        """Queue an outcome for the next matching submits; ControlError 409 past NEXT_LIMIT entries.
        Returns how many entries the queue holds now."""
        length = await self.store.queue_next(entry)
        if length is None:
            raise ControlError(Msg.NEXT_FULL.format(limit=NEXT_LIMIT), 409)
        return length

    async def queued_next(self, limit: int | None = None) -> list[NextOutcome]:
        """The queued outcomes, oldest first (only the newest ``limit``: ``limit``)."""
        return await self.store.queued(limit)

    async def clear_next(self) -> None:
        await self.store.clear_next()

    # --- time and settlement -------------------------------------------------------------------

    async def settle(self, now: float | None = None) -> int:
        """Finish every time-driven task that is due by ``now`` (refunding failures). Returns how many."""
        store = self.store
        return await store.settle(store.clock.now() if now is None else now)

    async def finish(self, task: Task, outcome: str, at: float, message: str | None = None) -> bool:
        """Settle a task once (False: it had finished); a failure is refunded its charge at that moment."""
        if outcome == "success":
            return await self.store.finish(task.task_id, SUCCEEDED, at)
        return await self.store.finish(task.task_id, FAILED, at, message or task.failure_message)

    async def advance(self, seconds: float) -> float:
        if self.clock.kind != "manual":
            raise ControlError("the clock is real; start with --clock manual (or clock: manual) to move it", 409)
        now = await self.store.advance_clock(seconds)
        await self.settle(now)
        return now

    async def resolve(self, task_id: str, outcome: str, message: str | None = None) -> Task:
        task = await self.task_for_control(task_id)
        if task.final_status or not await self.finish(task, outcome, self.now(), message):
            task = await self.task_for_control(task_id)
            raise ControlError(f"task {task_id} already finished with status {task.final_status}", 409)
        return await self.task_for_control(task_id)

    async def install(self, staged: Store, now: float) -> None:
        """Put a world built aside in force, in one step: no request sees half of it.
        ``staged`` is left holding the old world (for the caller to release)."""
        self.world += 1  # a new world: submits authenticated in the old one are told to retry
        await self.store.take(staged)
        clock = self.clock
        if isinstance(clock, ManualClock):
            clock.set(now)
            await self.store.set_clock(clock)  # (the same clock: a shared store shares its time)
        await self.settle()

    # --- reading the world (control, result files) -----------------------------------------------

    async def task_for_control(self, task_id: str) -> Task:
        """Any account's task, brought up to date; ControlError 404 when there is none."""
        await self.settle()
        task = await self.store.get_task(task_id)
        if task is None:
            raise ControlError(Msg.NO_TASK.format(task_id=task_id), 404)
        return task

    async def tasks_page(self, key: str | None = None, limit: int | None = None) -> tuple[TasksAt, int]:
        """The newest ``limit`` tasks (all: None) of ``key`` (any: None) as they are now, with their
        accounts, and how many there are in all."""
        await self.settle()
        store = self.store
        tasks = [t for t in await store.tasks() if key in (None, t.key)]
        accounts = {a.key: a for a in await store.accounts()}
        return TasksAt(newest(tasks, limit), accounts.get), len(tasks)

    async def accounts_page(self, limit: int | None = None) -> tuple[list[Account], int]:
        """The newest ``limit`` accounts (all: None), balances brought up to date, and how many there are."""
        await self.settle()
        return await self.store.accounts(limit), await self.store.account_count()

    async def ledger(self, key: str) -> Ledger:
        """A copy of an account's ledger as it is now, oldest first (empty: no stored account)."""
        return await self.store.ledger(key)

    async def task_account(self, task: Task) -> Account | None:
        """The stored account a task was charged to (None: not stored, or gone)."""
        return await self.store.get_account(task.key)

    async def result_task(self, task_id: str, ext: str) -> Task | None:
        """The succeeded task whose result file is ``{task_id}.{ext}`` (mp4 for a video, png for an
        image); None when there is no such file."""
        await self.settle()
        task = await self.store.get_task(task_id)
        if task is None or task.final_status != SUCCEEDED or ext != RESULT_EXT[task.task_type]:
            return None
        return task

    # --- accounts (control) --------------------------------------------------------------------

    async def create_account(self, credits: int, key: str | None = None, name: str | None = None) -> Account:
        if key is None:
            key = await self.new_key()
        elif not KEY_RE.fullmatch(key):
            raise ControlError("key must be 'sk-' followed by 32 letters or digits")
        if await self.store.get_account(key) is not None:
            raise ControlError(f"an account with key {key} already exists", 409)
        # Stored with its credits and their top-up entry in one step: two replicas making the same key at
        # once (the banner's) store it once, and credit it once.
        ledger = Ledger([LedgerEntry("topup", credits, self.now())] if credits else [])
        account = await self._keep(Account(key, credits, name, ledger), control=True)
        return await self.store.get_account(key) or account

    async def account(self, key: str, create: bool = False) -> Account:
        """An account for the control API; in open mode an unseen key shows its starting balance
        (and with ``create`` has it stored)."""
        await self.settle()
        account = await self.store.get_account(key) or self._open_account(key)
        if account is None:
            raise ControlError(f"no account with key {key!r}", 404)
        if create and not account.stored:
            account = await self._keep(account, control=True)
        return account

    async def topup(self, key: str, delta: int) -> Account:
        await self.account(key, create=True)
        await self.store.credit(key, delta, self.now(), "topup")
        account = await self.store.get_account(key)
        assert account is not None
        return account

    # --- where results are ---------------------------------------------------------------------

    def result_url(self, task: Task, base_url: str) -> str:
        """Where a succeeded task's file is: this server's /files/, or the scenario's CDN."""
        task_type = task.plan.task_type
        ext = RESULT_EXT[task_type]
        if task.plan.results == "cdn":
            base = self.scenario.cdn_base or f"https://cdn.{self.faker.domain_name()}"
            return f"{base.rstrip('/')}/{task_type}s/{task.task_id}.{ext}"
        return f"{base_url.rstrip('/')}{FILES_PREFIX}{task.task_id}.{ext}"
