"""Retention: finished tasks past --max-tasks, ledgers and the journal are bounded, so memory stays flat."""

from __future__ import annotations

from collections.abc import Callable

from mockgen.models import Account, Task
from mockgen.store import MemoryStore

from .conftest import AUTH, Client


def test_oldest_finished_tasks_are_dropped_past_the_limit(make_client: Callable[..., Client]) -> None:
    client = make_client(max_tasks=5)
    first = [client.submit(prompt=f"old {i}")["data"]["task_id"] for i in range(5)]
    client.advance(60)  # all five finished
    newer = [client.submit(prompt=f"new {i}")["data"]["task_id"] for i in range(3)]
    kept = {t["task_id"] for t in client.get("/_mock/tasks").json()}
    assert kept == set(first[3:]) | set(newer)
    gone = client.get(f"/api/v1/tasks/{first[0]}", headers=AUTH).json()
    assert gone["code"] == 0 and "Task not found" in gone["msg"]
    assert client.poll(first[4])["data"]["task_status"] == 3
    assert client.balance() == 1000 - 8 * 15  # dropping a task never touches a balance


def test_unfinished_tasks_are_kept_even_past_the_limit(make_client: Callable[..., Client]) -> None:
    client = make_client(max_tasks=3)
    running = [client.submit(prompt=f"run {i}")["data"]["task_id"] for i in range(6)]  # manual clock: unfinished
    assert len(client.get("/_mock/tasks").json()) == 6
    for task_id in running:
        assert client.poll(task_id)["data"]["task_status"] == 1
    client.advance(60)
    latest = client.submit(prompt="after")["data"]["task_id"]
    kept = [t["task_id"] for t in client.get("/_mock/tasks").json()]
    assert kept == [*running[-2:], latest]


def _task(i: int, finished: bool) -> Task:
    return Task(
        task_id=f"t{i:011d}", key="sk-x", model_id="gpt-image-2", task_type="image", prompt="p", aspect_ratio="1:1",
        image_urls=(), credits=1, created_at=0.0, request_id=f"kie_{i:012d}", running_at=0.0, finish_at=1.0,
        outcome="success", failure_message="", final_status=3 if finished else 0,
    )  # fmt: skip


def count_evictions(store: MemoryStore) -> list[int]:
    """Wrap the store's eviction; the returned list's one item counts the scans."""
    scans = [0]
    evict = store._evict

    def counting() -> None:
        scans[0] += 1
        evict()

    store._evict = counting  # type: ignore[method-assign]
    return scans


def test_a_large_limit_evicts_in_batches_not_on_every_submit() -> None:
    store = MemoryStore(max_tasks=6400)  # a batch is 100 tasks
    scans = count_evictions(store)
    for i in range(20_000):
        store.add_task(_task(i, finished=True))
        assert store.task_count() <= 6400
    assert store.task_count() > 6400 - 100
    assert scans[0] <= (20_000 - 6400) // 100 + 1
    ids = [t.task_id for t in store.tasks()]
    assert ids == [f"t{i:011d}" for i in range(20_000 - len(ids), 20_000)]  # the newest, in order


def test_a_store_of_unfinished_tasks_does_not_rescan_on_every_submit() -> None:
    store = MemoryStore(max_tasks=640)  # a batch is 10 tasks
    scans = count_evictions(store)
    for i in range(5_000):
        store.add_task(_task(i, finished=False))
    assert store.task_count() == 5_000  # nothing finished: nothing may go
    assert scans[0] <= (5_000 - 640) // 10 + 1


def test_ledger_keeps_the_newest_entries_and_the_whole_balance() -> None:
    store = MemoryStore(max_tasks=1_000, ledger_limit=50)
    store.add_account(Account("sk-x", 0))
    for i in range(1_000):
        store.credit("sk-x", 1, float(i), "topup", None)
    account = store.get_account("sk-x")
    assert account is not None
    assert account.credits == 1_000
    assert 1 <= len(account.ledger) <= 50
    assert account.ledger[-1].at == 999.0
    assert [e.at for e in account.ledger] == sorted(e.at for e in account.ledger)


def test_ledger_limit_follows_max_tasks(make_client: Callable[..., Client]) -> None:
    client = make_client(max_tasks=4)
    for i in range(10):
        client.submit(prompt=f"p {i}")
    assert client.balance() == 1000 - 10 * 15
    assert len(client.ledger()) <= 4


def test_journal_keeps_the_newest_requests(make_client: Callable[..., Client]) -> None:
    client = make_client(journal_limit=3)
    for i in range(10):
        client.get(f"/api/v1/tasks/t{i}", headers=AUTH)
    journal = client.get("/_mock/requests").json()
    assert [e["path"] for e in journal] == [f"/api/v1/tasks/t{i}" for i in (7, 8, 9)]
    assert [e["id"] for e in journal] == [8, 9, 10]
