"""The journal, the long-poll and the next-outcome queue at a bounded cost: each bound, at it and past it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest

import mockgen.journal
from mockgen import create_app
from mockgen.journal import (
    ENTRY_HEADERS,
    HEADER_SETS,
    MAX_BYTES,
    PART_BYTES,
    WAIT_ENTRIES,
    WAITERS,
    Filter,
    Journal,
    Record,
)
from mockgen.models import NextOutcome
from mockgen.store import NEXT_LIMIT, NextQueue

from .conftest import AUTH, JSON, KEY, OTHER_KEY, Client
from .serving import Serve, serve_once

POLL = "/api/v1/tasks/"


def journal_of(client: Client) -> Journal:
    return client.app.state.backend.store.journal  # type: ignore[attr-defined]


def record(path: str = "/api/v1/tasks/x", method: str = "GET") -> Record:
    """A journal Record as the middleware makes one (no headers, no key, no body)."""
    return (0.0, method, path, b"", (), None, b"", 200, 0.001, None)


def run(app: Any, scenario: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]) -> None:
    """``scenario`` against ``app`` in-process, on an event loop of its own (many requests at once)."""

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mock.test", timeout=30) as http:
            await scenario(http)

    asyncio.run(main())


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds (bounded: no real time passes)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


# --- bytes: per entry, in total, and the header-set cache --------------------------------------------


def test_an_entry_keeps_4_KiB_of_each_part_and_its_first_64_headers(client: Client) -> None:
    headers = {f"x-h{i:02}": chr(65 + i % 26) * 10_000 for i in range(ENTRY_HEADERS + 6)}
    # a key that begins just before a header's cut, and the request's key after the 64th header
    headers["x-h00"] = "v" * (PART_BYTES - 6) + KEY
    headers["authorization"] = f"Bearer {OTHER_KEY}"
    path = POLL + "p" * (PART_BYTES + 1000)
    client.get(path, params={"q": "x" * 10_000}, headers=headers)
    [entry] = client.get("/_mock/requests").json()
    assert len(entry["headers"]) == ENTRY_HEADERS
    assert all(len(value) <= PART_BYTES for value in entry["headers"].values())
    assert entry["headers"]["x-h01"] == "B" * PART_BYTES
    assert entry["headers"]["x-h00"].startswith("v" * (PART_BYTES - 6) + "sk-aaa")  # masked, then cut
    assert len(entry["path"]) == PART_BYTES and entry["path"] == path[:PART_BYTES]
    assert len(entry["query"]) == PART_BYTES
    assert entry["key"] == "sk-bbbb…bbbb"  # found past the 64th header
    assert client.get("/_mock/requests", params={"key": OTHER_KEY}).json()[0]["id"] == entry["id"]
    kept = repr(list(journal_of(client)._items))
    assert KEY not in kept and OTHER_KEY not in kept and "sk-aaaaaaaa" not in kept


def test_the_journal_keeps_its_newest_entries_within_its_byte_bound(make_client: Callable[..., Client]) -> None:
    bound = 1024 * 1024
    client = make_client(journal_bytes=bound)
    journal = journal_of(client)
    assert journal.max_bytes == bound
    for n in range(30):  # each with 64 distinct 8 KiB headers: about 270 KB kept of each
        headers = {f"x-big-{i}": f"{n}-{i}-" + "z" * 8192 for i in range(ENTRY_HEADERS)}
        client.get(f"{POLL}t{n}", headers={**AUTH, **headers})
        assert journal.bytes <= bound
    entry_size = journal.bytes // len(journal)
    assert 200_000 < entry_size < 300_000  # about what it holds: 64 headers of up to 4 KiB
    assert journal.bytes > bound - entry_size  # at the bound, not far below it
    paths = [e["path"] for e in client.get("/_mock/requests").json()]
    assert paths == [f"{POLL}t{n}" for n in range(30 - len(paths), 30)] and 1 < len(paths) < 5  # the newest
    assert journal.cached_header_sets == 0  # sets this big are never cached
    assert create_app("default").state.backend.store.journal.max_bytes == MAX_BYTES == 64 * 1024 * 1024


def test_the_entry_count_bound_holds_beside_the_byte_bound(make_client: Callable[..., Client]) -> None:
    client = make_client(journal_limit=5)
    journal = journal_of(client)
    for n in range(8):
        client.get(f"{POLL}t{n}", headers=AUTH)
    assert [e["path"] for e in journal.entries] == [f"{POLL}t{n}" for n in range(3, 8)]
    assert 5 * 600 < journal.bytes < 5 * 4000  # each about its lengths and a fixed part


def test_a_zero_byte_bound_keeps_nothing(make_client: Callable[..., Client]) -> None:
    client = make_client(journal_bytes=0)
    client.submit()
    assert client.get("/_mock/requests").json() == [] and journal_of(client).bytes == 0


def test_delete_and_reset_empty_the_header_cache(client: Client) -> None:
    journal = journal_of(client)
    for n in range(5):
        client.get(f"{POLL}x", headers={**AUTH, "x-n": str(n)})
    assert journal.cached_header_sets == 5 and journal.bytes > 0
    assert client.delete("/_mock/requests", headers=JSON).status_code == 204
    assert journal.cached_header_sets == 0 and journal.bytes == 0 and len(journal) == 0
    client.get(f"{POLL}x", headers=AUTH)
    assert journal.cached_header_sets == 1
    assert client.post("/_mock/reset", headers=JSON).status_code == 200
    assert journal.cached_header_sets == 0 and journal.bytes == 0


def test_the_header_cache_holds_only_small_sets_and_only_so_many(client: Client) -> None:
    journal = journal_of(client)
    client.get(f"{POLL}x", headers={**AUTH, "x-big": "b" * 9000})
    assert journal.cached_header_sets == 0  # masked each time instead
    for n in range(HEADER_SETS + 10):
        client.get(f"{POLL}x", headers={**AUTH, "x-n": str(n)})
        assert journal.cached_header_sets <= HEADER_SETS
    headers = [e["headers"]["x-n"] for e in client.get("/_mock/requests", params={"path": f"{POLL}x"}).json()[1:]]
    assert headers == [str(n) for n in range(HEADER_SETS + 10)]  # a cache that starts again loses nothing


# --- the long-poll: capped, shown only new entries, a bounded answer ----------------------------------


def test_at_most_64_long_polls_wait_and_a_freed_slot_takes_another() -> None:
    app = create_app("default", clock="manual")
    journal: Journal = app.state.backend.store.journal

    async def scenario(http: httpx.AsyncClient) -> None:
        def wait(path: str) -> asyncio.Future[httpx.Response]:
            return asyncio.ensure_future(http.get("/_mock/requests/wait", params={"path": path, "timeout": 300}))

        parked = [wait(f"{POLL}t{i}") for i in range(WAITERS)]
        await until(lambda: journal.waiting == WAITERS)
        refused = await http.get("/_mock/requests/wait", params={"path": "/x", "timeout": 300})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"].startswith(f"{WAITERS} long-polls are waiting already (the limit)")
        now = await http.get("/_mock/requests/wait", params={"timeout": 0})  # one that need not wait: refused too
        assert now.status_code == 503 and journal.waiting == WAITERS

        await http.get(f"{POLL}t0", headers=AUTH)  # the first one's request: its slot is free
        answered = await asyncio.wait_for(parked[0], 10)
        assert answered.status_code == 200 and answered.json()["count"] == 1
        assert journal.waiting == WAITERS - 1
        parked.append(wait(f"{POLL}again"))
        await until(lambda: journal.waiting == WAITERS)
        assert (await http.get("/_mock/requests/wait", params={"timeout": 0})).status_code == 503

        app.state.shutdown.begin()  # the server stopping answers every parked one at once
        stopped = await asyncio.wait_for(asyncio.gather(*parked[1:]), 10)
        assert {r.status_code for r in stopped} == {503}
        assert {r.json()["error"] for r in stopped} == {"the server is shutting down"}
        assert journal.waiting == 0

    run(app, scenario)


def test_a_long_poll_that_times_out_frees_its_slot(make_client: Callable[..., Client]) -> None:
    client = make_client()
    journal = journal_of(client)
    r = client.get("/_mock/requests/wait", params={"path": "/nothing", "timeout": 0})
    assert r.status_code == 408 and r.json() == {"arrived": False, "count": 0, "requests": []}
    assert journal.waiting == 0


def test_a_waiter_is_shown_the_journal_once_then_only_each_new_entry() -> None:
    journal = Journal()
    for n in range(1000):
        journal.append(record(f"/old/{n}"))
    calls = 0

    def wanted(item: Any) -> bool:
        nonlocal calls
        calls += 1
        return bool(item[2].startswith("/wanted"))

    waiter = journal.watch(wanted, 3)
    assert calls == 1000 and journal.waiting == 1  # one scan at arrival
    for n in range(500):
        journal.append(record(f"/other/{n}"))
    assert calls == 1500  # one call per new entry, never a rescan
    journal.append(record("/wanted/1"))
    journal.append(record("/wanted/2"))
    assert calls == 1502 and not waiter.satisfied
    journal.append(record("/wanted/3"))
    assert waiter.satisfied and journal.waiting == 0  # its slot is free before it is answered
    journal.append(record("/wanted/4"))
    assert calls == 1503
    assert [e["path"] for e in journal.found(waiter)] == ["/wanted/1", "/wanted/2", "/wanted/3"]


def test_the_long_poll_checks_each_new_request_once(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app("default", clock="manual")
    journal: Journal = app.state.backend.store.journal
    for n in range(2000):
        journal.append(record(f"/old/{n}"))
    calls = 0
    check = Filter.__call__

    def counted(self: Filter, item: Any) -> bool:
        nonlocal calls
        calls += 1
        return check(self, item)

    monkeypatch.setattr(Filter, "__call__", counted)

    async def scenario(http: httpx.AsyncClient) -> None:
        params = {"path": f"{POLL}*", "method": "POST", "count": 3, "timeout": 300}
        waiting = asyncio.ensure_future(http.get("/_mock/requests/wait", params=params))
        await until(lambda: journal.waiting == 1)
        assert calls == 2000
        for n in range(40):
            await http.get(f"{POLL}t{n}", headers=AUTH)
        assert calls == 2040 and not waiting.done()
        body = {"model_id": "gpt-image-2", "prompt": "x"}
        for _ in range(3):
            await http.post("/api/v1/tasks/create", json=body, headers=AUTH)
        r = await asyncio.wait_for(waiting, 10)
        assert calls == 2043
        assert r.status_code == 200 and r.json()["count"] == 3
        assert [e["method"] for e in r.json()["requests"]] == ["POST"] * 3

    run(app, scenario)


def test_the_long_polls_answer_lists_the_first_100_it_found_and_counts_all(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = journal_of(client)
    for n in range(WAIT_ENTRIES + 50):
        journal.append(record(f"{POLL}t{n}"))
        journal.append(record("/elsewhere"))
    rendered = 0
    render = mockgen.journal.render

    def counted(item: Record) -> dict[str, Any]:
        nonlocal rendered
        rendered += 1
        return render(item)

    monkeypatch.setattr(mockgen.journal, "render", counted)
    r = client.get("/_mock/requests/wait", params={"path": f"{POLL}*", "count": 1, "timeout": 0})
    assert r.status_code == 200 and r.json()["arrived"] is True and r.json()["count"] == WAIT_ENTRIES + 50
    assert [e["path"] for e in r.json()["requests"]] == [f"{POLL}t{n}" for n in range(WAIT_ENTRIES)]
    assert rendered == WAIT_ENTRIES  # only what it answers is rendered
    rendered = 0
    r = client.get("/_mock/requests/wait", params={"path": f"{POLL}*", "count": 999, "timeout": 0})
    assert r.status_code == 408 and r.json()["count"] == WAIT_ENTRIES + 50 and rendered == WAIT_ENTRIES


def test_entries_dropped_while_a_poll_waits_are_not_shown(make_client: Callable[..., Client]) -> None:
    client = make_client()
    journal = journal_of(client)
    journal.append(record(f"{POLL}before"))
    waiter = journal.watch(Filter(f"{POLL}*"), 2)
    journal.clear()
    journal.append(record(f"{POLL}after"))
    assert waiter.satisfied and waiter.found == 2
    assert [e["path"] for e in journal.found(waiter)] == [f"{POLL}after"]


# --- the next-outcome queue ----------------------------------------------------------------------------


def test_post_next_answers_what_it_queued_and_the_length(client: Client) -> None:
    r = client.post("/_mock/next", json={"outcome": "failed", "count": 2, "model_id": "seedance-2"})
    assert r.status_code == 201
    one = {"outcome": "failed", "count": 2, "model_id": "seedance-2", "key": None, "msg": None}
    assert r.json() == {"queued": [one], "length": 1}
    r = client.post("/_mock/next", json={"outcome": "success", "key": KEY, "msg": "ok"})
    two = {"outcome": "success", "count": 1, "model_id": None, "key": KEY, "msg": "ok"}
    assert r.json() == {"queued": [two], "length": 2}
    r = client.get("/_mock/next")
    assert r.json() == {"queued": [one, two]} and r.headers["x-total-count"] == "2"
    r = client.get("/_mock/next", params={"limit": 1})
    assert r.json() == {"queued": [two]} and r.headers["x-total-count"] == "2"  # the newest, as /_mock/tasks
    assert client.get("/_mock/next", params={"limit": "x"}).status_code == 400


def test_the_queue_holds_1000_entries_then_says_how_to_clear_it(client: Client) -> None:
    for n in range(NEXT_LIMIT):
        r = client.post("/_mock/next", json={"outcome": "failed", "key": OTHER_KEY})
        assert r.status_code == 201 and r.json()["length"] == n + 1
    r = client.post("/_mock/next", json={"outcome": "failed"})
    assert r.status_code == 409
    assert r.json() == {
        "error": "The queue of next outcomes holds 1000 entries (the limit): submits use them up, "
        "DELETE /_mock/next empties it, and so does POST /_mock/reset."
    }
    assert client.get("/_mock/next").headers["x-total-count"] == str(NEXT_LIMIT)
    client.submit(key=OTHER_KEY)  # one used up: room for one more
    assert client.post("/_mock/next", json={"outcome": "failed"}).status_code == 201
    assert client.post("/_mock/next", json={"outcome": "failed"}).status_code == 409
    assert client.delete("/_mock/next", headers=JSON).status_code == 204
    assert client.get("/_mock/next").json() == {"queued": []}
    assert client.post("/_mock/next", json={"outcome": "failed"}).json()["length"] == 1
    assert client.delete("/_mock/next").status_code == 415  # a change, sent as JSON like the others


def test_a_state_with_more_queued_outcomes_than_the_bound_is_refused(client: Client) -> None:
    state = client.get("/_mock/state").json()
    state["next"] = [{"outcome": "failed", "count": 1}] * (NEXT_LIMIT + 1)
    r = client.put("/_mock/state", json=state)
    assert r.status_code == 400 and "next has 1001 entries, past the limit of 1000" in r.json()["error"]
    state["next"] = state["next"][:NEXT_LIMIT]
    assert client.put("/_mock/state", json=state).status_code == 200
    assert client.get("/_mock/next").headers["x-total-count"] == str(NEXT_LIMIT)


class Watched(NextOutcome):
    """A queued outcome that counts every read of its fields (how a submit would scan it)."""

    __slots__ = ()
    reads = 0

    def __getattribute__(self, name: str) -> Any:
        Watched.reads += 1
        return super().__getattribute__(name)


def test_a_submit_looks_only_at_the_entries_that_can_match_it(client: Client) -> None:
    backend = client.app.state.backend  # type: ignore[attr-defined]
    backend.store._next = queue = NextQueue(limit=10_000)  # past the bound, to show the cost does not grow
    for n in range(5000):  # none of them can match KEY's submits of gpt-image-2
        queue.append(Watched("failed", 1, "seedance-2" if n % 2 else None, None if n % 2 else OTHER_KEY))
    Watched.reads = 0
    task = client.submit()["data"]["task_id"]
    assert Watched.reads == 0 and len(queue) == 5000
    queue.append(NextOutcome("failed", 1, "gpt-image-2", KEY, "queued"))
    failing = client.submit()["data"]["task_id"]
    assert Watched.reads == 0 and len(queue) == 5000
    client.advance(100)
    assert client.poll(task)["data"]["task_status"] == 3 and client.poll(failing)["data"]["task_status"] == 4
    assert client.get(f"/_mock/tasks/{failing}").json()["message"] == "queued"


def _reference_take(queue: list[NextOutcome], model_id: str, key: str) -> NextOutcome | None:
    """The queue as a list, scanned in order: what the buckets must pick, entry for entry."""
    for entry in queue:
        if entry.model_id in (None, model_id) and entry.key in (None, key):
            entry.count -= 1
            if entry.count <= 0:
                queue.remove(entry)
            return entry
    return None


def test_the_buckets_take_what_a_scan_in_order_takes() -> None:
    rng = random.Random(11)
    models, keys = ["m1", "m2", None], ["k1", "k2", "k3", None]
    for _ in range(20):
        reference: list[NextOutcome] = []
        queue = NextQueue()
        pairs: list[tuple[NextOutcome, NextOutcome]] = []
        for step in range(400):
            if rng.random() < 0.45:
                fields = ("failed", rng.randint(1, 3), rng.choice(models), rng.choice(keys), f"#{step}")
                a, b = NextOutcome(*fields), NextOutcome(*fields)
                reference.append(a)
                queue.append(b)
                pairs.append((a, b))
            else:
                model, key = rng.choice(models[:2]), rng.choice(keys[:3])
                want, got = _reference_take(reference, model, key), queue.take(model, key)
                assert (want and want.message) == (got and got.message), step
        assert [e.message for e in queue] == [e.message for e in reference]
        assert [(a.count, a.message) for a, _ in pairs] == [(b.count, b.message) for _, b in pairs]


# --- the flag ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_takes_the_journal_byte_bound_by_flag_or_environment(how: str) -> None:
    bound = "40000"  # a few entries with 4 KiB paths
    args: tuple[str, ...] = ("--journal-bytes", bound) if how == "flag" else ()
    env = {"MOCKGEN_JOURNAL_BYTES": bound} if how == "env" else {}
    with Serve("--port", "0", *args, env=env) as served:
        for n in range(20):
            httpx.get(f"{served.base}{POLL}{n:02}" + "p" * 5000, headers=AUTH, timeout=10)
        kept = httpx.get(f"{served.base}/_mock/requests", timeout=10).json()
    assert 3 <= len(kept) < 10 and all(len(e["path"]) == PART_BYTES for e in kept)
    assert kept[-1]["path"].startswith(f"{POLL}19")
    refused = serve_once("--port", "0", "--journal-bytes", "-1")
    assert refused.returncode == 2 and "Invalid value for '--journal-bytes'" in refused.stderr
