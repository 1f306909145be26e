"""Random sequences of public and control calls, in-process on the manual clock (Hypothesis, stateful).

After every step: no answer was a 500, every answer had the shape the README documents, and each
account's balance is its opening balance plus its ledger's top-ups, minus its charges, plus its
refunds, never below zero, with no task refunded twice. At the end of each run the world exports,
loads back and exports again identically (what ``--state-file`` relies on).
"""

from __future__ import annotations

import asyncio
import json
import string
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule

from mockgen import create_app
from mockgen.api import POLL_KEYS
from mockgen.app import load_state_file, save_state_file
from mockgen.scenario import Scenario, load_bundled
from mockgen.state import export_state, state_at
from mockgen.store import run_now

from .conftest import JSON, KEY, OTHER_KEY, Client

# flaky is left out: its latencies are real time (asyncio.sleep), which the manual clock does not move.
SCENARIOS = ["default", "ci", "low-balance", "refund-demo", "video-slow", "lost-answers"]
LISTED = sorted({a.key for name in SCENARIOS for a in load_bundled(name).accounts})
KEYS = [KEY, OTHER_KEY, *LISTED]
PROMPTS = ["a cat", "a cat [fail]", "[reject] a dog", "slow [slow]", "lone \ud800 surrogate", "", "  ", "x" * 4001]
CONTENT_TYPES = {"content-type": "application/json"}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
PICKS = st.sampled_from(range(11))  # see World.model
TASK_ID_CHARS = string.ascii_lowercase + string.digits


def _by_kind(ledger: list[dict[str, Any]], kind: str) -> int:
    return sum(e["amount"] for e in ledger if e["kind"] == kind)


@seed(20261201)  # the same sequences on every run, here and in CI (derandomize=True skews the draws)
class World(RuleBasedStateMachine):
    """A model of what the client knows: each account's opening balance, the scenario in force, and
    the last export (with the model as it was then, to go back to when that export is loaded)."""

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.app = create_app("default", clock="manual")
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=10)
        self.scenario: Scenario = load_bundled("default")
        self.opening: dict[str, int] = {}
        self.snapshot: tuple[Any, dict[str, int]] | None = None
        self.seen: Counter[int] = Counter()

    def teardown(self) -> None:
        try:
            first = self.export()
            json.dumps(first, ensure_ascii=True, allow_nan=False)  # as the state file is written
            assert self.call("PUT", "/_mock/state", json=first).status_code == 200
            assert self.export() == first
            listed = self.control("GET", "/_mock/accounts", (200,))
            assert listed == [{k: a[k] for k in ("key", "name", "credits")} for a in first["accounts"]]
            for account in first["accounts"]:
                assert self.control("GET", f"/_mock/accounts/{account['key']}", (200,)) == account
        finally:
            self.loop.run_until_complete(self.client.aclose())
            self.loop.close()

    # --- plumbing ----------------------------------------------------------------------------------

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if method != "GET":
            kwargs["headers"] = {**JSON, **kwargs.get("headers", {})}
        if "json" in kwargs:  # escaped as ASCII: a lone surrogate has no UTF-8 form (httpx would raise)
            kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
        r = self.loop.run_until_complete(self.client.request(method, url, **kwargs))
        self.seen[r.status_code] += 1
        assert r.status_code != 500 or "x-mockgen-fault" in r.headers, r.text  # (an injected 500 is an answer)
        return r

    def control(self, method: str, url: str, statuses: tuple[int, ...], **kwargs: Any) -> Any:
        """A control call: one of ``statuses``; a 4xx is ``{"error": "..."}`` (422: the scenario's issues)."""
        r = self.call(method, url, **kwargs)
        assert r.status_code in statuses, (r.status_code, r.text)
        body = r.json()
        if r.status_code >= 400:
            assert isinstance(body.get("error"), str) and (r.status_code == 422 or set(body) == {"error"}), body
        return body

    def public(self, r: httpx.Response) -> dict[str, Any] | None:
        """The contract's envelope, checked; None for an answer a lose-answer fault cut short."""
        fault = r.headers.get("x-mockgen-fault")
        if fault is not None and r.status_code == 200:
            return None  # cut mid-answer: the client sees an incomplete body
        assert r.headers["content-type"] == "application/json", r.headers
        body = r.json()
        assert set(body) == {"code", "msg", "data"} and isinstance(body["msg"], str), body
        if fault is not None:
            assert r.status_code in (500, 502, 503, 504) and body["code"] == r.status_code, body
            return None
        assert r.status_code == (200 if body["code"] in (0, 200) else body["code"]), (r.status_code, body)
        assert body["code"] in (200, 0, 401, 404, 405, 413), body
        if body["code"] != 200:
            assert body["data"] is None and body["msg"], body
        return body

    def opened(self, key: str) -> None:
        """A key used on the public API (or topped up) in open mode starts at the default credits."""
        if self.scenario.auth_mode == "open":
            self.opening.setdefault(key, self.scenario.default_credits)

    def export(self) -> Any:
        return self.control("GET", "/_mock/state", (200,))

    def new_world(self) -> None:
        self.opening = {a.key: a.credits for a in self.scenario.accounts}

    # --- the public contract -----------------------------------------------------------------------

    def model(self, pick: int) -> str:
        """A model of the scenario in force (most picks), or one it does not have."""
        models = list(self.scenario.models)
        return models[pick % len(models)] if pick < 8 else ("", "no-such-model", "GPT-IMAGE-2")[pick - 8]

    def create(self, key: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """A create; its (key, task id) when it made a task."""
        self.opened(key)
        headers = {"Authorization": f"Bearer {key}", **(headers or {})}
        answer = self.public(self.call("POST", "/api/v1/tasks/create", json=body, headers=headers))
        if answer is None or answer["code"] != 200:
            return multiple()
        data = answer["data"]
        assert set(data) == {"task_id", "request_id", "credits"} and data["request_id"].startswith("kie_"), data
        return (key, data["task_id"])

    @rule(target=tasks, key=st.sampled_from(KEYS), pick=st.integers(0, 7), prompt=st.sampled_from(PROMPTS[:5]))
    def submit(self, key: str, pick: int, prompt: str) -> Any:
        return self.create(key, {"model_id": self.model(pick), "prompt": prompt})

    @rule(
        target=tasks,
        key=st.sampled_from(KEYS),
        pick=PICKS,
        prompt=st.sampled_from(PROMPTS) | st.text(max_size=12),
        extra=st.fixed_dictionaries(
            {},
            optional={
                "aspect_ratio": st.sampled_from(["16:9", "1:1", "2:1", 3]),
                "image_urls": st.sampled_from([["https://example.com/a.png"], [], ["ftp://x"], "nope"]),
                "more": JSON_VALUES,
            },
        ),
        outcome=st.sampled_from([None, "success", "failed", "maybe"]),
        delay=st.sampled_from([None, "0", "2.5", "90000", "soon"]),
    )
    def submit_unusual(
        self, key: str, pick: int, prompt: str, extra: dict[str, Any], outcome: str | None, delay: str | None
    ) -> Any:
        headers = {}
        if outcome is not None:
            headers["X-Mockgen-Outcome"] = outcome
        if delay is not None:
            headers["X-Mockgen-Delay"] = delay
        return self.create(key, {"model_id": self.model(pick), "prompt": prompt, **extra}, headers)

    @rule(key=st.sampled_from([*KEYS, "sk-short", ""]), body=JSON_VALUES | st.binary(max_size=40))
    def submit_anything(self, key: str, body: Any) -> None:
        self.opened(key)
        headers = {"Authorization": f"Bearer {key}", **CONTENT_TYPES}
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        self.public(self.call("POST", "/api/v1/tasks/create", headers=headers, **kwargs))

    def _poll(self, key: str, task_id: str) -> None:
        self.opened(key)
        url = "/api/v1/tasks/" + quote(task_id, safe="")
        answer = self.public(self.call("GET", url, headers={"Authorization": f"Bearer {key}"}))
        if answer is not None and answer["code"] == 200:
            assert tuple(answer["data"]) == POLL_KEYS and answer["data"]["task_id"] == task_id, answer
            assert answer["data"]["task_status"] in (1, 2, 3, 4), answer

    @rule(task=tasks, other=st.booleans())
    def poll(self, task: tuple[str, str], other: bool) -> None:
        key, task_id = task
        self._poll(OTHER_KEY if other and key != OTHER_KEY else key, task_id)

    @rule(key=st.sampled_from(KEYS), task_id=st.text(TASK_ID_CHARS, min_size=1, max_size=14) | st.text(max_size=6))
    def poll_unknown(self, key: str, task_id: str) -> None:
        if task_id.strip() and task_id not in (".", ".."):
            self._poll(key, task_id)

    # --- the control API ---------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.25, 1, 2, 5, 60, 3600, 0]) | st.floats(0, 1e4))
    def advance(self, seconds: float) -> None:
        answer = self.control("POST", "/_mock/clock/advance", (200,), json={"seconds": seconds})
        assert set(answer) == {"now"} and isinstance(answer["now"], float | int), answer

    @rule(task=tasks, outcome=st.sampled_from(["success", "failed"]), msg=st.none() | st.text(max_size=10))
    def resolve(self, task: tuple[str, str], outcome: str, msg: str | None) -> None:
        body = {"outcome": outcome} if msg is None else {"outcome": outcome, "msg": msg}
        self.control("POST", f"/_mock/tasks/{task[1]}/resolve", (200, 404, 409), json=body)

    @rule(key=st.sampled_from(KEYS), delta=st.integers(-2000, 2000) | st.sampled_from([2**53, -(2**60), 0.5]))
    def top_up(self, key: str, delta: int | float) -> None:
        known = self.scenario.auth_mode == "open" or key in self.opening
        answer = self.control("POST", f"/_mock/accounts/{key}/credits", (200, 400, 404, 409), json={"delta": delta})
        if "error" not in answer:
            assert known and answer["key"] == key and set(answer) == {"key", "name", "credits", "ledger"}, answer
            self.opened(key)

    @rule(
        key=st.sampled_from([None, None, *KEYS, "sk-bad"]),  # (an existing key: 409, a bad one: 400)
        credits=st.integers(0, 5000),
        name=st.sampled_from([None, "alice", "lone \udfff", "é", ""]),
    )
    def create_account(self, key: str | None, credits: int, name: str | None) -> None:
        body: dict[str, Any] = {"credits": credits}
        if key is not None:
            body["key"] = key
        if name is not None:
            body["name"] = name
        answer = self.control("POST", "/_mock/accounts", (201, 400, 409), json=body)
        if "error" not in answer:
            assert answer["credits"] == credits and answer["name"] == name, answer
            self.opening[answer["key"]] = 0  # its credits are a top-up in its ledger

    @rule(
        outcome=st.sampled_from(["failed", "success", "other"]),
        count=st.integers(1, 3) | st.just(0),
        pick=st.none() | PICKS,
        key=st.sampled_from([None, *KEYS]),
    )
    def queue_next(self, outcome: str, count: int, pick: int | None, key: str | None) -> None:
        model_id = None if pick is None else self.model(pick)
        body = {"outcome": outcome, "count": count, "model_id": model_id, "key": key, "msg": "queued \ud83d"}
        self.control("POST", "/_mock/next", (201, 400), json=body)

    @rule(how=st.sampled_from(["reset", "swap", "save", "restore", "edit"]), name=st.sampled_from(SCENARIOS))
    def replace(self, how: str, name: str) -> None:
        """Replace the world (reset, another scenario, a saved state), or save it."""
        if how == "reset":
            answer = self.control("POST", "/_mock/reset", (200,))
            assert answer["reset"] is True and answer["scenario"] == self.scenario.name, answer
            self.new_world()
        elif how == "swap":
            answer = self.control("PUT", "/_mock/scenario", (200,), json={"name": name})
            assert answer == {"name": name, "loaded": True}, answer
            self.scenario = load_bundled(name)
            self.new_world()
        elif how == "save":
            self.snapshot = (self.export(), dict(self.opening))
        elif how == "restore" and self.snapshot is not None:
            state, opening = self.snapshot
            self.control("PUT", "/_mock/state", (200,), json=state)
            self.opening = dict(opening)
            self.loaded(state)

    @rule(path=st.sampled_from(["version", "accounts", "tasks", "clock", "next", "extra"]), value=JSON_VALUES)
    def restore_edited(self, path: str, value: Any) -> None:
        """An export with one field replaced: refused whole (the world stays as it was), or loaded."""
        before = self.export()
        state = {**before, path: value}
        answer = self.control("PUT", "/_mock/state", (200, 400), json=state)
        if "error" in answer:
            assert self.export() == before
        else:
            self.loaded(state)

    def loaded(self, state: Any) -> None:
        """After a state load: the accounts are the state's (with their opening balances as they were)."""
        keys = {a["key"] for a in state["accounts"]}
        self.opening = {k: v for k, v in self.opening.items() if k in keys}

    @initialize()
    def start(self) -> None:
        self.new_world()

    # --- what always holds -------------------------------------------------------------------------

    @invariant()
    def balances_follow_the_ledgers(self) -> None:
        """Checked on the export (every account's balance and ledger in one request); the teardown
        checks that each account's own view says the same."""
        refunded: Counter[str] = Counter()
        for account in self.export()["accounts"]:
            ledger = account["ledger"]
            assert account["key"] in self.opening, (account, self.opening)
            opening = self.opening[account["key"]]
            expected = opening + _by_kind(ledger, "topup") - _by_kind(ledger, "charge") + _by_kind(ledger, "refund")
            assert account["credits"] == expected >= 0, (account, opening)
            charges = {e["task_id"]: e["amount"] for e in ledger if e["kind"] == "charge"}
            for e in ledger:
                if e["kind"] == "refund":
                    refunded[e["task_id"]] += 1
                    assert charges.get(e["task_id"]) == e["amount"], (e, charges)
        assert all(n == 1 for n in refunded.values()), refunded


World.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_random_sequences_of_calls_keep_the_money_and_never_answer_500 = World.TestCase


def _send(client: Client, method: str, url: str, body: Any, key: str | None = None) -> Any:
    headers = {**JSON, **({"Authorization": f"Bearer {key}"} if key else {})}
    r = client.request(method, url, content=json.dumps(body).encode(), headers=headers)  # ASCII: surrogates pass
    assert r.status_code < 300, r.text
    return r.json()


def test_values_at_the_edges_that_the_api_accepts_save_and_load_back(client: Client, tmp_path: Path) -> None:
    """Lone surrogates, NUL and line separators in names, prompts, URLs, queued and failure messages;
    the smallest float of an advance: exported, written as a state file, loaded back, identical."""
    odd = "\ud800\x00\u2028\udfff"
    _send(client, "POST", "/_mock/accounts", {"credits": 5, "name": odd})
    _send(client, "POST", "/_mock/next", {"outcome": "failed", "key": odd, "msg": odd})
    _send(client, "POST", "/_mock/next", {"outcome": "failed", "msg": odd})
    body = {"model_id": "gpt-image-2", "prompt": odd + " [fail]", "image_urls": ["https://a.example/\ud800"]}
    task_id = _send(client, "POST", "/api/v1/tasks/create", body, KEY)["data"]["task_id"]
    _send(client, "POST", f"/_mock/tasks/{task_id}/resolve", {"outcome": "failed", "msg": odd})
    _send(client, "POST", "/_mock/clock/advance", {"seconds": 5e-324})
    backend = client.app.state.backend  # type: ignore[attr-defined]
    exported = client.get("/_mock/state").json()
    assert exported["tasks"][0]["prompt"] == body["prompt"] and odd in [a["name"] for a in exported["accounts"]]
    path = tmp_path / "state.json"
    save_state_file(run_now(state_at(backend)), path)
    again = create_app("default", clock="manual")
    assert run_now(load_state_file(again.state.backend, path))
    assert run_now(export_state(again.state.backend)) == run_now(export_state(backend)) == exported


@pytest.mark.parametrize("now", [9e14, 253_402_300_800, -1])
def test_a_state_whose_clock_is_past_the_year_9999_or_before_1970_is_refused(client: Client, now: float) -> None:
    """The manual clock's bound holds for a loaded state too (before: accepted, then every advance was a 409)."""
    state = client.get("/_mock/state").json()
    r = client.put("/_mock/state", json={**state, "clock": {"kind": "manual", "now": now}}, headers=JSON)
    assert r.status_code == 400 and r.json()["error"].startswith("state is malformed: clock.now must be Unix seconds")
    assert client.get("/_mock/state").json() == state
