"""PUT /_mock/state: a real export round-trips; a malformed one is refused whole, naming the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockgen.models import TASK_FIELDS, NextOutcome
from mockgen.scenario import MAX_INT, parse_scenario
from mockgen.state import NEXT_FIELDS, TASK_CHECKS

from .conftest import KEY, OTHER_KEY, Client

NUMS, COUNT, POSITIVE = (f"from {low} to {MAX_INT}" for low in (-MAX_INT, 0, 1))  # the bounds of numbers
TIMES = "Unix seconds from 0 to 253402300799 (the end of 9999)"  # the manual clock's bound

SCENARIO = parse_scenario(
    "clock: manual\n"
    "seed: 7\n"
    "rules:\n"
    "  - {name: fail, match: {prompt_contains: '[fail]'}, outcome: failed, failure_message: no GPUs}\n"
    "  - {name: slow, match: {prompt_contains: '[slow]'}, running: 30}\n"
    "  - {name: polls, match: {prompt_contains: '[polls]'}, progress: polls, polls: {queued: 1, running: 1}}\n"
    "  - {name: manual, match: {prompt_contains: '[manual]'}, progress: manual}\n"
    "  - {name: cdn, match: {prompt_contains: '[cdn]'}, results: cdn, extra: {progress: 50}}\n",
    "state.yaml",
)
MISSING = object()  # a corruption that drops the field
INF = "<1e999>"  # a corruption sent as the JSON number 1e999 (Python reads it as inf)


def rich_world(client: Client) -> None:
    """Every kind of thing a state holds: settled, running, by-polls and manual tasks, both task
    types, CDN results with extra fields, a named account, charges, refunds, top-ups, a queued outcome."""
    client.post("/_mock/accounts", json={"credits": 500, "key": OTHER_KEY, "name": "team b"})
    client.submit()
    client.submit(prompt="[fail] a cat")
    client.submit(OTHER_KEY, model_id="seedance-2", aspect_ratio="9:16", image_urls=["https://example.com/a.png"])
    client.submit(prompt="[cdn] a tree")
    client.advance(10)
    client.submit(prompt="[slow] a river")
    client.poll(client.submit(prompt="[polls] a bird")["data"]["task_id"])
    client.submit(prompt="[manual] a boat")
    client.post(f"/_mock/accounts/{KEY}/credits", json={"delta": 25})
    r = client.post("/_mock/next", json={"outcome": "failed", "count": 2, "model_id": "nano-banana-2", "msg": "no"})
    assert r.status_code == 201


@pytest.fixture
def world(make_client: Callable[..., Client]) -> tuple[Client, dict[str, Any]]:
    """A client, and an export of its rich world taken before the world moved on (so a bad PUT
    that replaced even part of the world would show)."""
    client = make_client(SCENARIO)
    rich_world(client)
    base = client.get("/_mock/state").json()
    client.advance(1)
    client.submit(prompt="after the export")
    client.post(f"/_mock/accounts/{OTHER_KEY}/credits", json={"delta": 3})
    client.post("/_mock/next", json={"outcome": "success"})
    return client, base


def test_the_tables_cover_every_field() -> None:
    assert tuple(TASK_CHECKS) == TASK_FIELDS
    assert set(NEXT_FIELDS) == set(NextOutcome.__slots__)  # type: ignore[attr-defined]


def test_a_real_export_round_trips_unchanged(make_client: Callable[..., Client]) -> None:
    client = make_client(SCENARIO)
    rich_world(client)
    state = client.get("/_mock/state").json()
    tasks = state["tasks"]
    assert {t["final_status"] for t in tasks} == {0, 3, 4}
    assert {t["progress"] for t in tasks} == {"time", "polls", "manual"}
    assert {t["results"] for t in tasks} == {"local", "cdn"} and {t["task_type"] for t in tasks} == {"image", "video"}
    assert any(t["extra"] for t in tasks) and any(t["finish_at"] is None for t in tasks)
    assert {e["kind"] for a in state["accounts"] for e in a["ledger"]} == {"charge", "refund", "topup"}
    assert state["next"] and any(a["name"] for a in state["accounts"])

    fresh = make_client(SCENARIO)
    r = fresh.put("/_mock/state", json=state)
    assert r.status_code == 200, r.text
    assert fresh.get("/_mock/state").json() == state
    assert fresh.put("/_mock/state", json=state).status_code == 200  # and again, onto itself
    assert fresh.get("/_mock/state").json() == state


def _first_task_id(s: dict[str, Any]) -> str:
    return s["tasks"][0]["task_id"]


def _first_key(s: dict[str, Any]) -> str:
    return s["accounts"][0]["key"]


LONG_KEY = "sk-" + "x" * 500
KEY_RULE = "must be 'sk-' followed by 32 letters or digits"

# (where, the value put there, the error after "state is malformed: "); a callable is given the export.
CORRUPTIONS: list[tuple[tuple[Any, ...], Any, Any]] = [
    (("tasks", 0, "credits"), "abc", f"tasks[0].credits must be an integer {COUNT}, got 'abc'"),
    (("tasks", 1, "credits"), 1.5, f"tasks[1].credits must be an integer {COUNT}, got 1.5"),
    (("tasks", 2, "created_at"), "yesterday", f"tasks[2].created_at must be a finite number {NUMS}, got 'yesterday'"),
    (("tasks", 2, "running_at"), INF, f"tasks[2].running_at must be a finite number {NUMS}, got a huge number"),
    (("tasks", 4, "finish_at"), True, f"tasks[4].finish_at must be a finite number {NUMS} or null, got true"),
    (("tasks", 0, "settled_at"), "", f"tasks[0].settled_at must be a finite number {NUMS} or null, got ''"),
    (("tasks", 3, "prompt"), 42, "tasks[3].prompt must be a string, got 42"),
    (("tasks", 3, "model_id"), None, "tasks[3].model_id must be a string, got null"),
    (("tasks", 5, "key"), "sk-short", f"tasks[5].key {KEY_RULE}, got 'sk-short'"),
    (("tasks", 0, "task_id"), "a/b", "tasks[0].task_id must be 1 to 64 letters, digits, '-' or '_', got 'a/b'"),
    (("tasks", 1, "outcome"), "maybe", "tasks[1].outcome must be one of 'success', 'failed', got 'maybe'"),
    (("tasks", 5, "progress"), "fast", "tasks[5].progress must be one of 'time', 'polls', 'manual', got 'fast'"),
    (("tasks", 3, "results"), "s3", "tasks[3].results must be one of 'local', 'cdn', got 's3'"),
    (("tasks", 0, "final_status"), 2, "tasks[0].final_status must be one of 0, 3, 4, got 2"),
    (("tasks", 0, "final_status"), 3.0, "tasks[0].final_status must be one of 0, 3, 4, got 3.0"),
    (("tasks", 2, "task_type"), "audio", "tasks[2].task_type must be one of 'image', 'video', got 'audio'"),
    (("tasks", 2, "aspect_ratio"), "5:4", "tasks[2].aspect_ratio must be one of '1:1', "),
    (("tasks", 2, "image_urls"), ["https://e.com/a.png", 7], "tasks[2].image_urls must be an array of strings, got"),
    (("tasks", 3, "extra"), [50], "tasks[3].extra must be an object (of finite numbers) or null, got an array"),
    (("tasks", 5, "polls"), True, f"tasks[5].polls must be an integer {COUNT}, got true"),
    (("tasks", 5, "polls_queued"), -1, f"tasks[5].polls_queued must be an integer {COUNT}, got -1"),
    (("tasks", 1, "message"), 404, "tasks[1].message must be a string or null, got 404"),
    (("tasks", 1, "rule"), ["fail"], "tasks[1].rule must be a string or null, got an array"),
    (("tasks", 6, "prompt"), MISSING, "tasks[6].prompt is missing"),
    (("tasks", 6, "promt"), "typo", "unknown field 'promt' in tasks[6]"),
    (("tasks", 6, "task_id"), _first_task_id, lambda s: f"tasks[6].task_id {_first_task_id(s)!r} repeats tasks[0]"),
    (("tasks", 0), "a task", "tasks[0] must be an object, got 'a task'"),
    (("tasks",), {}, "tasks must be an array, got an object"),
    (("accounts", 0, "credits"), "abc", f"accounts[0].credits must be an integer {COUNT}, got 'abc'"),
    (("accounts", 0, "credits"), 1.5, f"accounts[0].credits must be an integer {COUNT}, got 1.5"),
    (("accounts", 0, "credits"), True, f"accounts[0].credits must be an integer {COUNT}, got true"),
    (("accounts", 1, "credits"), -5, f"accounts[1].credits must be an integer {COUNT}, got -5"),
    (("accounts", 1, "key"), LONG_KEY, f"accounts[1].key {KEY_RULE}, got {repr(LONG_KEY)[:57]}..."),
    (("accounts", 1, "key"), _first_key, lambda s: f"accounts[1].key {_first_key(s)!r} repeats accounts[0].key"),
    (("accounts", 0, "name"), 5, "accounts[0].name must be a string or null, got 5"),
    (("accounts", 1, "ledger"), MISSING, "accounts[1].ledger is missing"),
    (("accounts", 1, "ledger", 0, "kind"), "gift", "accounts[1].ledger[0].kind must be one of 'charge', 'refund', "),
    (("accounts", 1, "ledger", 0, "amount"), 1.5, f"accounts[1].ledger[0].amount must be an integer {NUMS}, got 1.5"),
    (("accounts", 1, "ledger", 1, "at"), "now", f"accounts[1].ledger[1].at must be a finite number {NUMS}, got 'now'"),
    (("accounts", 1, "ledger", 1, "task_id"), 5, "accounts[1].ledger[1].task_id must be a string or null, got 5"),
    (("next", 0, "count"), 0, f"next[0].count must be an integer {POSITIVE}, got 0"),
    (("next", 0, "outcome"), "maybe", "next[0].outcome must be one of 'success', 'failed', got 'maybe'"),
    (("next", 0, "model_id"), 5, "next[0].model_id must be a string or null, got 5"),
    (("next", 0, "msg"), "no", "unknown field 'msg' in next[0]"),
    (("clock", "now"), "noon", f"clock.now must be {TIMES}, got 'noon'"),
    (("clock", "now"), 10**400, f"clock.now must be {TIMES}, got a huge number"),
    (("clock", "now"), INF, f"clock.now must be {TIMES}, got a huge number"),
    (("clock", "now"), 9e14, f"clock.now must be {TIMES}, got 900000000000000.0"),  # past 9999: no advance, no date
    (("clock", "now"), -1, f"clock.now must be {TIMES}, got -1"),
    (("clock", "kind"), "fast", "clock.kind must be one of 'real', 'manual', got 'fast'"),
    (("taks",), [], "unknown field 'taks' in the top level"),
]  # fmt: skip


def corrupt(state: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``state`` with ``value`` put at ``where`` (MISSING: the field dropped)."""
    bad = copy.deepcopy(state)
    parent = bad
    for step in where[:-1]:
        parent = parent[step]
    if value is MISSING:
        del parent[where[-1]]
    else:
        parent[where[-1]] = value(state) if callable(value) else value
    return bad


def put_raw(client: Client, state: dict[str, Any]) -> Any:
    body = json.dumps(state).replace(json.dumps(INF), "1e999")
    return client.put("/_mock/state", content=body, headers={"Content-Type": "application/json"})


def _case_id(where: tuple[Any, ...], value: Any) -> str:
    shown = "missing" if value is MISSING else "dup" if callable(value) else json.dumps(value)
    return ".".join(map(str, where)) + "=" + (shown if len(shown) <= 20 else shown[:17] + "...")


@pytest.mark.parametrize(
    ("where", "value", "expected"), [pytest.param(*case, id=_case_id(*case[:2])) for case in CORRUPTIONS]
)
def test_a_malformed_state_is_refused_whole_naming_the_field(
    world: tuple[Client, dict[str, Any]], where: tuple[Any, ...], value: Any, expected: Any
) -> None:
    client, base = world
    before = client.get("/_mock/state").json()
    assert before != base  # so a PUT that replaced any part of the world would show
    r = put_raw(client, corrupt(base, where, value))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = expected(base) if callable(expected) else expected
    assert error.startswith("state is malformed: " + message), error
    assert len(error) < 200  # a long value is cut, never echoed whole
    assert client.get("/_mock/state").json() == before


def test_a_wrong_version_keeps_its_message(world: tuple[Client, dict[str, Any]]) -> None:
    client, base = world
    for version in (2, True, 1.0, "1", None):
        r = client.put("/_mock/state", json={**base, "version": version})
        assert r.json() == {"error": "state must be an export with version 1"}, version


# --- any one field replaced by any JSON value: a 200 or a 400, and a 200 leaves a pollable world ------

PLAUSIBLE = [
    None, True, False, 0, 1, -1, 3, 4, 2**70, 10**400, 1.5, -0.0, 1e300, "", "x", "success", "failed", "time",
    "polls", "manual", "local", "cdn", "image", "video", "16:9", "9:16", "charge", "refund", "topup", "abc-123",
    "sk-" + "z" * 32, KEY, OTHER_KEY, [], ["https://example.com/b.png"], {}, {"progress": 7}, {"task_status": "x"},
]  # fmt: skip
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)
values = st.sampled_from(PLAUSIBLE) | json_values


def _targets(state: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Where an object sits in ``state``: every task, account, ledger entry and queued outcome, and the clock."""
    found: list[tuple[Any, ...]] = [("clock",)]
    found += [("tasks", i) for i in range(len(state["tasks"]))]
    found += [("next", i) for i in range(len(state["next"]))]
    for i, account in enumerate(state["accounts"]):
        found.append(("accounts", i))
        found += [("accounts", i, "ledger", j) for j in range(len(account["ledger"]))]
    return found


def test_any_field_replaced_by_any_value_is_a_200_or_a_400_never_a_500(make_client: Callable[..., Client]) -> None:
    client = make_client(SCENARIO)
    rich_world(client)
    base = client.get("/_mock/state").json()
    targets = _targets(base)
    seen: dict[int, int] = {}

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(targets))
        obj = base
        for step in target:
            obj = obj[step]
        field = data.draw(st.sampled_from([*obj, "unknown"]))
        value = data.draw(st.just(MISSING) | values) if field in obj else data.draw(values)
        before = client.get("/_mock/state").json()
        r = put_raw(client, corrupt(base, (*target, field), value))
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400), r.text
        if r.status_code == 400:
            assert r.json()["error"].startswith("state is malformed: ")
            assert client.get("/_mock/state").json() == before
            return
        client.app.state.media_cache.items.clear()  # type: ignore[attr-defined]
        for task in client.get("/_mock/state").json()["tasks"]:
            answer = client.poll(task["task_id"], task["key"])  # (its extra fields may hide task_status)
            assert answer["code"] == 200 and answer["data"]["task_id"] == task["task_id"], answer
            assert client.get(f"/_mock/tasks/{task['task_id']}").json()["status"] in (1, 2, 3, 4)
            url = answer["data"]["image_url"] or answer["data"]["video_url"]
            if url and url.startswith("http://mock.test/"):
                assert client.get(url).status_code == 200, url
        assert client.get("/_mock/tasks").status_code == client.get("/_mock/accounts").status_code == 200

    run()
    assert seen.get(200) and seen.get(400), seen  # both kinds of answer were exercised
