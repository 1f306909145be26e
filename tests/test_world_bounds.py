"""The world at a bounded cost: open accounts, unfinished tasks, ledgers and rate-limit buckets, each
at and past its bound (counted, not measured in RSS), and the money kept whole across every drop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import mockgen.backend
from mockgen.models import Account
from mockgen.store import MemoryStore, run_now

from .conftest import AUTH, JSON, KEY, OTHER_KEY, Client
from .serving import Serve

SCENARIO = """\
name: bounds
clock: manual
seed: 7
auth: {mode: open, default_credits: 20}
models:
  cheap: {task_type: image, cost: 5}
  dear: {task_type: video, cost: 60}
defaults: {queued: 1, running: 1, outcome: success}
rules:
  - name: refuse
    match: {prompt_contains: "[reject]"}
    reject: "Refused by the rule."
  - name: fail
    match: {prompt_contains: "[fail]"}
    outcome: failed
"""


def new_key(i: int) -> str:
    return f"sk-{i:032d}"


@pytest.fixture
def bounds(tmp_path: Path) -> Path:
    path = tmp_path / "bounds.yaml"
    path.write_text(SCENARIO)
    return path


def create(client: Client, key: str, **body: Any) -> dict[str, Any]:
    body.setdefault("model_id", "cheap")
    body.setdefault("prompt", "a lighthouse")
    r = client.post("/api/v1/tasks/create", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def stored(client: Client) -> int:
    r = client.get("/_mock/accounts")
    assert r.status_code == 200
    assert int(r.headers["x-total-count"]) == len(r.json())
    return len(r.json())


# --- open accounts: a request that changes nothing creates nothing ------------------------------------


def test_requests_that_change_nothing_create_no_account(make_client: Callable[..., Client], bounds: Path) -> None:
    client = make_client(bounds)
    key = new_key(1)
    auth = {"Authorization": f"Bearer {key}"}
    poll = client.get("/api/v1/tasks/nosuchtask00", headers=auth).json()
    assert poll["code"] == 0 and "Task not found" in poll["msg"]
    invalid = client.post("/api/v1/tasks/create", json={"model_id": "cheap"}, headers=auth).json()
    assert invalid["code"] != 200 and "prompt is required" in invalid["msg"]
    not_json = client.post("/api/v1/tasks/create", content=b"{", headers={**auth, **JSON}).json()
    assert "not valid JSON" in not_json["msg"]
    broke = create(client, key, model_id="dear")  # 60 > the 20 a new key starts with
    assert broke["code"] == 0 and "Insufficient credits" in broke["msg"]
    rejected = create(client, key, prompt="[reject] this")
    assert rejected["code"] == 0 and rejected["msg"] == "Refused by the rule."
    shown = client.get(f"/_mock/accounts/{key}").json()
    assert shown == {"key": key, "name": None, "credits": 20, "ledger": []}  # looking shows, and stores nothing
    assert stored(client) == 0
    assert run_now(client.app.state.backend.store.account_count()) == 0


def test_a_first_charge_or_top_up_stores_the_account(make_client: Callable[..., Client], bounds: Path) -> None:
    client = make_client(bounds)
    task_id = create(client, KEY)["data"]["task_id"]
    assert stored(client) == 1 and client.balance(KEY) == 15
    assert client.poll(task_id, KEY)["data"]["task_id"] == task_id
    stranger = client.get(f"/api/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {OTHER_KEY}"}).json()
    assert stranger["code"] == 0 and "Task not found" in stranger["msg"]  # the same answer as for no task
    assert stored(client) == 1
    r = client.post(f"/_mock/accounts/{OTHER_KEY}/credits", json={"delta": 5})
    assert r.status_code == 200 and r.json()["credits"] == 25
    assert stored(client) == 2


def test_concurrent_first_submits_of_a_new_key_share_one_account(
    make_client: Callable[..., Client], bounds: Path
) -> None:
    """Two requests authenticated before either was charged: the second uses the account the first stored."""
    client = make_client(bounds)
    backend = client.app.state.backend
    first = run_now(backend.authenticate(f"Bearer {KEY}"))
    second = run_now(backend.authenticate(f"Bearer {KEY}"))
    assert first is not second and not first.stored
    for account in (first, second, second, second):
        run_now(backend.submit(account, {"model_id": "cheap", "prompt": "p"}))
    broke = run_now(backend.authenticate(f"Bearer {KEY}"))
    assert broke.stored and broke.credits == 0 and run_now(backend.store.account_count()) == 1
    assert [e.kind for e in broke.ledger] == ["charge"] * 4


def test_past_max_accounts_a_new_key_is_refused_at_both_doors(make_client: Callable[..., Client], bounds: Path) -> None:
    client = make_client(bounds, max_accounts=2)
    assert create(client, new_key(1))["code"] == 200
    assert client.post("/_mock/accounts", json={"credits": 7, "key": new_key(2)}, headers=JSON).status_code == 201
    refused = create(client, new_key(3))
    assert refused["code"] == 0 and refused["data"] is None
    assert "2 accounts" in refused["msg"] and "--max-accounts" in refused["msg"]
    assert client.get(f"/_mock/accounts/{new_key(3)}").json()["credits"] == 20  # nothing charged
    assert len(client.get("/_mock/tasks").json()) == 1
    created = client.post("/_mock/accounts", json={"credits": 1}, headers=JSON)
    assert created.status_code == 409 and created.json()["error"] == refused["msg"]
    topped = client.post(f"/_mock/accounts/{new_key(4)}/credits", json={"delta": 1})
    assert topped.status_code == 409 and topped.json()["error"] == refused["msg"]
    assert stored(client) == 2
    # Existing accounts keep working: a submit, a top-up, a poll.
    task_id = create(client, new_key(2), prompt="[fail] a refund")["data"]["task_id"]
    assert client.post(f"/_mock/accounts/{new_key(1)}/credits", json={"delta": 1}).status_code == 200
    client.advance(5)
    assert client.poll(task_id, new_key(2))["data"]["task_status"] == 4
    assert client.balance(new_key(2)) == 7
    assert client.post("/_mock/reset", headers=JSON).status_code == 200
    assert create(client, new_key(3))["code"] == 200  # a reset makes room


def test_max_accounts_from_the_environment_of_a_real_serve() -> None:
    with Serve("--port", "0", "--clock", "manual", env={"MOCKGEN_MAX_ACCOUNTS": "1"}) as served:
        # The banner's ready key is the one account; a new key is refused, the banner's works.
        with httpx.Client(base_url=served.base, timeout=10) as http:
            body = {"model_id": "gpt-image-2", "prompt": "p"}
            r = http.post("/api/v1/tasks/create", json=body, headers={"Authorization": f"Bearer {new_key(9)}"})
            assert r.status_code == 200 and r.json()["code"] == 0 and "--max-accounts" in r.json()["msg"]
            r = http.post("/api/v1/tasks/create", json=body, headers={"Authorization": f"Bearer {served.key}"})
            assert r.json()["code"] == 200
            assert http.get("/_mock/accounts").headers["x-total-count"] == "1"


def test_accounts_limit_lists_the_newest(make_client: Callable[..., Client], bounds: Path) -> None:
    client = make_client(bounds)
    for i in range(5):
        create(client, new_key(i))
    r = client.get("/_mock/accounts?limit=2")
    assert [a["key"] for a in r.json()] == [new_key(3), new_key(4)] and r.headers["x-total-count"] == "5"
    assert len(client.get("/_mock/accounts?limit=99").json()) == 5
    assert client.get("/_mock/accounts?limit=0").json() == []
    bad = client.get("/_mock/accounts?limit=²")
    assert bad.status_code == 400 and "'limit'" in bad.json()["error"]


# --- tasks: unfinished ones count -------------------------------------------------------------------


def test_a_submit_past_max_tasks_with_only_unfinished_tasks_is_refused(make_client: Callable[..., Client]) -> None:
    client = make_client(max_tasks=4)
    steer = {"X-Mockgen-Delay": "86400"}  # the attack: tasks that never finish in time
    held = [client.submit(headers=steer, prompt=f"held {i}")["data"]["task_id"] for i in range(4)]
    before = client.balance(), len(client.ledger())
    for _ in range(3):
        refused = client.submit(headers=steer)
        assert refused["code"] == 0 and refused["data"] is None
        assert "unfinished tasks" in refused["msg"] and "--max-tasks" in refused["msg"]
    assert (client.balance(), len(client.ledger())) == before  # nothing charged, nothing logged
    assert [t["task_id"] for t in client.get("/_mock/tasks").json()] == held
    client.advance(86_400)
    assert client.submit()["code"] == 200  # finished now: the first to finish made room
    assert len(client.get("/_mock/tasks").json()) == 4


# --- ledgers: a total bound across accounts ---------------------------------------------------------


def test_the_ledger_total_bound_drops_the_oldest_entries_of_any_account() -> None:
    store = MemoryStore(max_tasks=1_000, ledger_limit=1_000, ledger_total=64)  # batches of 1
    keys = [new_key(i) for i in range(4)]
    for key in keys:
        run_now(store.add_account(Account(key, 0)))
    for n in range(400):
        run_now(store.credit(keys[n % 4 if n < 200 else 0], 1, float(n), "topup", None))
        total = sum(len(a.ledger) for a in run_now(store.accounts()))
        assert total <= 64
    kept = sorted(e.at for a in run_now(store.accounts()) for e in a.ledger)
    assert len(kept) >= 63  # past 64, down to a batch (here 1) under it
    assert kept == [float(n) for n in range(400 - len(kept), 400)]  # the newest of all, whoever they went to
    assert [a.credits for a in run_now(store.accounts())] == [250, 50, 50, 50]  # every balance whole
    assert [len(a.ledger) for a in run_now(store.accounts())] == [len(kept), 0, 0, 0]


def test_both_ledger_bounds_together_keep_the_newest() -> None:
    """An entry trimmed by its account's bound is not dropped twice by the total bound."""
    store = MemoryStore(max_tasks=1_000, ledger_limit=10, ledger_total=100)
    keys = [new_key(i) for i in range(30)]
    for key in keys:
        run_now(store.add_account(Account(key, 0)))
    for n in range(3_000):
        run_now(store.credit(keys[(n * 7) % 30], 2, float(n), "topup", None))
        assert sum(len(a.ledger) for a in run_now(store.accounts())) <= 100
        assert all(len(a.ledger) <= 10 for a in run_now(store.accounts()))
    for account in run_now(store.accounts()):
        assert account.credits == 200  # 100 top-ups of 2 each, whatever the ledger kept
        ats = [e.at for e in account.ledger]
        assert ats == sorted(ats) and (not ats or ats[-1] >= 3_000 - 30)
    assert sum(len(a.ledger) for a in run_now(store.accounts())) >= 100 - 100 // 64 - 30


def test_the_bookkeeping_of_the_total_bound_is_bounded_too() -> None:
    """One busy account trimmed by its own bound: what the store keeps to order entries stays bounded."""
    store = MemoryStore(max_tasks=1_000, ledger_limit=10, ledger_total=100)
    run_now(store.add_account(Account(KEY, 0)))
    for n in range(10_000):
        run_now(store.credit(KEY, 1, float(n), "topup", None))
        assert len(store._entries) <= 100
    account = run_now(store.get_account(KEY))
    assert account is not None and account.credits == 10_000
    assert [e.at for e in account.ledger] == [float(n) for n in range(10_000 - len(account.ledger), 10_000)]
    assert 1 <= len(account.ledger) <= 10


def test_the_total_ledger_bound_follows_max_tasks(make_client: Callable[..., Client], bounds: Path) -> None:
    client = make_client(bounds, max_tasks=3)
    store = client.app.state.backend.store
    assert store.ledger_total == 6
    for i in range(8):
        key = new_key(i)
        create(client, key)
        client.advance(5)
    assert sum(len(client.ledger(new_key(i))) for i in range(8)) <= 6
    assert [client.balance(new_key(i)) for i in range(8)] == [15] * 8


# --- the money invariant, across task evictions ----------------------------------------------------


def test_balances_match_the_ledger_across_evictions(make_client: Callable[..., Client], bounds: Path) -> None:
    client = make_client(bounds, max_tasks=5)
    store = client.app.state.backend.store
    store.ledger_limit = store.ledger_total = 100_000  # nothing dropped from a ledger: each one explains all
    keys = [new_key(i) for i in range(3)]
    for key in keys:
        assert client.post("/_mock/accounts", json={"credits": 200, "key": key}, headers=JSON).status_code == 201
    answers = {"ok": 0, "refused": 0}
    for n in range(120):
        key = keys[n % 3]
        prompt = "[fail] refund me" if n % 4 == 0 else "p"
        answer = create(client, key, prompt=prompt, model_id="dear" if n % 5 == 0 else "cheap")
        answers["ok" if answer["code"] == 200 else "refused"] += 1
        if n % 7 == 0:
            client.post(f"/_mock/accounts/{key}/credits", json={"delta": 30})
        if n % 3 == 2:
            client.advance(1 + n % 2)
    assert answers["ok"] > 40 and answers["refused"] > 0  # tasks were dropped, and the bound refused some
    assert len(client.get("/_mock/tasks").json()) <= 5
    for key in keys:
        ledger = client.ledger(key)
        total = {kind: sum(e["amount"] for e in ledger if e["kind"] == kind) for kind in ("topup", "charge", "refund")}
        assert client.balance(key) == total["topup"] - total["charge"] + total["refund"]
        assert total["refund"] > 0


# --- rate-limit buckets ----------------------------------------------------------------------------

RATE_LIMITED = (
    SCENARIO
    + """\
faults:
  - name: slow-down
    match: {route: query}
    rate_limit: {per_second: 1, burst: 2}
"""
)


def _poller(make_client: Callable[..., Client], tmp_path: Path, text: str) -> tuple[Client, Callable[[str], int]]:
    """A client on scenario ``text``, and a poll of a task that does not exist with a given key (its status)."""
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    client = make_client(path)

    def poll(key: str) -> int:
        return client.get("/api/v1/tasks/x", headers={"Authorization": f"Bearer {key}"}).status_code

    return client, poll


def test_rate_limit_buckets_are_bounded(
    make_client: Callable[..., Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mockgen.store, "MAX_BUCKETS", 10)
    client, poll = _poller(make_client, tmp_path, RATE_LIMITED)
    backend = client.app.state.backend

    assert [poll(KEY) for _ in range(3)] == [200, 200, 429]  # a burst of 2, then throttled
    for i in range(50):
        assert poll(new_key(i)) == 200
        assert len(backend.store._buckets) <= 10
    assert poll(KEY) == 200  # its bucket went (least recently used): a full one again
    assert [poll(new_key(49)) for _ in range(2)] == [200, 429]  # a kept bucket keeps counting
    assert client.get("/api/v1/tasks/x", headers=AUTH).status_code == 200


# --- rule and fault counters -----------------------------------------------------------------------

COUNTED = (
    SCENARIO
    + """\
faults:
  - name: first-poll-of-each-key
    match: {route: query, first_n: 1, count_per: key}
    status: 503
"""
)


def test_counters_per_key_are_bounded(
    make_client: Callable[..., Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mockgen.store, "MAX_COUNTERS", 10)
    client, poll = _poller(make_client, tmp_path, COUNTED)
    backend = client.app.state.backend

    assert [poll(KEY) for _ in range(2)] == [503, 200]  # its first poll only
    for i in range(50):
        assert [poll(new_key(i)), poll(new_key(i))] == [503, 200]
        assert len(backend.store._counters) <= 10
    assert poll(new_key(49)) == 200  # a kept counter keeps counting
    assert poll(KEY) == 503  # its counter went (first seen longest ago): it starts over
