"""Several real ``mockgen serve`` processes on one Redis serve one world (issue 13's multi-process tests).

Two replicas (and one ``serve --workers 2``) against the session's redis-server, each test on a world
of its own (``--store-prefix``), driven by real httpx clients; the test that stops Redis runs one of
its own. Every wait for a process is bounded, and every process is stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from mockgen.spec import CREATE_PATH, Msg

from .redis_server import RedisServer, fresh_prefix, redis_server, session_server
from .serving import Serve

pytestmark = pytest.mark.usefixtures(redis_server.__name__)

KEY = "sk-" + "r" * 32
OTHER = "sk-" + "s" * 32
COST = 15  # gpt-image-2 in the default scenario (and every scenario here)
TIMEOUT = httpx.Timeout(10.0)


def world_name() -> str:
    """A fresh ``--store-prefix``: a world of its own in the session's Redis."""
    return fresh_prefix("replicas")


def store_args(prefix: str, url: str | None = None) -> tuple[str, ...]:
    return ("--store", url or session_server().url, "--store-prefix", prefix)


@contextlib.contextmanager
def serving(n: int, *args: str) -> Iterator[list[Serve]]:
    """``n`` ``mockgen serve ARGS --port 0`` processes, ready; each stopped on the way out. The first
    is ready before the others start: on a shared store it starts the world, and they join it."""
    started: list[Serve] = []
    try:
        started.append(Serve("--port", "0", *args).wait_ready())
        started += [Serve("--port", "0", *args) for _ in range(n - 1)]
        for served in started[1:]:
            served.wait_ready()
        yield started
    finally:
        for served in started:
            served.stop()


def replicas(
    n: int, *args: str, prefix: str | None = None, url: str | None = None
) -> contextlib.AbstractContextManager[list[Serve]]:
    """``n`` replicas of one world (``prefix``: a fresh one unless given) on Redis (``url``: the session's)."""
    return serving(n, *args, *store_args(prefix or world_name(), url))


@contextlib.asynccontextmanager
async def clients(servers: Sequence[Serve], per_server: int = 1) -> AsyncIterator[list[httpx.AsyncClient]]:
    """An httpx client on each server (``per_server`` each, with their own connections), in turn."""
    async with contextlib.AsyncExitStack() as stack:
        made = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=s.base, timeout=TIMEOUT))
            for _ in range(per_server)
            for s in servers
        ]
        yield made


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submit(client: httpx.AsyncClient, key: str, prompt: str = "a lighthouse at dusk", **body: Any) -> Any:
    """The create's answer (any HTTP status), as JSON."""
    r = await client.post(CREATE_PATH, json={"model_id": "gpt-image-2", "prompt": prompt, **body}, headers=auth(key))
    return r.json()


async def poll(client: httpx.AsyncClient, key: str, task_id: str) -> Any:
    r = await client.get(f"/api/v1/tasks/{task_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


async def control(client: httpx.AsyncClient, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    r = await client.request(method, f"/_mock/{path}", json=body)
    assert r.status_code == status, r.text
    return r.json()


async def account(client: httpx.AsyncClient, key: str = KEY) -> dict[str, Any]:
    """The account with its whole ledger (``GET /_mock/accounts/{key}``)."""
    got: dict[str, Any] = await control(client, "GET", f"accounts/{key}")
    return got


async def tasks_of(client: httpx.AsyncClient, key: str = KEY) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = (await client.get("/_mock/tasks", params={"key": key})).json()
    return got


def entries(ledger: list[dict[str, Any]], kind: str) -> list[str]:
    """The task ids of the ledger's entries of this kind, in order."""
    return [e["task_id"] for e in ledger if e["kind"] == kind]


def scenario_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- 1. the charge with its balance check --------------------------------------------------------


async def race_for_credits(servers: Sequence[Serve], per_server: int) -> None:
    """200 submits at once, spread over ``servers``, against credits for exactly 50 tasks."""
    async with clients(servers, per_server) as cs:
        await control(cs[0], "POST", "accounts", {"key": KEY, "credits": 50 * COST}, status=201)
        answers = await asyncio.gather(*(submit(cs[i % len(cs)], KEY, f"race {i}") for i in range(200)))
        codes = Counter(a["code"] for a in answers)
        assert codes == {200: 50, 0: 150}, codes
        assert all(a["msg"].startswith("Insufficient credits") for a in answers if a["code"] == 0)
        charged = {a["data"]["task_id"] for a in answers if a["code"] == 200}
        assert len(charged) == 50
        for c in cs:  # every replica (or worker) sees the one world
            seen = await account(c)
            assert seen["credits"] == 0
            assert sorted(entries(seen["ledger"], "charge")) == sorted(charged)
            assert [e["kind"] for e in seen["ledger"]].count("topup") == 1
            assert {t["task_id"] for t in await tasks_of(c)} == charged


def test_200_submits_over_two_replicas_charge_exactly_the_50_the_credits_pay_for() -> None:
    with replicas(2) as servers:
        asyncio.run(race_for_credits(servers, per_server=1))


def worker_pids(supervisor: int) -> list[int]:
    """The worker processes of ``serve --workers N``: the supervisor's children that multiprocessing
    spawned (not its resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children if b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def cpu_ticks(pid: int) -> int:
    """User and system CPU a process has used, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def test_200_submits_over_two_workers_charge_exactly_the_50_the_credits_pay_for() -> None:
    with serving(1, "--workers", "2", *store_args(world_name())) as (served,):
        assert "2 worker(s) here" in served.stdout.readline()  # the banner's store line
        workers = worker_pids(served.proc.pid)
        assert len(workers) == 2
        before = [cpu_ticks(pid) for pid in workers]
        # Two clients of 100 connections each on the one port: the kernel hands them to either worker.
        asyncio.run(race_for_credits([served], per_server=2))
        used = [cpu_ticks(pid) - b for pid, b in zip(workers, before, strict=True)]
        assert all(u > 0 for u in used), f"a worker served nothing: CPU ticks {used}"


# --- 2. refund once, whoever settles ------------------------------------------------------------------

FAILING = """
name: failing
seed: 3
clock: manual
start_time: 2026-01-01T00:00:00Z
defaults: {queued: 1, running: 1, outcome: failed, failure_message: "Out of GPUs."}
rules:
  - name: by-polls
    match: {prompt_contains: "[polls]"}
    progress: polls
    polls: {queued: 1, running: 1}
"""


def test_failed_tasks_settled_by_both_replicas_at_once_are_refunded_exactly_once(tmp_path: Path) -> None:
    n = 20  # of each kind: finished by the clock, finished by the third poll

    async def scenario(servers: list[Serve]) -> None:
        async with clients(servers) as (a, b):
            await control(a, "POST", "accounts", {"key": KEY, "credits": 2 * n * COST}, status=201)
            prompts = [f"by time {i}" for i in range(n)] + [f"by polls {i} [polls]" for i in range(n)]
            created = await asyncio.gather(*(submit((a, b)[i % 2], KEY, p) for i, p in enumerate(prompts)))
            ids = [c["data"]["task_id"] for c in created]
            assert (await account(b))["credits"] == 0
            # All at once: the advance through one replica (it settles what is due), and through both
            # four polls of every task (each settles what is due too; from the third on, each poll
            # finishes a task that progresses by polls), the task lists and the account (which settle too).
            work = [control(a, "POST", "clock/advance", {"seconds": 5})]
            work += [poll(c, KEY, task_id) for task_id in ids for c in (a, b) * 2]
            work += [tasks_of(c) for c in (a, b, a, b)] + [account(c) for c in (b, a)]
            await asyncio.gather(*work)
            for c in (a, b):
                polled = await asyncio.gather(*(poll(c, KEY, task_id) for task_id in ids))
                assert {p["data"]["task_status"] for p in polled} == {4}
                seen = await account(c)
                assert seen["credits"] == 2 * n * COST  # every charge back
                refunds = Counter(entries(seen["ledger"], "refund"))
                assert sorted(refunds) == sorted(ids) and set(refunds.values()) == {1}, refunds
                assert sorted(entries(seen["ledger"], "charge")) == sorted(ids)

    with replicas(2, "--scenario", scenario_file(tmp_path, FAILING)) as servers:
        asyncio.run(scenario(servers))


# --- 3. one clock ---------------------------------------------------------------------------------


def test_a_clock_advance_through_one_replica_finishes_tasks_polled_through_the_other() -> None:
    ci_key, start = "sk-ci000000000000000000000000000001", 1767225600.0  # the ci scenario's (queued 1, running 4)

    async def scenario(servers: list[Serve]) -> None:
        async with clients(servers) as (a, b):
            ok = await submit(a, ci_key, "a lighthouse")
            failing = await submit(a, ci_key, "a lighthouse [fail]")
            ids = [ok["data"]["task_id"], failing["data"]["task_id"]]
            # b's first request is a control one: the replica that joined serves the world's manual clock
            assert await control(b, "POST", "clock/advance", {"seconds": 2}) == {"now": start + 2}
            assert [(await poll(a, ci_key, i))["data"]["task_status"] for i in ids] == [2, 2]
            assert await control(a, "POST", "clock/advance", {"seconds": 3}) == {"now": start + 5}
            done, failed = [(await poll(b, ci_key, i))["data"] for i in ids]
            assert done["task_status"] == 3 and done["image_url"].endswith(f"/files/{ids[0]}.png")
            assert failed["task_status"] == 4 and failed["image_url"] is None
            assert (await account(b, ci_key))["credits"] == 1000 - COST  # the failure refunded, once
            for c in (a, b):
                health = await control(c, "GET", "health")
                assert (health["clock"], health["now"], health["store"], health["up"]) == (
                    "manual",
                    start + 5,
                    "redis",
                    True,
                )

    with replicas(2, "--scenario", "ci") as servers:
        assert all(s.banner[0].rstrip().endswith("manual clock") for s in servers), [s.banner[0] for s in servers]
        asyncio.run(scenario(servers))


# --- 4. rate limits across replicas ---------------------------------------------------------------------

LIMITED = """
name: limited
seed: 4
clock: manual
start_time: 2026-01-01T00:00:00Z
faults:
  - name: limit
    match: {route: create}
    rate_limit: {per_second: 5, burst: 5}
"""


def test_a_rate_limit_of_n_per_second_holds_across_replicas(tmp_path: Path) -> None:
    async def burst(cs: Sequence[httpx.AsyncClient], key: str, n: int = 40) -> Counter[int]:
        async def one(i: int) -> int:
            r = await cs[i % len(cs)].post(
                CREATE_PATH, json={"model_id": "gpt-image-2", "prompt": "p"}, headers=auth(key)
            )
            if r.status_code == 429:
                assert r.headers["x-mockgen-fault"] == "limit" and r.headers["retry-after"] == "1"
                assert r.json()["code"] == 429
            return r.status_code

        return Counter(await asyncio.gather(*(one(i) for i in range(n))))

    async def scenario(servers: list[Serve]) -> None:
        async with clients(servers) as cs:
            a, b = cs
            assert await burst(cs, KEY) == {200: 5, 429: 35}  # the burst, shared by both replicas
            assert await burst(cs, KEY) == {429: 40}  # the manual clock has not moved: no token came back
            await control(b, "POST", "clock/advance", {"seconds": 1})
            assert await burst(cs, KEY) == {200: 5, 429: 35}  # one second: 5 more
            await control(a, "POST", "clock/advance", {"seconds": 60})
            assert await burst(cs, KEY) == {200: 5, 429: 35}  # a minute: still no more than the burst
            assert await burst(cs, OTHER, 6) == {200: 5, 429: 1}  # a bucket per key
            assert len(entries((await account(a))["ledger"], "charge")) == 15

    with replicas(2, "--scenario", scenario_file(tmp_path, LIMITED)) as servers:
        asyncio.run(scenario(servers))


# --- 5. a replica killed under load ---------------------------------------------------------------------


def test_kill_9_of_one_replica_under_load_loses_no_acknowledged_task_or_ledger_entry() -> None:
    opening = 1_000_000
    acked: list[str] = []  # task ids answered code 200, through either replica
    lost = Counter[str]()  # requests without an answer, by the replica they went to
    busy = asyncio.Event()  # set once 30 submits are acknowledged: then the kill

    async def load(client: httpx.AsyncClient, name: str, rounds: int) -> None:
        for i in range(rounds):
            try:
                answer = await submit(client, KEY, f"{name} {i}")
            except httpx.TransportError:  # the replica is gone (killed mid-request, or refused)
                lost[name] += 1
                return
            assert answer["code"] == 200, answer
            acked.append(answer["data"]["task_id"])
            if len(acked) >= 30:
                busy.set()

    async def scenario(servers: list[Serve]) -> None:
        victim, survivor = servers
        async with clients(servers, per_server=8) as cs:
            await control(cs[1], "POST", "accounts", {"key": KEY, "credits": opening}, status=201)
            loads = [asyncio.create_task(load(c, f"r{i % 2}", 15)) for i, c in enumerate(cs)]
            async with asyncio.timeout(20):
                await busy.wait()  # both replicas busy
            victim.kill()
            async with asyncio.timeout(30):
                await asyncio.gather(*loads)
            assert lost["r0"] > 0 and not lost["r1"], lost  # the victim died mid-load; the survivor served on
            c = cs[1]
            seen = await account(c)
            charges = entries(seen["ledger"], "charge")
            assert len(set(charges)) == len(charges)  # each task charged once
            assert set(acked) <= set(charges)  # nothing acknowledged is lost from the ledger ...
            assert set(charges) == {t["task_id"] for t in await tasks_of(c)}  # ... nor a task: one a charge
            assert seen["credits"] == opening - COST * len(charges)
            polled = await asyncio.gather(*(poll(c, KEY, task_id) for task_id in acked))
            assert all(p["code"] == 200 for p in polled)
        assert survivor.proc.poll() is None

    with replicas(2, "--clock", "manual") as servers:
        asyncio.run(scenario(servers))
    assert servers[0].proc.returncode == -signal.SIGKILL


# --- 6. Redis stopped, frozen and back -------------------------------------------------------------------


def test_redis_stopped_or_frozen_mid_run_gives_503s_fast_and_service_resumes_by_itself() -> None:
    redis = RedisServer(persist=True)  # its own: this test stops it (and the data outlives a restart)

    async def outage(c: httpx.AsyncClient, task_id: str) -> None:
        """Every kind of request, twice and all at once, answered 503 within 2 s each: the contract's
        envelope, health, the control API."""
        requests = [
            ("POST", CREATE_PATH, {"json": {"model_id": "gpt-image-2", "prompt": "p"}, "headers": auth(KEY)}),
            ("GET", f"/api/v1/tasks/{task_id}", {"headers": auth(KEY)}),
            ("GET", "/_mock/health", {}),
            ("GET", f"/_mock/accounts/{KEY}", {}),
        ]

        async def timed(method: str, path: str, options: dict[str, Any]) -> tuple[httpx.Response, float]:
            started = time.monotonic()
            return await c.request(method, path, **options), time.monotonic() - started

        answers = await asyncio.gather(*(timed(*request) for request in requests * 2))
        for (_, path, _), (r, elapsed) in zip(requests * 2, answers, strict=True):
            assert r.status_code == 503 and elapsed < 2, (path, r.status_code, elapsed, r.text)
            body = r.json()
            if path.startswith("/api/"):
                assert body == {"code": 503, "msg": Msg.STORE_DOWN, "data": None}
            elif path == "/_mock/health":
                assert body["status"] == "store down" and body["up"] is False and body["store"] == "redis"
            else:
                assert "unavailable" in body["error"]

    async def served(c: httpx.AsyncClient, task_id: str, balance: int) -> None:
        assert (await poll(c, KEY, task_id))["data"]["task_id"] == task_id  # acknowledged before: still there
        assert (await account(c))["credits"] == balance
        assert (await submit(c, KEY))["code"] == 200

    async def scenario(servers: list[Serve]) -> None:
        async with clients(servers) as (c,):
            task_id = (await submit(c, KEY))["data"]["task_id"]
            process = redis.process
            assert process is not None
            os.kill(process.pid, signal.SIGSTOP)  # frozen: connections open, nothing answers
            try:
                await outage(c, task_id)
            finally:
                os.kill(process.pid, signal.SIGCONT)
            await served(c, task_id, 1000 - COST)
            redis.stop()  # gone: connections refused
            await outage(c, task_id)
            redis.start()  # back on the same port, with its data
            await served(c, task_id, 1000 - 2 * COST)  # the first request after: no retrying needed
            assert (await control(c, "GET", "health"))["up"] is True

    try:
        with replicas(1, url=redis.url) as servers:
            asyncio.run(scenario(servers))
        assert "Traceback" not in servers[0].errors, servers[0].errors
    finally:
        if redis.process is not None:
            os.kill(redis.process.pid, signal.SIGCONT)  # (a stopped process would not see SIGTERM)
        redis.close()


# --- 7. the same world on Redis as in memory ------------------------------------------------------------

DICE = """
name: dice
seed: 11
clock: manual
start_time: 2026-01-01T00:00:00Z
defaults: {queued: 0.5..3, running: 1..6, outcome: {success: 60, failed: 40}}
models:
  veo-9: {task_type: video, cost: 40}
rules:
  - name: coin
    match: {prompt_contains: "[coin]", probability: 0.5}
    outcome: failed
    failure_message: "Heads."
"""


async def play(servers: Sequence[Serve]) -> list[Any]:
    """One sequence of requests (each through the next server in turn), and everything it saw."""
    seen: list[Any] = []
    async with clients(servers) as cs:
        turn = count()

        def c() -> httpx.AsyncClient:
            return cs[next(turn) % len(cs)]

        drawn = (await control(c(), "POST", "accounts", {"credits": 500}, status=201))["key"]  # a key from the seed
        await control(c(), "POST", "next", {"outcome": "failed", "count": 2, "model_id": "veo-9"}, status=201)
        ids = []
        for i in range(16):
            key = (KEY, drawn)[i % 2]
            model = ("gpt-image-2", "veo-9", "nano-banana-2")[i % 3]
            answer = await submit(c(), key, f"prompt {i} [coin]" if i % 4 == 0 else f"prompt {i}", model_id=model)
            seen.append(answer)
            ids.append((key, answer["data"]["task_id"]))
        for _ in range(4):
            seen.append(await control(c(), "POST", "clock/advance", {"seconds": 1.5}))
            seen += [(await poll(c(), key, task_id))["data"] for key, task_id in ids]
        seen += [await account(c(), key) for key in (KEY, drawn)]
        seen += await tasks_of(c(), drawn) + await tasks_of(c(), KEY)
    text = json.dumps(seen)
    for served in servers:  # result URLs name the server that answered
        text = text.replace(served.base, "http://mockgen")
    return json.loads(text)  # type: ignore[no-any-return]


def test_the_same_scenario_and_requests_give_the_same_world_on_redis_as_in_memory(tmp_path: Path) -> None:
    # A listed account is the banner's key, on either store: starting a server draws nothing.
    listed = DICE + f"accounts: [{{key: {OTHER}, name: banner, credits: 100}}]\n"
    scenario = ("--scenario", scenario_file(tmp_path, listed))
    with serving(1, *scenario) as memory:
        expected = asyncio.run(play(memory))
    with replicas(2, *scenario) as servers:
        got = asyncio.run(play(servers))
    assert {a["code"] for a in got[:16]} == {200}
    statuses = {p["task_status"] for p in got if isinstance(p, dict) and "task_status" in p}
    assert statuses == {1, 2, 3, 4}  # the sequence saw every status
    assert got == expected


def test_a_scenario_without_listed_accounts_gives_the_same_first_task_on_redis_as_in_memory(tmp_path: Path) -> None:
    async def first_task(servers: Sequence[Serve]) -> Any:
        async with clients(servers) as (c,):
            return (await submit(c, KEY))["data"]

    scenario = ("--scenario", scenario_file(tmp_path, DICE))
    with serving(1, *scenario) as memory:
        expected = asyncio.run(first_task(memory))
    with replicas(1, *scenario) as servers:
        assert asyncio.run(first_task(servers)) == expected


# --- 8. joining a world, not resetting it -----------------------------------------------------------------


async def first_half(servers: Sequence[Serve]) -> list[Any]:
    async with clients(servers) as (a, b):
        await control(a, "POST", "accounts", {"key": KEY, "credits": 300}, status=201)
        made = [await submit((a, b)[i % 2], KEY, f"before {i}") for i in range(6)]
        await control(b, "POST", "clock/advance", {"seconds": 1})
        return made


async def world_view(served: Serve) -> list[Any]:
    """The account, its tasks and the clock, as one replica shows them."""
    async with clients([served]) as (c,):
        return [await account(c), await tasks_of(c), (await control(c, "GET", "health"))["now"]]


async def second_half(servers: Sequence[Serve]) -> list[Any]:
    async with clients(servers) as (a, b):
        await control(a, "POST", "clock/advance", {"seconds": 2})
        return [await submit((a, b)[i % 2], KEY, f"after {i}") for i in range(6)]


def test_a_replica_restarted_on_a_world_joins_it_and_shifts_no_ids(tmp_path: Path) -> None:
    args = ("--scenario", scenario_file(tmp_path, DICE))
    with replicas(1, *args) as (reference,):  # the world where no replica restarts (which one answers: no matter)
        expected = asyncio.run(first_half([reference] * 2)), asyncio.run(second_half([reference] * 2))

    prefix = world_name()
    with replicas(2, *args, prefix=prefix) as (a, b):
        assert asyncio.run(first_half([a, b])) == expected[0]
        before = asyncio.run(world_view(b))
        a.kill()  # a crash, then the same command again
        with serving(1, *args, *store_args(prefix)) as (again,):
            assert again.banner[0].rstrip().endswith("manual clock")
            assert asyncio.run(world_view(again)) == before  # balances, ledger, tasks and the clock as they were
            assert asyncio.run(second_half([again, b])) == expected[1]  # the same ids as without the restart
