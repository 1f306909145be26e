"""Two apps on one Redis world, in this process: what a replica learns from the store before it answers.

A reset or a scenario swap through one replica reaches the other by its next answer; a replica that
starts against a world joins it; the real clock is Redis's; a store that stops answering gets the
contract's 503 and health says so. (tests/test_replicas.py runs real `mockgen serve` processes.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mockgen import create_app
from mockgen.scenario import parse_scenario

from .conftest import AUTH, JSON, KEY, Client
from .redis_server import RedisServer, fresh_prefix, session_server

CHEAP_YAML = "name: cheap\nclock: manual\nmodels:\n  gpt-image-2: {cost: 3}\n"
SEEDED = parse_scenario("name: seeded-shared\nseed: 42\nclock: manual\n", "seeded.yaml")
CHEAP = parse_scenario(CHEAP_YAML, "cheap.yaml")

Replicas = Callable[..., list[Client]]


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    """``replicas(n, scenario, url=...)``: n apps on one fresh world of a redis-server, each serving."""
    started: list[Client] = []

    def make(n: int = 2, scenario: Any = "default", url: str | None = None, prefix: str | None = None) -> list[Client]:
        prefix = prefix or fresh_prefix("shared")
        clients = []
        for _ in range(n):
            app = create_app(scenario, store=url or session_server().url, store_prefix=prefix)
            client = Client(app, base_url="http://mock.test").__enter__()  # the lifespan joins the world
            started.append(client)
            clients.append(client)
        return clients

    yield make
    for client in started:
        client.__exit__(None, None, None)


def test_a_scenario_swap_through_one_replica_reaches_the_other_before_its_next_answer(replicas: Replicas) -> None:
    a, b = replicas()
    assert b.get("/_mock/health").json()["scenario"] == "default"
    r = a.put("/_mock/scenario", content=CHEAP_YAML, headers={"content-type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert b.get("/_mock/health").json()["scenario"] == "cheap"  # the control API follows
    assert b.get("/_mock/scenario").json()["name"] == "cheap"
    created = b.submit()  # so does the public API: the new scenario's price
    assert created["code"] == 200 and created["data"]["credits"] == 3
    assert a.balance() == b.balance() == 1000 - 3


def test_a_reset_through_one_replica_is_the_others_world_and_ids_come_from_one_sequence(
    replicas: Replicas, make_client: Callable[..., Client]
) -> None:
    a, b = replicas(scenario=SEEDED)
    b.submit(prompt="before")
    assert a.post("/_mock/reset", headers=JSON).status_code == 200
    assert b.get("/_mock/tasks").json() == [] and b.balance() == 1000
    # After the reset, the submits through both replicas draw one seeded sequence: the ids a single
    # memory-store server gives for the same submits after its reset.
    shared = [b.submit(prompt="one")["data"]["task_id"], a.submit(prompt="two")["data"]["task_id"]]
    alone = make_client(SEEDED, store="memory")
    alone.submit(prompt="before")
    assert alone.post("/_mock/reset", headers=JSON).status_code == 200
    assert [alone.submit(prompt=p)["data"]["task_id"] for p in ("one", "two")] == shared


def test_a_replica_that_starts_joins_the_world_and_serves_its_scenario(
    replicas: Replicas, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = fresh_prefix("join")
    [a] = replicas(1, CHEAP, prefix=prefix)
    task_id = a.submit()["data"]["task_id"]
    with caplog.at_level("WARNING", logger="mockgen"):
        [late] = replicas(1, "default", prefix=prefix)  # started on another scenario
    assert "runs the scenario 'cheap' (not 'default')" in caplog.text
    assert late.get("/_mock/health").json()["scenario"] == "cheap"
    assert late.balance() == 1000 - 3 and late.poll(task_id)["data"]["task_id"] == task_id  # nothing reset


def test_the_real_clock_is_redis_time_for_every_replica(replicas: Replicas) -> None:
    a, b = replicas(scenario=parse_scenario("name: real-shared\nclock: real\n", "real.yaml"))
    a.submit()  # each request's first store step reads Redis's time
    backend = a.app.state.backend  # type: ignore[attr-defined]
    assert backend.clock.kind == "real" and abs(backend.now() - time.time()) < 1.0
    nows = [c.get("/_mock/health").json()["now"] for c in (a, b)]
    assert abs(nows[0] - nows[1]) < 1.0


def test_a_store_that_stops_answering_gets_503s_in_the_envelope_then_service_resumes(replicas: Replicas) -> None:
    server = RedisServer()
    try:
        [a] = replicas(1, url=server.url)
        assert a.submit()["code"] == 200
        server.stop()
        started = time.monotonic()
        r = a.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "p"}, headers=AUTH)
        assert time.monotonic() - started < 2.0
        assert r.status_code == 503 and r.json()["code"] == 503 and r.json()["data"] is None
        assert "store" in r.json()["msg"]
        health = a.get("/_mock/health")
        assert health.status_code == 503 and health.json()["status"] == "store down" and not health.json()["up"]
        control = a.get(f"/_mock/accounts/{KEY}")
        assert control.status_code == 503 and "store" in control.json()["error"]
        server.start()
        assert a.get("/_mock/health").json()["up"] is True
        assert a.submit()["code"] == 200  # by itself, once Redis is back (an empty Redis: a new world)
    finally:
        server.close()


def test_a_replica_started_while_the_store_is_down_answers_503_then_joins_when_it_is_back(
    replicas: Replicas,
) -> None:
    server = RedisServer()
    try:
        server.stop()
        strict = parse_scenario(
            f"name: strict\nclock: manual\nauth: {{mode: strict}}\naccounts:\n  - {{key: {KEY}, credits: 1000}}\n",
            "s.yaml",
        )
        [a] = replicas(1, strict, url=server.url)  # the lifespan's join fails: it serves 503s meanwhile
        started = time.monotonic()
        r = a.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "p"}, headers=AUTH)
        assert r.status_code == 503 and r.json()["code"] == 503 and time.monotonic() - started < 2.0
        assert a.get("/_mock/health").json()["up"] is False
        server.start()
        created = a.submit()
        assert created["code"] == 200, created  # the first answer of the store: the world started, its account there
        assert a.get("/_mock/health").json()["scenario"] == "strict" and a.balance() == 1000 - 15
    finally:
        server.close()


def test_a_replica_that_finds_a_world_being_started_joins_it_once_it_is_whole() -> None:
    """Before the fix: the second of two replicas started side by side found the first one's claim
    (ready: false), joined at once, and made its banner key in a world that the first one then cleared."""
    from mockgen.backend import Backend
    from mockgen.redis_store import RedisStore

    async def check() -> None:
        prefix = fresh_prefix("starting")
        url = session_server().url
        ci = parse_scenario("name: ci-like\nclock: manual\naccounts:\n  - {key: " + KEY + ", credits: 7}\n", "ci.yaml")
        first, second = Backend(ci, store=RedisStore(url, prefix)), Backend(ci, store=RedisStore(url, prefix))
        try:
            new = first._new_meta()
            assert await first.store.set_meta({**new, "ready": False}, only_new=True)  # claimed, not started
            joining = asyncio.ensure_future(second.open())
            await asyncio.sleep(0.2)  # (the joiner polls the store: another process's work, in real time)
            assert not joining.done()  # it waits for the world to be whole
            await first._start(new)
            await asyncio.wait_for(joining, 5)
            assert second.generation == new["generation"]
            assert await second.ready_key() == KEY  # the scenario's account: the world is whole
            assert (await second.account_of(KEY)).credits == 7
        finally:
            await first.close()
            await second.close()

    asyncio.run(check())


def test_two_replicas_making_the_banner_key_at_once_store_and_credit_it_once() -> None:
    from mockgen.backend import Backend
    from mockgen.redis_store import RedisStore

    async def check() -> None:
        prefix, url = fresh_prefix("banner"), session_server().url
        scenario = parse_scenario("name: open-empty\nclock: manual\nseed: 5\n", "open.yaml")
        first, second = (
            Backend(scenario, store=RedisStore(url, prefix)),
            Backend(scenario, store=RedisStore(url, prefix)),
        )
        try:
            await first.open()
            await second.open()
            keys = await asyncio.gather(*(b.ready_key() for b in (first, second, first, second)))
            assert len(set(keys)) == 1  # the world's own key, the same for every replica
            account = await first.account_of(keys[0])
            assert account.credits == scenario.default_credits  # credited once, not once a replica
            assert [e.kind for e in await second.ledger(keys[0])] == ["topup"]
        finally:
            await first.close()
            await second.close()

    asyncio.run(check())
