"""RedisStore against a real redis-server: its own behaviour, and two stores on one world as two replicas
(each its own client and connections) racing for the same charge, refund, finish and due tasks."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

import pytest
import redis

from mockgen.clock import ManualClock, SystemClock
from mockgen.models import FAILED, NEVER, SUCCEEDED, Account, Ledger, LedgerEntry, NextOutcome, Plan, Task
from mockgen.redis_store import RedisStore
from mockgen.store import NEXT_LIMIT, MemoryStore, Store, StoreUnavailable

from .conftest import free_port
from .redis_server import RedisServer, make_redis_store, redis_server, session_server

pytestmark = pytest.mark.usefixtures(redis_server.__name__)

T = TypeVar("T")
PLAN = Plan("gpt-image-2", "image", 15, "success", "")
FAILING = Plan("gpt-image-2", "image", 15, "failed", "content policy")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def task(task_id: str, key: str = "sk-a", plan: Plan = PLAN, finish_at: float = 10.0, **fields: Any) -> Task:
    return Task(plan, task_id, key, "a zen garden", "1:1", ("https://x.test/a.png",), 1.0, "kie_" + task_id,
                2.0, finish_at, **fields)  # fmt: skip


@asynccontextmanager
async def replicas(n: int = 2, url: str | None = None, **bounds: Any) -> AsyncIterator[list[RedisStore]]:
    """``n`` RedisStores on one fresh world, each with its own client (as ``n`` processes would be)."""
    first = await make_redis_store(url, **bounds)
    stores = [first] + [RedisStore(first.url, first.prefix, **bounds) for _ in range(n - 1)]
    try:
        yield stores
    finally:
        try:
            await first.clear()
        finally:
            for store in stores:
                await store.close()


# --- one store: what it keeps comes back as it was, as new objects -------------------------------------------


@pytest.mark.parametrize("over", ["tcp", "unix"])
def test_accounts_and_tasks_round_trip(over: str) -> None:
    url = session_server().url if over == "tcp" else session_server().unix_url

    async def scenario() -> None:
        async with replicas(1, url) as (store,):
            assert await store.add_account(Account("sk-a", 100, "alice")) == Account("sk-a", 100, "alice")
            assert await store.add_account(Account("sk-b", 7)) == Account("sk-b", 7)
            assert await store.add_account(Account("sk-a", 5)) == Account("sk-a", 100, "alice")  # the one kept
            first, again = await store.get_account("sk-a"), await store.get_account("sk-a")
            assert first == again and first is not again and first is not None and first.stored
            assert await store.get_account("sk-none") is None
            assert [a.key for a in await store.accounts()] == ["sk-a", "sk-b"]
            assert [a.key for a in await store.accounts(1)] == ["sk-b"]
            assert await store.account_count() == 2

            kept = task("t1")
            assert await store.submit(kept) is True
            got = await store.get_task("t1")
            assert got == kept and got is not kept and got is not await store.get_task("t1")
            assert got is not None and got.plan == PLAN and got.image_urls == ("https://x.test/a.png",)
            never = task("t2", finish_at=NEVER)
            assert await store.submit(never) is True
            assert (await store.get_task("t2")) == never
            assert [t.task_id for t in await store.tasks()] == ["t1", "t2"] and await store.task_count() == 2
            # tasks that share a plan share its decoded object, as in memory
            one, two = await store.get_task("t1"), await store.get_task("t2")
            assert one is not None and two is not None and one.plan is two.plan

            assert [await store.count_poll("t1") for _ in range(3)] == [1, 2, 3]
            assert await store.count_poll("nope") == 0  # a task not kept: nothing counted, nothing made
            assert await store.finish("t1", FAILED, 3.5, "no luck") is True
            finished = await store.get_task("t1")
            assert finished is not None
            assert (finished.polls, finished.final_status, finished.settled_at, finished.message) == (
                3, FAILED, 3.5, "no luck",
            )  # fmt: skip
            assert (await store.get_account("sk-a")) == Account("sk-a", 85, "alice")  # t1 refunded, t2 charged
            ledger = [e.as_dict() for e in await store.ledger("sk-a")]
            assert ledger == [
                {"kind": "charge", "amount": 15, "at": 1.0, "task_id": "t1"},
                {"kind": "charge", "amount": 15, "at": 1.0, "task_id": "t2"},
                {"kind": "refund", "amount": 15, "at": 3.5, "task_id": "t1"},
            ]
            assert await store.credit("sk-b", -50, 4.0, "topup") == 0  # never below zero
            assert [e.amount for e in await store.ledger("sk-b")] == [-7]

    run(scenario())


def test_a_submit_refuses_a_short_balance_an_unknown_key_and_an_id_in_use_and_is_idempotent() -> None:
    async def scenario() -> None:
        async with replicas(1) as (store,):
            await store.add_account(Account("sk-a", 20))
            assert await store.submit(task("t1")) is True
            assert await store.submit(replace(task("t1"), request_id="kie_other")) is None  # the id is taken
            assert await store.submit(task("t1")) is True  # the same submit again (a retry): charged once
            assert await store.submit(task("t2")) is False  # 5 left, 15 asked
            assert await store.submit(task("t3", key="sk-nobody")) is False
            account = await store.get_account("sk-a")
            assert account is not None and account.credits == 5 and await store.task_count() == 1

    run(scenario())


def test_any_key_and_any_balance_within_the_bounds_come_back_exactly() -> None:
    async def scenario() -> None:
        async with replicas(1) as (store,):
            key, big = "sk-ключ|🙂\ud800 x", 2**53 - 1  # (a lone surrogate: JSON can carry one)
            await store.add_account(Account(key, 0, "名前"))
            assert await store.credit(key, big, 1.0, "topup") == big
            assert [e.amount for e in await store.ledger(key)] == [big]
            failing = task("t1", key=key, plan=FAILING)
            assert await store.submit(failing) is True
            assert await store.finish("t1", FAILED, 2.0, "no") is True  # refunded to that key, found by bytes
            assert await store.get_task("t1") == Task(
                FAILING, "t1", key, "a zen garden", "1:1", ("https://x.test/a.png",), 1.0, "kie_t1", 2.0, 10.0,
                final_status=FAILED, settled_at=2.0, message="no",
            )  # fmt: skip
            assert await store.get_account(key) == Account(key, big, "名前")
            assert [e.kind for e in await store.ledger(key)] == ["topup", "charge", "refund"]

    run(scenario())


def test_make_room_evicts_the_task_that_finished_first() -> None:
    async def scenario() -> None:
        async with replicas(1, max_tasks=3) as (store,):
            await store.add_account(Account("sk-a", 1000))
            for i in range(3):
                assert await store.make_room() and await store.submit(task(f"t{i}", finish_at=NEVER))
            assert await store.make_room() is False  # every task kept is unfinished
            await store.finish("t2", SUCCEEDED, 5.0)
            await store.finish("t0", FAILED, 6.0, "x")
            assert await store.make_room() is True
            assert [t.task_id for t in await store.tasks()] == ["t0", "t1"]  # t2 finished first: gone
            assert await store.submit(task("t3", finish_at=NEVER)) is True
            assert await store.make_room() is True and [t.task_id for t in await store.tasks()] == ["t1", "t3"]
            assert await store.refund(task("t0"), 7.0) is True  # t0's refund marker went with it

    run(scenario())


def test_ledgers_are_bounded_per_account_and_in_all_and_balances_stay() -> None:
    async def scenario() -> None:
        async with replicas(1, ledger_limit=4, ledger_total=10) as (store,):
            for key in ("sk-a", "sk-b"):
                await store.add_account(Account(key, 0))
            for i in range(20):
                await store.credit("sk-a" if i % 3 else "sk-b", 1, float(i), "topup")
            a, b = await store.ledger("sk-a"), await store.ledger("sk-b")
            assert len(a) <= 4 and len(b) <= 4 and len(a) + len(b) <= 10
            assert [e.at for e in a] == sorted(e.at for e in a) and a[-1].at == 19.0  # the newest kept
            assert [(await store.get_account(k)).credits for k in ("sk-a", "sk-b")] == [13, 7]  # type: ignore[union-attr]

    run(scenario())


def test_counters_buckets_sequence_and_the_next_queue() -> None:
    async def scenario() -> None:
        async with replicas(1) as (store,):
            assert [await store.count("rule:0", "sk-a") for _ in range(3)] == [1, 2, 3]
            assert await store.count("rule:0", "") == 1
            taken = [await store.take_token("rl", "sk-a", 2, 1.0, 100.0) for _ in range(3)]
            assert taken == [True, True, False]
            assert await store.take_token("rl", "sk-a", 2, 1.0, 101.0) is True  # a second refills one token
            assert [await store.next_seq() for _ in range(3)] == [1, 2, 3]

            assert await store.queue_next(NextOutcome("failed", 2, None, "sk-a", "m")) == 1
            assert await store.queue_next(NextOutcome("success", 1, "gpt-image-2")) == 2
            assert await store.queue_next(NextOutcome("failed", 1)) == 3
            assert [e.outcome for e in await store.queued(2)] == ["success", "failed"]
            # the oldest entry that matches, one of its count used each time
            assert await store.take_next("seedance-2", "sk-b") == NextOutcome("failed", 0)
            assert await store.take_next("gpt-image-2", "sk-a") == NextOutcome("failed", 1, None, "sk-a", "m")
            assert await store.take_next("gpt-image-2", "sk-a") == NextOutcome("failed", 0, None, "sk-a", "m")
            assert await store.take_next("gpt-image-2", "sk-a") == NextOutcome("success", 0, "gpt-image-2")
            assert await store.take_next("gpt-image-2", "sk-a") is None and await store.queued() == []
            for i in range(NEXT_LIMIT):
                assert await store.queue_next(NextOutcome("success", 1)) == i + 1
            assert await store.queue_next(NextOutcome("success", 1)) is None  # full
            await store.clear_next()
            assert await store.queued() == [] and await store.take_next("m", "k") is None

    run(scenario())


@pytest.mark.parametrize("kind", ["redis", "memory"])  # (the memory store as the reference)
def test_counters_and_buckets_are_bounded(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("mockgen.redis_store", "mockgen.store"):
        monkeypatch.setattr(f"{module}.MAX_COUNTERS", 3)
        monkeypatch.setattr(f"{module}.MAX_BUCKETS", 3)

    async def check(store: Store) -> None:
        for key in ("a", "b", "c", "a", "d"):  # d is one too many: a, the first seen, goes
            await store.count("s", key)
        assert [await store.count("s", key) for key in ("b", "a", "c", "b")] == [2, 1, 2, 1]  # a pushed b out
        for key in ("a", "b", "c"):
            assert await store.take_token("rl", key, 1, 0.0, 1.0) is True  # each bucket's one token
        assert await store.take_token("rl", "a", 1, 0.0, 1.0) is False  # a: used last now
        assert await store.take_token("rl", "d", 1, 0.0, 1.0) is True  # one too many: b, used longest ago, goes
        assert await store.take_token("rl", "b", 1, 0.0, 1.0) is True  # a bucket not kept is a full one
        assert await store.take_token("rl", "a", 1, 0.0, 1.0) is False  # a was kept (c went for b)

    async def scenario() -> None:
        if kind == "memory":
            await check(MemoryStore())
            return
        async with replicas(1) as (store,):
            await check(store)

    run(scenario())


def test_clear_empties_the_world_and_starts_the_sequence_over() -> None:
    async def scenario() -> None:
        async with replicas(1) as (store,):
            await store.add_account(Account("sk-a", 100))
            await store.submit(task("t1"))
            await store.queue_next(NextOutcome("failed", 1, "gpt-image-2"))
            await store.count("s", "k")
            await store.next_seq()
            await store.clear()
            assert await store.accounts() == [] and await store.tasks() == [] and await store.queued() == []
            assert await store.ledger("sk-a") == [] and await store.settle(100.0) == 0
            assert await store.count("s", "k") == 1 and await store.next_seq() == 1

    run(scenario())


def test_staged_world_is_taken_in_one_step_and_the_old_one_released() -> None:
    async def scenario() -> None:
        async with replicas(2) as (mine, other):
            await mine.add_account(Account("sk-old", 5))
            assert await mine.next_seq() == 1
            done = task("done", final_status=FAILED, settled_at=3.0, message="x", polls=2)
            staged = await mine.staged(
                [Account("sk-new", 50, "neo", [])], [task("due", key="sk-new"), done], [NextOutcome("failed", 1)]
            )
            assert [a.key for a in await other.accounts()] == ["sk-old"]  # nobody sees it before the take
            await mine.take(staged)
            assert [a.key for a in await other.accounts()] == ["sk-new"]
            assert [t.task_id for t in await other.tasks()] == ["due", "done"]
            assert await other.get_task("done") == done
            assert await other.settle(10.0) == 1  # an unfinished task is queued to finish
            assert await other.refund(done, 5.0) is False  # a failed task was refunded when it finished
            assert await other.queued() == [NextOutcome("failed", 1)]
            assert await other.next_seq() == 2  # the sequence goes on
            assert [a.key for a in await staged.accounts()] == ["sk-old"]  # the old world, to release
            await asyncio.to_thread(staged.release)
            assert await staged.accounts() == [] and await staged.task_count() == 0
            assert [a.key for a in await other.accounts()] == ["sk-new"]

    run(scenario())


# --- two replicas on one world ------------------------------------------------------------------------------


def test_200_concurrent_submits_from_two_replicas_charge_exactly_what_the_balance_covers() -> None:
    async def scenario() -> None:
        async with replicas(2) as stores:
            await stores[0].add_account(Account("sk-a", 50 * PLAN.credits))
            results = await asyncio.gather(*(stores[i % 2].submit(task(f"t{i:03}")) for i in range(200)))
            assert results.count(True) == 50 and results.count(False) == 150
            account = await stores[1].get_account("sk-a")
            assert account is not None and account.credits == 0
            ledger = await stores[1].ledger("sk-a")
            assert len(ledger) == 50 and {e.kind for e in ledger} == {"charge"}
            assert await stores[0].task_count() == 50

    run(scenario())


def test_a_failed_task_is_refunded_once_and_finished_once_whoever_asks() -> None:
    async def scenario() -> None:
        async with replicas(2) as stores:
            await stores[0].add_account(Account("sk-a", 100))
            failing = task("t1", plan=FAILING)
            await stores[0].submit(failing)
            refunds = await asyncio.gather(*(stores[i % 2].refund(failing, 5.0) for i in range(20)))
            assert refunds.count(True) == 1
            await stores[0].submit(task("t2", plan=FAILING))
            finishes = await asyncio.gather(
                *(stores[i % 2].finish("t2", FAILED if i % 3 else SUCCEEDED, 6.0 + i, "no") for i in range(20))
            )
            assert finishes.count(True) == 1
            account = await stores[1].get_account("sk-a")
            assert account is not None
            kinds = [e.kind for e in await stores[1].ledger("sk-a")]
            winner = await stores[1].get_task("t2")
            assert winner is not None and winner.final_status in (FAILED, SUCCEEDED)
            if winner.final_status == FAILED:  # refunded in the same step, once
                assert account.credits == 100 and kinds.count("refund") == 2
            else:
                assert account.credits == 85 and kinds.count("refund") == 1

    run(scenario())


def test_failed_tasks_settled_by_two_replicas_at_once_are_refunded_once() -> None:
    async def scenario() -> None:
        async with replicas(2) as stores:
            await stores[0].add_account(Account("sk-a", 100 * 15))
            for i in range(100):
                assert await stores[i % 2].submit(task(f"t{i:03}", plan=FAILING, finish_at=10.0 + i % 7))

            async def settle(store: RedisStore) -> int:
                # what each replica does at once: settle what is due, and finish each task it is asked about
                done = await store.settle(20.0)
                for i in range(100):
                    done += await store.finish(f"t{i:03}", FAILED, 20.0, "x")
                return done

            finished = await asyncio.gather(settle(stores[0]), settle(stores[1]), settle(stores[1]))
            assert sum(finished) == 100
            account = await stores[0].get_account("sk-a")
            assert account is not None and account.credits == 100 * 15
            kinds = [e.kind for e in await stores[1].ledger("sk-a")]
            assert (kinds.count("charge"), kinds.count("refund")) == (100, 100)

    run(scenario())


def test_two_replicas_settling_due_tasks_never_both_finish_one() -> None:
    async def scenario() -> None:
        async with replicas(2) as stores:
            await stores[0].add_account(Account("sk-a", 300 * 15))
            for i in range(300):
                await stores[i % 2].submit(task(f"t{i:03}", finish_at=10.0 + i / 10))

            async def settle(store: RedisStore) -> int:
                done = 0
                for step in range(40):  # bounded: 40 steps of a second cover every finish_at (10 .. 39.9)
                    done += await store.settle(10.0 + step)
                    await asyncio.sleep(0)
                return done

            first, second = await asyncio.gather(settle(stores[0]), settle(stores[1]))
            assert first + second == 300  # each finished by one of them, once
            settled = {t.task_id: t.settled_at for t in await stores[1].tasks()}
            assert settled == {f"t{i:03}": 10.0 + i / 10 for i in range(300)}  # each at its own time

    run(scenario())


def test_a_manual_clock_advanced_through_one_replica_is_seen_by_the_other() -> None:
    async def scenario() -> None:
        async with replicas(2) as (one, other):
            await one.set_clock(ManualClock(1000.0))
            assert isinstance(other.clock, SystemClock)
            await other.get_account("sk-any")  # each request's first step brings the clock along
            assert other.clock.kind == "manual" and other.clock.now() == 1000.0
            assert await one.advance_clock(5.5) == 1005.5
            assert other.clock.now() == 1000.0
            assert (await other.refresh()).now() == 1005.5
            await asyncio.gather(*(store.advance_clock(0.25) for store in (one, other) for _ in range(10)))
            assert (await one.refresh()).now() == (await other.refresh()).now() == 1010.5
            with pytest.raises(ValueError):
                await one.advance_clock(-1)
            await other.set_clock(SystemClock())
            await one.refresh()
            assert one.clock.kind == "real"
            with pytest.raises(ValueError):
                await one.advance_clock(1)

    run(scenario())


def test_prefixes_are_worlds_of_their_own_and_clear_touches_only_its_own() -> None:
    async def scenario() -> None:
        async with replicas(1) as (a,), replicas(1) as (b,):
            for store in (a, b):
                await store.add_account(Account("sk-a", 100))
                await store.submit(task("t1"))
            await a.clear()
            assert await a.get_account("sk-a") is None and await a.task_count() == 0
            assert await b.get_account("sk-a") is not None and await b.task_count() == 1
            client = redis.Redis.from_url(session_server().url)
            try:
                left = {k.decode() for k in client.scan_iter(match=f"{{{a.prefix}}}:*")}
                assert left == set()  # (no clock was set)
                assert client.exists(f"{{{b.prefix}}}:w:tasks")
            finally:
                client.close()

    run(scenario())


# --- when Redis is away ---------------------------------------------------------------------------------------


def test_a_closed_port_fails_fast_with_store_unavailable() -> None:
    async def scenario() -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "down")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.get_account("sk-a")
            assert time.monotonic() - started < 2
        finally:
            await store.close()

    run(scenario())


def test_redis_stopped_or_frozen_mid_run_fails_fast_and_service_resumes() -> None:
    server = RedisServer()
    try:

        async def scenario() -> None:
            async with replicas(1, server.url) as (store,):
                await store.add_account(Account("sk-a", 100))
                assert await store.submit(task("t1")) is True

                process = server.process
                assert process is not None
                os.kill(process.pid, signal.SIGSTOP)  # frozen: the socket timeout answers
                try:
                    started = time.monotonic()
                    with pytest.raises(StoreUnavailable):
                        await store.get_task("t1")
                    assert time.monotonic() - started < 2
                finally:
                    os.kill(process.pid, signal.SIGCONT)
                assert await store.get_task("t1") is not None

                server.stop()  # gone (its data with it: nothing is saved)
                for _ in range(3):
                    started = time.monotonic()
                    with pytest.raises(StoreUnavailable):
                        await store.get_account("sk-a")
                    assert time.monotonic() - started < 2
                server.start()
                assert await store.get_account("sk-a") is None  # connected again, scripts loaded again
                assert await store.add_account(Account("sk-a", 30)) is not None
                assert await store.submit(task("t1")) is True

        run(scenario())
    finally:
        server.close()


def test_a_redis_that_cannot_serve_now_is_unavailable_too() -> None:
    async def scenario() -> None:
        async with replicas(1) as (store,):
            await store.add_account(Account("sk-a", 100))
            client = redis.Redis.from_url(session_server().url)
            try:
                client.config_set("maxmemory", 1)  # every write refused with OOM
                with pytest.raises(StoreUnavailable, match="maxmemory"):
                    await store.submit(task("t1"))
                assert (await store.get_account("sk-a")) == Account("sk-a", 100)  # reads go on
            finally:
                client.config_set("maxmemory", 0)
                client.close()
            assert await store.submit(task("t1")) is True

    run(scenario())


@pytest.mark.parametrize("seed", [13, 14, 15, 16])
def test_the_same_steps_give_the_same_answers_as_the_memory_store(seed: int) -> None:
    """A seeded run of every kind of step on both stores: each answer, and the world after, alike."""
    rng = random.Random(seed)
    keys = ["sk-a", "sk-b", "sk-c"]
    outcomes = [Plan("gpt-image-2", "image", c, o, "m") for c in (0, 5, 15) for o in ("success", "failed")]

    def new_task(i: int) -> Callable[[], Task]:
        plan, key, finish_at = rng.choice(outcomes), rng.choice(keys), rng.choice([NEVER, 5.0 + i % 40])
        task_id = f"t{rng.randrange(60):02}"  # ids collide now and then
        return lambda: Task(plan, task_id, key, "p", "1:1", (), 1.0, f"kie_{i}", 2.0, finish_at)

    steps: list[tuple[str, Any]] = []
    for i in range(400):
        kind = rng.choice(
            ["add", "credit", "submit", "submit", "submit", "room", "finish", "refund", "poll", "due", "count",
             "token", "seq", "queue", "take_next", "queued"]
        )  # fmt: skip
        arg: Any = {
            "add": (rng.choice(keys + ["sk-d"]), rng.randrange(100)),
            "credit": (rng.choice(keys), rng.randrange(-30, 30), float(i)),
            "submit": new_task(i),
            "finish": (f"t{rng.randrange(60):02}", rng.choice([SUCCEEDED, FAILED]), float(i)),
            "refund": new_task(i),
            "poll": f"t{rng.randrange(60):02}",
            "due": 5.0 + i / 10,
            "count": rng.choice(["r:0", "r:1"]),
            "token": (rng.choice(keys), float(i) / 4),
            "queue": (rng.choice(["success", "failed"]), rng.randrange(1, 3), rng.choice([None, "gpt-image-2"])),
            "take_next": rng.choice(keys),
        }.get(kind)
        steps.append((kind, arg))

    async def play(store: Store) -> list[Any]:
        answers: list[Any] = []
        for key in keys:
            await store.add_account(Account(key, 60))
        for kind, arg in steps:
            try:
                if kind == "add":
                    answer: Any = await store.add_account(Account(arg[0], arg[1]))
                    answer = (answer.key, answer.credits) if answer else None
                elif kind == "credit":
                    answer = await store.credit(arg[0], arg[1], arg[2], "topup")
                elif kind == "submit":
                    answer = await store.submit(arg())
                elif kind == "room":
                    answer = await store.make_room()
                elif kind == "finish":
                    answer = await store.finish(*arg, message="no")
                elif kind == "refund":
                    answer = await store.refund(arg(), 9.0)
                elif kind == "poll":
                    answer = await store.count_poll(arg)
                elif kind == "due":
                    answer = await store.settle(arg)
                elif kind == "count":
                    answer = await store.count(arg, "")
                elif kind == "token":
                    answer = await store.take_token("rl", arg[0], 2, 1.0, arg[1])
                elif kind == "seq":
                    answer = await store.next_seq()
                elif kind == "queue":
                    answer = await store.queue_next(NextOutcome(arg[0], arg[1], arg[2]))
                elif kind == "take_next":
                    taken = await store.take_next("gpt-image-2", arg)
                    answer = None if taken is None else replace(taken)
                else:
                    answer = [replace(e) for e in await store.queued()]
            except KeyError as error:
                answer = ("KeyError", str(error))
            answers.append(answer)
        answers.append([(a.key, a.credits) for a in await store.accounts()])
        answers.append([[e.as_dict() for e in await store.ledger(key)] for key in keys])
        answers.append([t.fields() for t in await store.tasks()])
        return answers

    async def scenario() -> None:
        async with replicas(1, max_tasks=25) as (redis_store,):
            expected = await play(MemoryStore(max_tasks=25))
            got = await play(redis_store)
            assert got[:-3] == expected[:-3]  # (compared by step first: a failure shows the first that differs)
            assert got == expected
            kinds = [kind for (kind, _), answer in zip(steps, got, strict=False) if answer not in (False, None)]
            assert {"submit", "finish", "refund", "room", "due", "take_next"} <= set(kinds)  # each one did something

    run(scenario())


def test_a_big_staged_world_is_written_in_batches_and_listed_in_pages() -> None:
    n = 2_500  # past one page of tasks (1,000) and past max_tasks
    entries = [LedgerEntry("topup", 1, float(i)) for i in range(30)]

    async def scenario() -> None:
        async with replicas(1, max_tasks=2_000, ledger_total=40) as (store,):
            finished = [task(f"f{i:04}", final_status=SUCCEEDED, settled_at=3.0) for i in range(n - 1_900)]
            unfinished = [task(f"u{i:04}", finish_at=NEVER) for i in range(1_900)]
            accounts = [Account("sk-a", 30, None, Ledger(entries)), Account("sk-b", 30, None, Ledger(entries))]
            staged = await store.staged(accounts, finished + unfinished, [])
            await store.take(staged)
            await asyncio.to_thread(staged.release)
            kept = [t.task_id for t in await store.tasks()]
            # past max_tasks the tasks that finished first went, as MemoryStore.staged does it
            assert len(kept) == 2_000 and kept == [t.task_id for t in finished[500:] + unfinished]
            a, b = await store.ledger("sk-a"), await store.ledger("sk-b")
            assert (len(a), len(b)) == (9, 30)  # the oldest of all went (sk-a's), a batch under the bound
            memory = MemoryStore(max_tasks=2_000, ledger_total=40)
            await memory.take(await memory.staged(accounts, finished + unfinished, []))
            assert [t.task_id for t in await memory.tasks()] == kept
            assert [len(await memory.ledger(k)) for k in ("sk-a", "sk-b")] == [9, 30]
            assert [(await store.get_account(k)).credits for k in ("sk-a", "sk-b")] == [30, 30]  # type: ignore[union-attr]

    run(scenario())


def test_a_backend_on_redis_gives_the_ids_outcomes_and_ledger_it_gives_on_memory() -> None:
    """The Backend unchanged on either store: the same scenario and requests, the same world after
    (a state export and its import included: staged, taken and released)."""
    from mockgen.backend import Backend
    from mockgen.scenario import load_scenario
    from mockgen.state import export_state, import_state

    async def world(store: Store) -> list[Any]:
        backend = Backend(load_scenario("refund-demo"), clock=ManualClock(1_700_000_000.0), store=store)
        await backend.reset()
        key = await backend.ready_key()
        account = await backend.authenticate(f"Bearer {key}")
        tasks = [await backend.submit(account, {"model_id": "gpt-image-2", "prompt": f"p{i}"}) for i in range(6)]
        await backend.advance(120)
        polled = [await backend.query(account, t.task_id) for t in tasks]
        state = await export_state(backend)
        await import_state(backend, state)
        return [
            [(t.task_id, t.request_id, t.final_status, t.polls) for t in polled],
            (await backend.authenticate(f"Bearer {key}")).credits,
            [e.as_dict() for e in await backend.ledger(key)],
            state,
            await export_state(backend) == state,
        ]

    async def scenario() -> None:
        expected = await world(MemoryStore())
        async with replicas(1) as (store,):
            assert await world(store) == expected
        assert {status for _, _, status, _ in expected[0]} == {SUCCEEDED, FAILED} and expected[-1] is True

    run(scenario())
