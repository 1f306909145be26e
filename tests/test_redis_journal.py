"""The request journal shared by every replica of one world on Redis (mockgen/redis_journal.py).

Real ``mockgen serve`` processes (and ``mockgen.testing.MockServer``s) on a real redis-server, each
test a world (``--store-prefix``) of its own, driven by httpx.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
import redis

from mockgen.journal import Journal
from mockgen.testing import MockServer

from .redis_server import RedisServer, fresh_prefix, make_redis_store, redis_server, session_server
from .serving import Serve

pytestmark = pytest.mark.usefixtures(redis_server.__name__)

CREATE = "/api/v1/tasks/create"
# One client for the module: http.get() makes a client (an SSL context) each call, ~0.1 s here.
http = httpx.Client(timeout=30.0)


@pytest.fixture(scope="module", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    http.close()


def world() -> str:
    """A store prefix no other test uses."""
    return fresh_prefix("rjournal")


@contextmanager
def replicas(prefix: str, *flags: str, url: str | None = None, n: int = 2) -> Iterator[list[Serve]]:
    """``n`` ``mockgen serve`` processes on one world, started side by side."""
    args = ("--port", "0", "--scenario", "ci", "--store", url or session_server().url, "--store-prefix", prefix)
    with ExitStack() as stack, ThreadPoolExecutor(n) as pool:
        starting = [pool.submit(Serve, *args, *flags, banner_lines=6) for _ in range(n)]
        started = []
        for future in starting:  # each one that started is stopped, whichever fails
            if future.exception() is None:
                started.append(future.result())
                stack.callback(started[-1].stop)
        for future in starting:
            future.result()  # (the first failure, raised)
        for served in started:
            served.wait_ready()
        yield started


def submit(base: str, key: str, prompt: str = "a lighthouse") -> dict[str, Any]:
    body = {"model_id": "gpt-image-2", "prompt": prompt}
    r = http.post(base + CREATE, json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["code"] == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def new_key(base: str) -> str:
    r = http.post(base + "/_mock/accounts", json={"credits": 100})
    assert r.status_code == 201, r.text
    return r.json()["key"]  # type: ignore[no-any-return]


def journal(base: str, **filters: str) -> list[dict[str, Any]]:
    r = http.get(base + "/_mock/requests", params=filters)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def stream(prefix: str, url: str | None = None) -> list[Any]:
    """What Redis holds of the world's journal, as it is."""
    with redis.Redis.from_url(url or session_server().url, decode_responses=True) as client:
        return client.xrange(f"{{{prefix}}}:w:journal")


def landed(base: str, count: int) -> list[dict[str, Any]]:
    """The journal once it holds ``count`` entries: each replica writes its own in the background, a
    moment after the answer, so a test that wants an order across replicas waits for each to land."""
    deadline = time.monotonic() + 5
    while len(seen := journal(base)) < count:
        assert time.monotonic() < deadline, seen
        time.sleep(0.01)
    return seen


def test_requests_sent_to_either_replica_show_in_the_journal_of_both() -> None:
    prefix = world()
    with replicas(prefix) as (a, b):
        task = submit(a.base, a.key, "first, through a")
        landed(b.base, 1)
        r = http.get(f"{b.base}/api/v1/tasks/{task['task_id']}", headers={"Authorization": f"Bearer {a.key}"})
        assert r.json()["code"] == 200
        landed(a.base, 2)
        assert http.get(a.base + "/api/v1/task/typo").status_code == 404  # a near miss, through a
        landed(b.base, 3)
        other = new_key(b.base)  # (b.key is a.key: the world's first account)
        submit(b.base, other, "second, through b")

        seen = landed(a.base, 4)
        assert journal(b.base) == seen
        assert [(e["method"], e["path"]) for e in seen] == [
            ("POST", CREATE), ("GET", f"/api/v1/tasks/{task['task_id']}"), ("GET", "/api/v1/task/typo"),
            ("POST", CREATE),
        ]  # fmt: skip
        assert [e["id"] for e in seen] == sorted(e["id"] for e in seen) and len({e["id"] for e in seen}) == 4
        assert '"first, through a"' in seen[0]["body"] and seen[0]["task_id"] == task["task_id"]
        assert seen[0]["key"] == a.key[:7] + "…" + a.key[-4:] and seen[0]["status"] == 200
        assert seen[1]["headers"]["authorization"] == f"Bearer {seen[1]['key']}"

        # The same filters as in memory, on every replica's entries.
        assert [e["id"] for e in journal(b.base, method="POST")] == [seen[0]["id"], seen[3]["id"]]
        assert [e["path"] for e in journal(b.base, path="/api/v1/tasks/*")] == [e["path"] for e in seen[:2]] + [CREATE]
        assert [e["id"] for e in journal(a.base, errors="true")] == [seen[2]["id"]]
        assert "/api/v1/task/typo" in journal(a.base, errors="true")[0]["error"]
        assert [e["id"] for e in journal(a.base, key=a.key)] == [seen[0]["id"], seen[1]["id"]]
        assert [e["id"] for e in journal(b.base, key=other)] == [seen[3]["id"]]
        assert [e["id"] for e in journal(a.base, key=a.key[:-1] + "x")] == []

        # Redis holds no whole key, in any field of any entry.
        kept = stream(prefix)
        assert len(kept) == 4
        assert not [e for e in kept if any(k in str(e) for k in (a.key, other, a.key[3:], other[3:]))]


def test_a_long_poll_on_one_replica_is_answered_by_requests_to_the_other() -> None:
    with replicas(world()) as (a, b), ThreadPoolExecutor(1) as pool:
        params = {"path": CREATE, "count": "2", "timeout": "20"}
        started = time.monotonic()
        waiting = pool.submit(http.get, a.base + "/_mock/requests/wait", params=params)
        time.sleep(0.5)  # (the long-poll parked first: real time, for real processes)
        submit(b.base, b.key, "one")
        time.sleep(0.3)
        assert not waiting.done()  # one of two
        submit(b.base, b.key, "two")
        r = waiting.result(timeout=25)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["arrived"] is True and answer["count"] == 2
        assert [e["path"] for e in answer["requests"]] == [CREATE, CREATE]
        assert time.monotonic() - started < 10  # answered by the requests, far before its timeout

        # Entries there already count at once; one not coming times out with a 408.
        r = http.get(b.base + "/_mock/requests/wait", params={"path": CREATE, "count": "2", "timeout": "5"})
        assert r.status_code == 200 and r.json()["count"] == 2
        r = http.get(a.base + "/_mock/requests/wait", params={"path": "/nowhere", "timeout": "0.3"})
        assert r.status_code == 408 and r.json() == {"arrived": False, "count": 0, "requests": []}


def test_delete_or_reset_through_one_replica_clears_the_journal_of_all() -> None:
    prefix = world()
    with replicas(prefix) as (a, b):
        submit(a.base, a.key)
        submit(b.base, b.key)
        assert len(landed(a.base, 2)) == 2
        r = http.delete(b.base + "/_mock/requests", headers={"Content-Type": "application/json"})
        assert r.status_code == 204
        assert journal(a.base) == [] and journal(b.base) == [] and stream(prefix) == []

        submit(a.base, a.key)
        after = landed(b.base, 1)
        assert len(after) == 1 and after[0]["id"] > 2  # ids are never given twice
        r = http.post(a.base + "/_mock/reset", headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert journal(b.base) == [] and stream(prefix) == []


def test_the_journal_keeps_the_newest_journal_limit_entries_and_its_bytes() -> None:
    prefix = world()
    options = {"store": session_server().url, "store_prefix": prefix, "journal_limit": 5}
    with MockServer("ci", **options) as a, MockServer("ci", **options) as b:
        for n in range(30):
            mock = (a, b)[n % 2]
            assert http.get(f"{mock.base_url}/api/v1/tasks/t{n}", headers=mock.headers()).status_code == 200
        paths = [f"/api/v1/tasks/t{n}" for n in range(25, 30)]
        assert [e["path"] for e in a.requests()] == paths and [e["path"] for e in b.requests()] == paths
        assert len(stream(prefix)) < 30  # trimmed in Redis too (MAXLEN ~: whole nodes at a time)

    # The byte bound (--journal-bytes): each entry counted as in memory, the oldest going first.
    prefix = world()
    with replicas(prefix, "--journal-bytes", "8000") as (c, d):
        for n in range(40):
            served = (c, d)[n % 2]
            http.post(served.base + CREATE, content=b"x" * 1000, headers={"Authorization": f"Bearer {c.key}"})
        kept = journal(d.base)
        assert 2 <= len(kept) <= 8 and kept == journal(c.base)
        assert kept[-1]["id"] == max(e["id"] for e in kept) and len(stream(prefix)) == len(kept)


def test_verify_through_one_replica_sees_requests_sent_to_another() -> None:
    prefix = world()
    with replicas(prefix, n=1) as (other,), MockServer("ci", store=session_server().url, store_prefix=prefix) as mock:
        key = mock.api_key
        for prompt in ("a fox", "a hound"):
            submit(other.base, key, prompt)
        http.get(other.base + "/api/v1/task/typo")
        mock.verify(f"POST {CREATE}", count=2, key=key)
        mock.verify(f"POST {CREATE}", body={"prompt": "a hound"})
        mock.verify_order(f"POST {CREATE}", "GET /api/v1/task/typo")
        mock.verify_never("DELETE *")
        assert [e["path"] for e in mock.near_misses()] == ["/api/v1/task/typo"]
        with pytest.raises(AssertionError, match="expected exactly 3"):
            mock.verify(f"POST {CREATE}", count=3)
        submit(other.base, key, "a third")
        assert len(mock.wait_for_requests(f"POST {CREATE}", count=3, timeout=5)) == 3


def test_with_redis_down_requests_are_answered_and_their_entries_lost_with_one_log_line() -> None:
    server = RedisServer()
    try:
        with replicas(world(), url=server.url, n=1) as (served,):
            submit(served.base, served.key, "before")
            with ThreadPoolExecutor(1) as pool:
                params = {"path": "/never", "timeout": "20"}
                parked = pool.submit(http.get, served.base + "/_mock/requests/wait", params=params)
                time.sleep(0.5)  # (parked: real time, for real processes)
                server.stop()
                r = parked.result(timeout=15)
                assert r.status_code == 503 and "unavailable" in r.json()["error"]  # at once, not at its timeout
            statuses = []
            for n in range(20):
                statuses.append(http.get(f"{served.base}/nowhere/{n}").status_code)
                r = http.get(f"{served.base}/api/v1/tasks/t{n}", headers={"Authorization": f"Bearer {served.key}"})
                statuses.append(r.status_code)
                assert r.status_code != 503 or r.json()["code"] == 503
            assert set(statuses) <= {404, 503} and 404 in statuses  # answered, never a 500
            assert http.get(served.base + "/_mock/requests").status_code == 503
            assert http.get(served.base + "/_mock/requests/wait", params={"timeout": "5"}).status_code == 503
            r = http.delete(served.base + "/_mock/requests", headers={"Content-Type": "application/json"})
            assert r.status_code == 503 and "unavailable" in r.json()["error"]

            server.start()  # (an empty Redis: nothing was saved)
            deadline = time.monotonic() + 10
            while http.get(f"{served.base}/again").status_code != 404:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            # A Redis that lost the world: the first control request starts it again (an empty journal).
            assert http.get(served.base + "/_mock/health").json()["up"] is True
            assert http.get(f"{served.base}/again").status_code == 404
            entries = journal(served.base, path="/again")
            assert entries and all(e["status"] == 404 for e in entries)
            assert not [e for e in journal(served.base) if e["path"].startswith("/nowhere/")]  # lost
        lost = [line for line in served.errors.splitlines() if "request journal: Redis does not take" in line]
        assert len(lost) == 1, served.errors
        assert "Traceback" not in served.errors and "takes entries again" in served.errors
    finally:
        server.close()


def test_the_byte_bound_keeps_what_the_in_process_journal_keeps() -> None:
    """The same entries of the same sizes, written in batches of any length: the same newest ones kept."""

    async def check() -> None:
        store = await make_redis_store(journal_limit=1_000, journal_bytes=5_000)
        memory = Journal(1_000, 5_000)
        try:
            sizes = [300, 1_200, 50, 4_999, 700, 5_001, 10, 2_500, 2_500, 1, 800, 3_000, 90, 90, 90]
            batches = [1, 3, 2, 5, 1, 4, 7]
            n = 0
            for rounds in range(3):
                for batch in batches:
                    for _ in range(batch):
                        entry = {"method": "GET", "path": f"/p{n}"}
                        size = sizes[n % len(sizes)] + rounds
                        store.journal.append(entry, size)
                        memory.append(entry, size)
                        n += 1
                    kept = [e["path"] for e in await store.journal.read()]
                    assert kept == [e["path"] for e in memory.entries], n
        finally:
            await store.clear()
            await store.close()

    asyncio.run(check())


def test_with_redis_frozen_requests_are_answered_at_once_and_a_stop_is_not_held_up() -> None:
    server = RedisServer()
    try:
        with replicas(world(), url=server.url, n=1) as (served,):
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)  # it holds every connection open, answering nothing
            try:
                started = time.monotonic()
                assert all(http.get(f"{served.base}/nowhere/{n}").status_code == 404 for n in range(50))
                assert time.monotonic() - started < 5  # (the entries wait on Redis, the answers do not)
                stopping = time.monotonic()
                served.stop()
                assert time.monotonic() - stopping < 8  # one batch's timeout, not one a batch
            finally:
                server.process.send_signal(signal.SIGCONT)
        assert "request journal: Redis does not take" in served.errors and "Traceback" not in served.errors
    finally:
        server.close()
