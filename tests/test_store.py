"""The Store conformance suite: what every Store implementation must do, run on each kind (tests/stores.py).

Only the protocol's methods are used, each for its documented meaning; steps that must be atomic are
raced with ``asyncio.gather`` (a shared store does I/O between them, so a check-then-act one loses).
Accounts and tasks a store hands out are read, never changed, and read again after a step: a shared
store's are snapshots. The suite's own last tests show it catches stores that are not atomic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import mockgen.store
from mockgen.clock import ManualClock, SystemClock
from mockgen.models import NEVER, Account, Ledger, LedgerEntry, NextOutcome, Plan, Task
from mockgen.spec import FAILED, SUCCEEDED
from mockgen.store import NEXT_LIMIT, MemoryStore, Reserved, Store, run_now

from .stores import ENV, STORES, Kind, Stores, chosen, imported, selected

KEY = "sk-" + "a" * 32
OTHER = "sk-" + "b" * 32
COST = 15


@pytest.fixture(params=selected())
def stores(request: pytest.FixtureRequest) -> Stores:
    stores = Stores(request.param, STORES[request.param], required=chosen())
    for name in stores.kind.fixtures:
        try:
            request.getfixturevalue(name)
        except pytest.skip.Exception as skipped:
            stores.refuse_skip(skipped)
            raise
    return stores


def task(
    n: int, key: str = KEY, credits: int = COST, finish_at: float = NEVER, created_at: float = 0.0, failed: bool = False
) -> Task:
    """A task as Backend.submit makes one (ids of 12 characters), finishing at ``finish_at`` by time
    (as planned: a success, or with ``failed`` a failure)."""
    plan = Plan("gpt-image-2", "image", credits, "failed" if failed else "success", "it failed")
    return Task(plan, f"t{n:011d}", key, f"prompt {n}", "1:1", (), created_at, f"kie_{n:012d}", created_at, finish_at)


async def account(store: Store, key: str = KEY, credits: int = 1_000) -> None:
    assert await store.add_account(Account(key, credits)) is not None


async def balance(store: Store, key: str = KEY) -> int:
    kept = await store.get_account(key)
    assert kept is not None
    return kept.credits


def kinds(ledger: Ledger) -> list[tuple[str, int, str | None]]:
    return [(e.kind, e.amount, e.task_id) for e in ledger]


# --- accounts and credits -------------------------------------------------------------------------


def test_an_account_is_added_once_and_read_back(stores: Stores) -> None:
    async def check(store: Store) -> None:
        assert await store.get_account(KEY) is None and await store.account_count() == 0
        added = await store.add_account(Account(KEY, 100, "Ada"))
        assert added is not None and (added.key, added.credits, added.name) == (KEY, 100, "Ada")
        again = await store.add_account(Account(KEY, 5, "Bob"))  # the key has one: that one, unchanged
        assert again is not None and (again.credits, again.name) == (100, "Ada")
        kept = await store.get_account(KEY)
        assert kept is not None and (kept.key, kept.credits, kept.name) == (KEY, 100, "Ada")
        assert await store.account_count() == 1

    stores.run(check)


def test_accounts_are_listed_oldest_first_and_the_newest_n_too(stores: Stores) -> None:
    async def check(store: Store) -> None:
        keys = [f"sk-{i:032d}" for i in range(5)]
        for key in keys:
            await account(store, key)
        assert [a.key for a in await store.accounts()] == keys
        assert [a.key for a in await store.accounts(newest=2)] == keys[3:]
        assert [a.key for a in await store.accounts(newest=10)] == keys
        assert await store.account_count() == 5

    stores.run(check)


def test_past_max_accounts_a_new_key_is_refused_and_a_kept_one_still_answered(stores: Stores) -> None:
    async def check(store: Store) -> None:
        for i in range(3):
            await account(store, f"sk-{i:032d}")
        assert await store.add_account(Account(KEY, 10)) is None
        assert await store.get_account(KEY) is None and await store.account_count() == 3
        kept = await store.add_account(Account(f"sk-{1:032d}", 99))
        assert kept is not None and kept.credits == 1_000

    stores.run(check, max_accounts=3)


def test_credit_adds_and_takes_away_never_below_zero_with_a_ledger_entry_each(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=10)
        assert await store.credit(KEY, 5, 1.0, "topup") == 15
        assert await store.credit(KEY, -20, 2.0, "topup") == 0
        assert await balance(store) == 0
        ledger = await store.ledger(KEY)
        assert [(e.kind, e.amount, e.at) for e in ledger] == [("topup", 5, 1.0), ("topup", -15, 2.0)]
        assert list(await store.ledger(OTHER)) == []  # no account: no entries

    stores.run(check)


def test_concurrent_credits_all_count(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=20)
        await asyncio.gather(*(store.credit(KEY, 1, float(i), "topup") for i in range(100)))
        assert await balance(store) == 120
        await asyncio.gather(*(store.credit(KEY, -1, float(i), "topup") for i in range(150)))
        assert await balance(store) == 0  # never below zero, however they interleave
        ledger = await store.ledger(KEY)
        assert len(ledger) == 250 and sum(e.amount for e in ledger) == -20

    stores.run(check)


def test_the_worlds_meta_is_claimed_by_one_of_many_starting_at_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        assert await store.get_meta() is None  # an empty store holds no world
        claims = [{"generation": f"g{i}", "seed": i} for i in range(20)]
        won = await asyncio.gather(*(store.set_meta(c, only_new=True) for c in claims))
        assert won.count(True) == 1
        winner = claims[won.index(True)]
        assert await store.get_meta() == winner and store.generation == winner["generation"]
        assert await store.set_meta({"generation": "later", "seed": 0}) is True  # (a reset: always)
        assert (await store.get_meta() or {})["generation"] == "later"

    stores.run(check)


# --- submit: the charge ---------------------------------------------------------------------------


def test_submit_charges_keeps_and_queues_the_task(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        new = task(1, finish_at=30.0, created_at=7.0)
        assert await store.submit(new) is True
        assert await balance(store) == 100 - COST
        assert [(e.kind, e.amount, e.at, e.task_id) for e in await store.ledger(KEY)] == [
            ("charge", COST, 7.0, new.task_id)
        ]
        kept = await store.get_task(new.task_id)
        assert kept == task(1, finish_at=30.0, created_at=7.0)  # every field, the plan's too
        assert [t.task_id for t in await store.tasks()] == [new.task_id] and await store.task_count() == 1
        assert await store.settle(29.0) == 0 and await store.settle(30.0) == 1  # queued to finish at 30
        settled = await store.get_task(new.task_id)
        assert settled is not None and (settled.final_status, settled.settled_at) == (SUCCEEDED, 30.0)

    stores.run(check)


def test_submit_short_of_credits_or_without_an_account_changes_nothing(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=COST - 1)
        assert await store.submit(task(1, finish_at=5.0)) is False
        assert await store.submit(task(2, key=OTHER, finish_at=5.0)) is False  # no stored account
        assert await store.get_account(OTHER) is None
        assert await balance(store) == COST - 1 and list(await store.ledger(KEY)) == []
        assert await store.task_count() == 0 and await store.get_task(task(1).task_id) is None
        assert await store.settle(10.0) == 0  # and nothing queued to finish

    stores.run(check)


def test_submit_with_a_task_id_in_use_is_none_and_charges_nothing(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        assert await store.submit(task(1)) is True
        twin = task(1, created_at=9.0)
        assert await store.submit(twin) is None
        assert await balance(store) == 100 - COST and len(await store.ledger(KEY)) == 1
        kept = await store.get_task(twin.task_id)
        assert kept is not None and kept.created_at == 0.0  # the first one stays
        poor = task(2, credits=1_000)  # refused for its id before its cost is looked at
        assert await store.submit(poor) is False
        assert await store.submit(task(1, credits=1_000)) is None

    stores.run(check)


def test_concurrent_submits_charge_exactly_what_the_balance_covers(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=50 * COST)
        answers = await asyncio.gather(*(store.submit(task(i)) for i in range(200)))
        assert answers.count(True) == 50 and answers.count(False) == 150
        assert await balance(store) == 0
        charged = [e.task_id for e in await store.ledger(KEY) if e.kind == "charge"]
        won = [task(i).task_id for i, ok in enumerate(answers) if ok]
        assert sorted(charged) == sorted(won)
        assert await store.task_count() == 50 and sorted(t.task_id for t in await store.tasks()) == sorted(won)

    stores.run(check)


def test_concurrent_submits_of_one_task_id_keep_and_charge_it_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100 * COST)
        answers = await asyncio.gather(*(store.submit(task(7, created_at=float(i))) for i in range(20)))
        assert answers.count(True) == 1 and answers.count(None) == 19
        assert await balance(store) == 99 * COST and len(await store.ledger(KEY)) == 1
        assert await store.task_count() == 1

    stores.run(check)


# --- refund once ----------------------------------------------------------------------------------


def test_a_refund_gives_the_charge_back_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        charged = task(1)
        assert await store.submit(charged)
        assert await store.refund(charged, 3.0) is True
        assert await store.refund(charged, 4.0) is False
        assert await balance(store) == 100
        assert [(e.kind, e.amount, e.at, e.task_id) for e in await store.ledger(KEY)] == [
            ("charge", COST, 0.0, charged.task_id),
            ("refund", COST, 3.0, charged.task_id),
        ]

    stores.run(check)


def test_concurrent_refunds_of_one_task_refund_it_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        charged = task(1)
        assert await store.submit(charged)
        answers = await asyncio.gather(*(store.refund(charged, float(i)) for i in range(20)))
        assert answers.count(True) == 1
        assert await balance(store) == 100
        assert [e.kind for e in await store.ledger(KEY)] == ["charge", "refund"]

    stores.run(check)


def test_a_failed_finish_refunds_and_a_refund_after_it_does_nothing(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        failed, succeeded = task(1), task(2)
        assert await store.submit(failed) and await store.submit(succeeded)
        assert await store.finish(failed.task_id, FAILED, 5.0, "no luck")
        assert await balance(store) == 100 - COST
        assert await store.refund(failed, 6.0) is False
        assert await store.finish(succeeded.task_id, SUCCEEDED, 5.0)
        assert await balance(store) == 100 - COST  # a success keeps its charge
        assert kinds(await store.ledger(KEY)) == [
            ("charge", COST, failed.task_id),
            ("charge", COST, succeeded.task_id),
            ("refund", COST, failed.task_id),
        ]

    stores.run(check)


def test_a_refund_and_a_failed_finish_racing_refund_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100 * COST)
        for i in range(10):
            await store.submit(task(i))
        for i in range(10):
            t = task(i)
            await asyncio.gather(store.refund(t, 1.0), store.finish(t.task_id, FAILED, 1.0, "x"), store.refund(t, 1.0))
        assert await balance(store) == 100 * COST
        assert [e.kind for e in await store.ledger(KEY)].count("refund") == 10

    stores.run(check)


# --- finish once ----------------------------------------------------------------------------------


def test_finish_is_a_compare_and_set_from_unfinished(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store)
        first = task(1)
        assert await store.submit(first)
        assert await store.finish(first.task_id, SUCCEEDED, 4.0, "ignored") is True
        kept = await store.get_task(first.task_id)
        assert kept is not None and (kept.final_status, kept.settled_at, kept.message) == (SUCCEEDED, 4.0, None)
        assert await store.finish(first.task_id, FAILED, 5.0, "too late") is False
        kept = await store.get_task(first.task_id)
        assert kept is not None and (kept.final_status, kept.settled_at, kept.message) == (SUCCEEDED, 4.0, None)
        assert await balance(store) == 1_000 - COST  # the failed finish that lost refunded nothing
        assert await store.finish("t99999999999", SUCCEEDED, 5.0) is False  # a task not kept

    stores.run(check)


def test_of_concurrent_finishes_one_wins_and_its_status_time_and_message_stay(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=20 * COST)
        for i in range(20):
            assert await store.submit(task(i))
        failures = 0
        for i in range(20):
            task_id = task(i).task_id
            ok, fail = store.finish(task_id, SUCCEEDED, 10.0 + i), store.finish(task_id, FAILED, 20.0 + i, f"m{i}")
            answers = await asyncio.gather(*((ok, fail) if i % 2 else (fail, ok)))
            assert sorted(answers) == [False, True]
            kept = await store.get_task(task_id)
            assert kept is not None
            won = (SUCCEEDED, 10.0 + i, None) if answers[i % 2 == 0] else (FAILED, 20.0 + i, f"m{i}")
            assert (kept.final_status, kept.settled_at, kept.message) == won
            failures += kept.final_status == FAILED
        assert await balance(store) == failures * COST  # each failed winner refunded, once
        assert [e.kind for e in await store.ledger(KEY)].count("refund") == failures

    stores.run(check)


# --- polls and counters ---------------------------------------------------------------------------


def test_concurrent_polls_are_counted_one_to_n_each_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store)
        polled, other = task(1), task(2)
        assert await store.submit(polled) and await store.submit(other)
        counts = await asyncio.gather(*(store.count_poll(polled.task_id) for _ in range(50)))
        assert sorted(counts) == list(range(1, 51))
        kept = await store.get_task(polled.task_id)
        assert kept is not None and kept.polls == 50
        assert await store.count_poll(other.task_id) == 1  # per task
        assert await store.count_poll("t99999999999") == 0  # a task not kept: nothing counted, nothing made
        assert await store.get_task("t99999999999") is None and await store.task_count() == 2

    stores.run(check)


def test_a_poll_settles_what_is_due_and_counts_only_its_own_keys_task(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await store.set_clock(ManualClock(5.0))
        await store.set_meta({"generation": "g1"})
        await account(store)
        await account(store, OTHER)
        polled, due, later = task(1), task(2, finish_at=10.0, failed=True), task(3, finish_at=30.0)
        for t in (polled, due, later):
            assert await store.submit(t)
        got = await store.poll(polled.task_id, KEY, "g1", False)
        assert got is not None and got[0] is not None and (got[0].key, got[0].credits) == (KEY, 1_000 - 3 * COST)
        assert got[1] == await store.get_task(polled.task_id) and got[1] is not None and got[1].polls == 1
        assert (await store.get_task(due.task_id)).final_status == 0  # type: ignore[union-attr]  # not due yet
        await store.advance_clock(15.0)  # 20: the failing task is due, and settled by the next poll
        got = await store.poll(polled.task_id, KEY, "g1", False)
        assert got is not None and got[1] is not None and got[1].polls == 2  # counted once each
        kept = got[1]
        assert (kept.task_id, kept.key, kept.plan, kept.created_at) == (polled.task_id, KEY, polled.plan, 0.0)
        settled = await store.get_task(due.task_id)
        assert settled is not None and (settled.final_status, settled.settled_at, settled.message) == (
            FAILED,
            10.0,
            "it failed",  # its plan's failure message
        )
        assert await balance(store) == 1_000 - 2 * COST  # refunded when it failed
        assert kinds(await store.ledger(KEY))[-1] == ("refund", COST, due.task_id)
        assert await store.poll(polled.task_id, OTHER, "g1", False) == (await store.get_account(OTHER), None)
        assert await store.poll("t99999999999", KEY, "g1", False) == (await store.get_account(KEY), None)
        stranger = "sk-" + "c" * 32  # no stored account: nothing counted, unless open keys count
        assert await store.poll(polled.task_id, stranger, "g1", False) == (None, None)
        polls = await asyncio.gather(*(store.poll(polled.task_id, KEY, "g1", False) for _ in range(20)))
        assert all(got is not None and got[1] is not None for got in polls)
        kept = await store.get_task(polled.task_id)  # type: ignore[assignment]
        assert kept is not None and kept.polls == 22  # each of the concurrent polls counted once
        assert await store.poll(polled.task_id, KEY, "another", False) is None  # another generation: nothing done
        assert await store.poll(polled.task_id, KEY, None, False) is not None  # None: any generation
        kept = await store.get_task(polled.task_id)  # type: ignore[assignment]
        assert kept is not None and kept.polls == 23
        _, finished = await store.poll(due.task_id, KEY, "g1", False) or (None, None)
        assert finished is not None and (finished.final_status, finished.settled_at, finished.polls) == (
            FAILED,
            10.0,
            1,
        )
        assert await store.task_count() == 3

    stores.run(check)


def test_a_poll_with_open_keys_counts_a_keys_task_without_a_stored_account(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await store.set_meta({"generation": "g1"})
        await account(store)
        imported = task(1, key=OTHER)  # (a state may hold tasks of a key with no account)
        staged = await store.staged([Account(KEY, 100)], [imported], [])
        await store.take(staged)
        assert await store.poll(imported.task_id, OTHER, "g1", False) == (None, None)
        got = await store.poll(imported.task_id, OTHER, "g1", True)
        assert got is not None and got[0] is None and got[1] is not None and got[1].polls == 1

    stores.run(check)


def test_counters_count_one_to_n_each_once_per_scope_and_key(stores: Stores) -> None:
    async def check(store: Store) -> None:
        counts = await asyncio.gather(*(store.count("rule", "slow") for _ in range(50)))
        assert sorted(counts) == list(range(1, 51))
        assert await store.count("rule", "fast") == 1
        assert await store.count("fault", "slow") == 1
        assert await store.count("rule", "slow") == 51

    stores.run(check)


def lower(bound: str, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mockgen.store``'s ``bound`` set to 5 for this test (skipped for a store that reads it only once)."""
    if not stores.kind.reads_bounds:
        pytest.skip(f"the {stores.name} store reads {bound} once: it cannot be lowered for a test")
    monkeypatch.setattr(mockgen.store, bound, 5)


def test_counters_are_bounded_by_max_counters(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    lower("MAX_COUNTERS", stores, monkeypatch)

    async def check(store: Store) -> None:
        assert [await store.count("rule", f"k{i}") for i in range(20)] == [1] * 20
        assert await store.count("rule", "k19") == 2  # the one counted last is kept
        again = [await store.count("rule", f"k{i}") for i in range(19)]
        # A key counted before and still kept counts 2; one dropped starts over at 1. At most 5 are kept.
        assert set(again) <= {1, 2} and again.count(2) <= 5

    stores.run(check)


# --- rate-limit buckets ---------------------------------------------------------------------------


def test_a_bucket_gives_its_burst_then_refills_at_its_rate(stores: Stores) -> None:
    async def check(store: Store) -> None:
        take = store.take_token
        assert [await take("rate", KEY, 3, 2.0, 100.0) for _ in range(4)] == [True, True, True, False]
        assert await take("rate", OTHER, 3, 2.0, 100.0) is True  # a bucket per (scope, key)
        assert await take("fault", KEY, 3, 2.0, 100.0) is True
        assert await take("rate", KEY, 3, 2.0, 100.25) is False  # half a token
        assert await take("rate", KEY, 3, 2.0, 100.5) is True  # the other half came: one
        assert await take("rate", KEY, 3, 2.0, 100.5) is False
        # Refilled to its burst at most, however long it rested.
        assert [await take("rate", KEY, 3, 2.0, 10_000.0) for _ in range(4)] == [True, True, True, False]

    stores.run(check)


def test_buckets_are_bounded_by_max_buckets(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    lower("MAX_BUCKETS", stores, monkeypatch)

    async def check(store: Store) -> None:
        take = store.take_token
        assert [await take("rate", f"k{i}", 1, 0.001, 1.0) for i in range(20)] == [True] * 20  # each empty now
        assert await take("rate", "k19", 1, 0.001, 1.0) is False  # the one used last is kept
        again = [await take("rate", f"k{i}", 1, 0.001, 1.0) for i in range(19)]
        # A bucket still kept is empty (False); one dropped is a full one again (True). At most 5 are kept.
        assert again.count(False) <= 5

    stores.run(check)


def test_concurrent_takes_from_a_bucket_get_its_burst_exactly(stores: Stores) -> None:
    async def check(store: Store) -> None:
        answers = await asyncio.gather(*(store.take_token("rate", KEY, 5, 1.0, 50.0) for _ in range(30)))
        assert answers.count(True) == 5

    stores.run(check)


# --- the next-outcome queue -----------------------------------------------------------------------


def outcome(message: str, count: int = 1, model_id: str | None = None, key: str | None = None) -> NextOutcome:
    return NextOutcome("failed", count, model_id, key, message)


async def taken(store: Store, model_id: str, key: str) -> str | None:
    entry = await store.take_next(model_id, key)
    return None if entry is None else entry.message


def test_the_next_queue_gives_the_oldest_matching_entry_across_model_key_and_any(stores: Stores) -> None:
    async def check(store: Store) -> None:
        entries = [
            outcome("model", model_id="gpt-image-2"),
            outcome("key", key=KEY),
            outcome("any"),
            outcome("both", model_id="gpt-image-2", key=KEY),
            outcome("other model", model_id="veo-3"),
        ]
        for n, entry in enumerate(entries, 1):
            assert await store.queue_next(entry) == n
        assert await taken(store, "gpt-image-2", OTHER) == "model"
        assert await taken(store, "veo-3", KEY) == "key"
        assert await taken(store, "veo-3", KEY) == "any"
        assert await taken(store, "gpt-image-2", OTHER) is None  # left: both (for KEY), other model
        assert await taken(store, "gpt-image-2", KEY) == "both"
        assert await taken(store, "veo-3", OTHER) == "other model"
        assert await store.queued() == [] and await taken(store, "veo-3", OTHER) is None

    stores.run(check)


def test_an_entry_serves_count_submits_then_goes(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await store.queue_next(outcome("thrice", count=3))
        await store.queue_next(outcome("after"))
        assert await taken(store, "gpt-image-2", KEY) == "thrice"
        assert [(e.message, e.count) for e in await store.queued()] == [("thrice", 2), ("after", 1)]
        assert [await taken(store, "gpt-image-2", KEY) for _ in range(4)] == ["thrice", "thrice", "after", None]

    stores.run(check)


def test_concurrent_takes_use_an_entry_count_times_exactly(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await store.queue_next(outcome("five", count=5, model_id="gpt-image-2"))
        answers = await asyncio.gather(*(taken(store, "gpt-image-2", f"sk-{i:032d}") for i in range(20)))
        assert answers.count("five") == 5 and answers.count(None) == 15
        assert await store.queued() == []

    stores.run(check)


def test_the_next_queue_is_bounded_lists_its_newest_and_clears(stores: Stores) -> None:
    async def check(store: Store) -> None:
        lengths = await asyncio.gather(*(store.queue_next(outcome(str(i))) for i in range(NEXT_LIMIT)))
        assert sorted(lengths) == list(range(1, NEXT_LIMIT + 1))
        assert await store.queue_next(outcome("one too many")) is None
        assert len(await store.queued()) == NEXT_LIMIT
        await store.clear_next()
        assert await store.queued() == [] and await taken(store, "gpt-image-2", KEY) is None
        for i in range(5):
            await store.queue_next(outcome(str(i)))
        assert [e.message for e in await store.queued(2)] == ["3", "4"]
        assert [e.message for e in await store.queued(10)] == ["0", "1", "2", "3", "4"]
        assert await store.queued(0) == []

    stores.run(check)


# --- the sequence ---------------------------------------------------------------------------------


def test_concurrent_next_seq_hands_out_one_to_n_and_clear_starts_it_over(stores: Stores) -> None:
    async def check(store: Store) -> None:
        numbers = await asyncio.gather(*(store.next_seq() for _ in range(100)))
        assert sorted(numbers) == list(range(1, 101))
        assert await store.next_seq() == 101
        await store.clear()
        assert await store.next_seq() == 1

    stores.run(check)


# --- the clock ------------------------------------------------------------------------------------


def test_a_manual_clock_moves_by_advance_clock_only(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await store.set_clock(ManualClock(1_000.0))
        assert store.clock.kind == "manual" and store.clock.now() == 1_000.0
        assert await store.advance_clock(2.5) == 1_002.5
        assert store.clock.now() == 1_002.5
        assert await store.advance_clock(0) == 1_002.5
        with pytest.raises(ValueError):
            await store.advance_clock(-1)
        assert store.clock.now() == 1_002.5
        moved = await asyncio.gather(*(store.advance_clock(1) for _ in range(10)))
        assert sorted(moved) == [1_002.5 + n for n in range(1, 11)] and store.clock.now() == 1_012.5

    stores.run(check)


def test_a_real_clock_is_not_advanced(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await store.set_clock(ManualClock(5.0))
        await store.set_clock(SystemClock())
        assert store.clock.kind == "real"
        with pytest.raises(ValueError):
            await store.advance_clock(1)

    stores.run(check)


# --- the due-queue --------------------------------------------------------------------------------


def test_settle_finishes_the_due_tasks_as_planned_earliest_first_each_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        for n, at in enumerate((30.0, 10.0, 20.0, NEVER)):
            assert await store.submit(task(n, finish_at=at, failed=n == 2))
        assert await store.settle(5.0) == 0
        assert await store.settle(20.0) == 2
        assert await store.settle(20.0) == 0
        statuses = [
            (t.final_status, t.settled_at, t.message)
            for t in [await store.get_task(task(n).task_id) for n in range(4)]
            if t
        ]
        assert statuses == [(0, None, None), (SUCCEEDED, 10.0, None), (FAILED, 20.0, "it failed"), (0, None, None)]
        assert kinds(await store.ledger(KEY))[-1] == ("refund", COST, task(2).task_id)  # the failure refunded
        assert await balance(store) == 100 - 3 * COST
        assert await store.finish(task(0).task_id, FAILED, 25.0, "by hand")  # finished before it fell due
        assert await store.settle(1e18) == 0  # so passed over; a task finishing by polls never falls due
        kept = await store.get_task(task(0).task_id)
        assert kept is not None and (kept.final_status, kept.settled_at, kept.message) == (FAILED, 25.0, "by hand")

    stores.run(check)


def test_concurrent_settles_finish_and_refund_each_task_once(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=60 * COST)
        for n in range(60):
            assert await store.submit(task(n, finish_at=float(n % 30), failed=n % 2 == 0))
        assert sum(await asyncio.gather(*(store.settle(19.5) for _ in range(8)))) == 40
        assert sum(await asyncio.gather(*(store.settle(100.0) for _ in range(8)))) == 20
        ledger = kinds(await store.ledger(KEY))
        assert sorted(t for kind, _, t in ledger if kind == "refund") == sorted(
            task(n).task_id for n in range(0, 60, 2)
        )
        assert await balance(store) == 30 * COST  # each failure refunded once
        assert all(t.final_status for t in await store.tasks())

    stores.run(check)


def test_reserve_settles_checks_the_balance_makes_room_then_hands_out_a_number_and_an_outcome(
    stores: Stores,
) -> None:
    def seen(got: Reserved | None) -> tuple[object, ...] | None:
        if got is None:
            return None
        who = None if got.account is None else (got.account.key, got.account.credits)
        return who, got.now, got.seq, None if got.queued is None else (got.queued.message, got.queued.count), got.room

    async def check(store: Store) -> None:
        await store.set_clock(ManualClock(1.0))
        await store.set_meta({"generation": "g1"})
        await account(store, credits=100)
        await store.queue_next(outcome("first", count=2, key=KEY))
        await store.queue_next(outcome("for the other key", key=OTHER))
        got = await store.reserve(KEY, "gpt-image-2", COST, "g1")
        assert seen(got) == ((KEY, 100), 1.0, 1, ("first", 1), True)
        assert await store.submit(task(1)) and await store.submit(task(2, finish_at=3.0, failed=True))
        short = await store.reserve(KEY, "gpt-image-2", 71, "g1")  # short of credits: nothing used up
        assert seen(short) == ((KEY, 70), 1.0, 0, None, True)
        await store.advance_clock(2.0)  # 3: task 2 fails, refunded by the next reserve's settling first
        assert seen(await store.reserve(KEY, "seedance-2", 85, "g1")) == ((KEY, 85), 3.0, 2, ("first", 0), True)
        stranger = "sk-" + "c" * 32  # no stored account: nothing used up
        assert seen(await store.reserve(stranger, "gpt-image-2", COST, "g1")) == (None, 3.0, 0, None, True)
        assert await store.reserve(KEY, "gpt-image-2", COST, "g0") is None  # another generation: nothing done
        assert await store.submit(task(3))  # max_tasks: task 2 (finished) is what room evicts
        assert seen(await store.reserve(KEY, "gpt-image-2", COST, None)) == ((KEY, 70), 3.0, 3, None, True)
        assert await store.get_task(task(2).task_id) is None and await store.task_count() == 2
        assert await store.submit(task(4))  # every task kept unfinished: no room, nothing used up
        assert seen(await store.reserve(KEY, "gpt-image-2", COST, None)) == ((KEY, 55), 3.0, 0, None, False)
        assert await store.next_seq() == 4 and [e.message for e in await store.queued()] == ["for the other key"]

    stores.run(check, max_tasks=3)


def test_concurrent_reserves_hand_out_numbers_and_an_outcome_once_each(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        await store.queue_next(outcome("once", key=KEY))
        reserved = await asyncio.gather(*(store.reserve(KEY, "gpt-image-2", COST, None) for _ in range(20)))
        assert sorted(r.seq for r in reserved if r is not None) == list(range(1, 21))
        assert [r.queued.message for r in reserved if r is not None and r.queued is not None] == ["once"]

    stores.run(check)


# --- bounds ---------------------------------------------------------------------------------------


def test_make_room_evicts_the_first_finished_and_refuses_when_all_are_unfinished(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        a, b, c, d, e = (task(n) for n in range(5))
        assert await store.make_room()
        for t in (a, b, c):
            assert await store.submit(t)
        assert await store.make_room() is False and await store.task_count() == 3
        assert await store.finish(b.task_id, SUCCEEDED, 5.0)
        assert await store.finish(a.task_id, FAILED, 6.0, "no")
        assert await store.make_room() is True
        assert await store.get_task(b.task_id) is None  # it finished first
        assert await store.get_task(a.task_id) is not None and await store.task_count() == 2
        assert await store.submit(d)
        assert await store.make_room() is True and await store.get_task(a.task_id) is None
        assert await store.submit(e)
        assert await store.make_room() is False
        assert sorted(t.task_id for t in await store.tasks()) == [c.task_id, d.task_id, e.task_id]
        assert await balance(store) == 100 - 4 * COST  # evicting never touches a balance
        assert len(await store.ledger(KEY)) == 6  # nor the ledger: 5 charges, a's refund

    stores.run(check, max_tasks=3, ledger_limit=100, ledger_total=100)


def test_make_room_below_max_tasks_evicts_nothing(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store)
        assert await store.submit(task(1)) and await store.submit(task(2))
        assert await store.finish(task(1).task_id, SUCCEEDED, 1.0)
        assert await store.make_room() is True and await store.task_count() == 2

    stores.run(check, max_tasks=3)


def test_ledger_limit_keeps_an_account_newest_entries_and_its_whole_balance(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=0)
        for n in range(100):
            await store.credit(KEY, 1, float(n), "topup")
        assert await balance(store) == 100
        ats = [e.at for e in await store.ledger(KEY)]
        assert 1 <= len(ats) <= 10 and ats == [float(n) for n in range(100 - len(ats), 100)]

    stores.run(check, ledger_limit=10)


def test_ledger_total_keeps_the_newest_entries_of_all_accounts_and_every_balance(stores: Stores) -> None:
    async def check(store: Store) -> None:
        keys = [f"sk-{i:032d}" for i in range(4)]
        for key in keys:
            await account(store, key, credits=0)
        for n in range(200):
            await store.credit(keys[n % 4 if n < 100 else 0], 1, float(n), "topup")
        ledgers = [await store.ledger(key) for key in keys]
        ats = sorted(e.at for ledger in ledgers for e in ledger)
        assert 1 <= len(ats) <= 20 and ats == [float(n) for n in range(200 - len(ats), 200)]
        assert [await balance(store, key) for key in keys] == [125, 25, 25, 25]

    stores.run(check, ledger_limit=1_000, ledger_total=20)


# --- a whole world replaced -----------------------------------------------------------------------


def finished(n: int, status: int, at: float = 3.0) -> Task:
    done = task(n, key=OTHER, finish_at=at)
    done.final_status, done.settled_at = status, at
    done.message = "it failed" if status == FAILED else None
    return done


def test_a_staged_world_holds_what_it_was_given_and_the_store_its_own_until_taken(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store, credits=100)
        assert await store.submit(task(1))
        ledger = Ledger([LedgerEntry("topup", 7, 1.0), LedgerEntry("charge", COST, 2.0, task(2).task_id)])
        given = [task(2, key=OTHER, finish_at=50.0), finished(3, FAILED), finished(4, SUCCEEDED)]
        staged = await store.staged([Account(OTHER, 7, "Imported", ledger)], given, [outcome("queued")])
        assert await staged.journal.read() == []
        imported_account = await staged.get_account(OTHER)
        assert imported_account is not None and (imported_account.credits, imported_account.name) == (7, "Imported")
        assert kinds(await staged.ledger(OTHER)) == [("topup", 7, None), ("charge", COST, task(2).task_id)]
        assert await staged.account_count() == 1 and await staged.get_account(KEY) is None
        for t in given:
            assert await staged.get_task(t.task_id) == t
        assert await staged.task_count() == 3
        assert [e.message for e in await staged.queued()] == ["queued"]
        assert await balance(store) == 100 - COST and await store.get_task(task(1).task_id) is not None
        assert await store.get_account(OTHER) is None and await store.queued() == []
        await asyncio.to_thread(staged.release)

    stores.run(check)


def test_a_staged_world_keeps_the_store_bounds(stores: Stores) -> None:
    async def check(store: Store) -> None:
        given = [finished(0, SUCCEEDED), finished(1, SUCCEEDED), task(2, key=OTHER, finish_at=9.0)]
        given += [finished(3, SUCCEEDED), finished(4, FAILED)]
        staged = await store.staged([Account(OTHER, 0)], given, [])
        assert await staged.task_count() == 3
        assert await staged.get_task(task(2).task_id) is not None  # unfinished: kept
        assert await staged.get_task(task(4).task_id) is not None  # the newest finished: kept
        await asyncio.to_thread(staged.release)

    stores.run(check, max_tasks=3)


def test_take_puts_the_staged_world_in_force_keeps_journal_and_clock_and_release_empties_the_old(
    stores: Stores,
) -> None:
    async def check(store: Store) -> None:
        await store.set_clock(ManualClock(40.0))
        await store.set_meta({"generation": "g1", "seed": 7})
        await account(store, credits=100)
        old = task(1, finish_at=45.0)
        assert await store.submit(old)
        await store.queue_next(outcome("old"))
        journal = store.journal
        journal.append({"path": "/before"})
        assert [await store.count("rule", "r"), await store.next_seq(), await store.next_seq()] == [1, 1, 2]
        assert await store.take_token("rate", KEY, 1, 0.001, 40.0) is True  # the bucket empty now
        given = [task(2, key=OTHER, finish_at=50.0), finished(3, FAILED), finished(4, SUCCEEDED)]
        staged = await store.staged([Account(OTHER, 7)], given, [outcome("new")])
        await store.take(staged)

        assert store.journal is journal and await journal.read() == []  # the same journal (its long-polls), emptied
        assert await store.get_meta() == {"generation": "g1", "seed": 7} and store.generation == "g1"  # the world's own
        assert store.clock.now() == 40.0
        # What a state does not hold goes on: the sequence, the counters, the buckets.
        assert await store.next_seq() == 3 and await store.count("rule", "r") == 2
        assert await store.take_token("rate", KEY, 1, 0.001, 41.0) is False
        assert await store.get_account(KEY) is None and await store.get_task(old.task_id) is None
        assert await balance(store, OTHER) == 7 and await store.task_count() == 3
        assert [e.message for e in await store.queued()] == ["new"]
        assert await store.settle(49.0) == 0  # the old world's due task went with it
        assert await store.settle(50.0) == 1  # the imported one is due
        assert await store.refund(finished(3, FAILED), 60.0) is False  # refunded when it failed
        assert await store.finish(task(4).task_id, FAILED, 60.0) is False  # finished already
        assert await store.submit(task(5, key=OTHER, credits=7)) is True  # the new world works

        before = await staged.get_account(KEY)  # the old world, until released
        assert before is not None and before.credits == 100 - COST
        await asyncio.to_thread(staged.release)
        assert await staged.task_count() == 0 and await staged.account_count() == 0
        assert await staged.settle(1e18) == 0 and await staged.queued() == []
        assert await store.task_count() == 4 and await balance(store, OTHER) == 0  # the world in force untouched

    stores.run(check)


# --- the journal ----------------------------------------------------------------------------------


def test_the_journal_keeps_its_newest_journal_limit_entries(stores: Stores) -> None:
    async def check(store: Store) -> None:
        journal = store.journal
        assert journal.limit == 5
        for n in range(12):
            journal.append({"method": "GET", "path": f"/p{n}"})
        assert [e["path"] for e in await journal.read()] == [f"/p{n}" for n in range(7, 12)]

    stores.run(check, journal_limit=5)


# --- the whole store ------------------------------------------------------------------------------


def test_clear_empties_the_world(stores: Stores) -> None:
    async def check(store: Store) -> None:
        await account(store)
        assert await store.submit(task(1, finish_at=5.0))
        await store.count("rule", "r")
        assert await store.take_token("rate", KEY, 1, 0.001, 1.0) is True
        await store.queue_next(outcome("x"))
        await store.next_seq()
        store.journal.append({"path": "/p"})
        await store.clear()
        assert await store.account_count() == 0 and await store.get_account(KEY) is None
        assert await store.task_count() == 0 and await store.get_task(task(1).task_id) is None
        assert await store.settle(10.0) == 0
        assert await store.count("rule", "r") == 1
        assert await store.take_token("rate", KEY, 1, 0.001, 1.0) is True  # a full bucket again
        assert await store.queued() == [] and await store.next_seq() == 1
        assert await store.journal.read() == []
        await account(store)  # and it works as a new one
        assert await store.submit(task(1)) is True

    stores.run(check)


def test_an_immediate_store_is_driven_by_run_now(stores: Stores) -> None:
    async def check(store: Store) -> None:
        if not store.immediate:
            pytest.skip(f"the {stores.name} store waits for I/O")
        assert run_now(store.add_account(Account(KEY, 20))) is not None
        assert run_now(store.submit(task(1, credits=5))) is True
        assert run_now(store.next_seq()) == 1 and (await balance(store)) == 15

    stores.run(check)


# --- the suite itself -----------------------------------------------------------------------------


class CheckThenCharge(MemoryStore):
    """A store whose submit checks the balance, then (a round trip later) charges: not atomic."""

    async def submit(self, task: Task) -> bool | None:
        kept = await self.get_account(task.key)
        if kept is None or kept.credits < task.credits:
            return False
        await asyncio.sleep(0)
        kept.credits += task.credits  # what it saw is what it charges from
        return await super().submit(task)


class CheckThenFinish(MemoryStore):
    """A store whose finish reads the task, then (a round trip later) writes it: not a compare-and-set."""

    async def finish(self, task_id: str, status: int, at: float, message: str | None = None) -> bool:
        kept = await self.get_task(task_id)
        if kept is None or kept.final_status:
            return False
        await asyncio.sleep(0)
        kept.final_status = 0
        return await super().finish(task_id, status, at, message)


@pytest.mark.parametrize(
    ("broken", "test"),
    [
        (CheckThenCharge, test_concurrent_submits_charge_exactly_what_the_balance_covers),
        (CheckThenFinish, test_of_concurrent_finishes_one_wins_and_its_status_time_and_message_stay),
    ],
)
def test_the_suite_fails_a_store_that_is_not_atomic(broken: type[MemoryStore], test: Callable[[Stores], None]) -> None:
    async def make(**bounds: object) -> Store:
        return broken(**bounds)  # type: ignore[arg-type]

    with pytest.raises(AssertionError):
        test(Stores("broken", Kind(make)))


def test_stores_are_chosen_by_the_environment_variable() -> None:
    known = ("memory", "redis")
    assert selected("", known) == ["memory", "redis"]
    assert selected("redis", known) == ["redis"]
    assert selected(" redis , memory,redis", known) == ["redis", "memory"]
    with pytest.raises(ValueError, match="no store kind 'sql'"):
        selected("memory,sql", known)
    assert "memory" in STORES


def test_a_kind_whose_module_cannot_be_imported_is_skipped_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    make = imported("tests.no_such_store_module", "make_store")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_store_module"):
        asyncio.run(make())
    monkeypatch.setenv("CI", "true")
    with pytest.raises(ImportError):
        asyncio.run(make())


def test_a_kind_asked_for_that_cannot_run_fails_its_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    absent = Kind(imported("tests.no_such_store_module", "make_store"))

    async def check(store: Store) -> None:
        raise AssertionError("never run: there is no store")

    with pytest.raises(pytest.skip.Exception):
        Stores("absent", absent).run(check)
    monkeypatch.setenv(ENV, "absent")
    assert chosen()
    with pytest.raises(pytest.fail.Exception, match=f"{ENV} asks for the absent store"):
        Stores("absent", absent, required=chosen()).run(check)
