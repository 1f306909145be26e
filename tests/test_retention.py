"""Retention: tasks (unfinished ones included) past --max-tasks, ledgers and the journal are bounded."""

from __future__ import annotations

from collections.abc import Callable

from mockgen.models import NEVER, Account, Task
from mockgen.store import MemoryStore, run_now

from .conftest import AUTH, Client


def test_the_first_finished_tasks_are_dropped_past_the_limit(make_client: Callable[..., Client]) -> None:
    client = make_client(max_tasks=5)
    first = [client.submit(prompt=f"old {i}")["data"]["task_id"] for i in range(5)]
    client.advance(60)  # all five finished, each at its own time
    views = client.get("/_mock/tasks").json()
    by_finish = [t["task_id"] for t in sorted(views, key=lambda t: (t["timeline"]["settled_at"], t["task_id"]))]
    assert sorted(by_finish) == sorted(first)
    newer = [client.submit(prompt=f"new {i}")["data"]["task_id"] for i in range(3)]
    kept = {t["task_id"] for t in client.get("/_mock/tasks").json()}
    assert kept == set(by_finish[3:]) | set(newer)  # in the order they finished, not the order submitted
    gone = client.get(f"/api/v1/tasks/{by_finish[0]}", headers=AUTH).json()
    assert gone["code"] == 0 and "Task not found" in gone["msg"]
    assert client.poll(by_finish[4])["data"]["task_status"] == 3
    assert client.balance() == 1000 - 8 * 15  # dropping a task never touches a balance


def test_unfinished_tasks_count_against_the_limit(make_client: Callable[..., Client]) -> None:
    client = make_client(max_tasks=3)
    running = [client.submit(prompt=f"run {i}")["data"]["task_id"] for i in range(3)]  # manual clock: unfinished
    refused = client.submit(prompt="one too many")
    assert refused["code"] == 0 and refused["data"] is None
    assert "3 unfinished tasks" in refused["msg"] and "--max-tasks" in refused["msg"]
    assert client.balance() == 1000 - 3 * 15 and len(client.ledger()) == 3  # nothing charged
    for task_id in running:
        assert client.poll(task_id)["data"]["task_status"] == 1  # every one still there
    assert client.post(f"/_mock/tasks/{running[1]}/resolve", json={"outcome": "success"}).status_code == 200
    latest = client.submit(prompt="after one finished")["data"]["task_id"]  # the finished one made room
    assert [t["task_id"] for t in client.get("/_mock/tasks").json()] == [running[0], running[2], latest]


def _task(i: int, finished: bool) -> Task:
    return Task.from_fields(
        task_id=f"t{i:011d}", key="sk-x", model_id="gpt-image-2", task_type="image", prompt="p", aspect_ratio="1:1",
        image_urls=(), credits=1, created_at=0.0, request_id=f"kie_{i:012d}", running_at=0.0, finish_at=NEVER,
        outcome="success", failure_message="", final_status=3 if finished else 0,
    )  # fmt: skip


class CountingDict(dict[str, Task]):
    """The store's tasks, counting every lookup and every walk over them."""

    lookups = 0
    walks = 0

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        CountingDict.lookups += 1
        return super().get(key, default)

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountingDict.walks += 1
        return super().__iter__()

    def items(self):  # type: ignore[no-untyped-def]
        CountingDict.walks += 1
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        CountingDict.walks += 1
        return super().values()


def counting_store(max_tasks: int) -> MemoryStore:
    store = MemoryStore(max_tasks=max_tasks)
    run_now(store.add_account(Account("sk-x", 10**9)))
    store._tasks = CountingDict()
    CountingDict.lookups = CountingDict.walks = 0
    return store


def submit(store: MemoryStore, task: Task) -> bool:
    """What Backend.submit asks of the store: room, then the task."""
    if not run_now(store.make_room()):
        return False
    assert run_now(store.submit(task))
    return True


def test_eviction_is_constant_work_per_submit() -> None:
    store = counting_store(max_tasks=1_000)
    for i in range(20_000):
        task = _task(i, finished=False)
        assert submit(store, task)
        assert run_now(store.finish(task.task_id, 3, 1.0))  # before the next submit, as a quick task does
        CountingDict.lookups -= 1  # (finish's own lookup of the task it finishes)
        assert run_now(store.task_count()) <= 1_000
    assert CountingDict.walks == 0
    assert CountingDict.lookups <= 20_000  # one per task dropped, never a scan
    ids = [t.task_id for t in run_now(store.tasks())]
    assert ids == [f"t{i:011d}" for i in range(19_000, 20_000)]  # the newest, in order


def test_a_store_full_of_unfinished_tasks_refuses_without_rescanning() -> None:
    store = counting_store(max_tasks=640)
    for i in range(640):
        assert submit(store, _task(i, finished=False))
    CountingDict.lookups = 0
    refused = sum(not submit(store, _task(640 + i, finished=False)) for i in range(5_000))
    assert refused == 5_000 and run_now(store.task_count()) == 640  # nothing finished: nothing may go, nothing added
    assert CountingDict.walks == 0 and CountingDict.lookups == 0
    assert run_now(store.finish(f"t{7:011d}", 3, 1.0))
    assert submit(store, _task(9_999, finished=False))  # the one finished task made room
    assert run_now(store.get_task(f"t{7:011d}")) is None and run_now(store.task_count()) == 640


def test_an_import_past_the_limit_keeps_the_newest_finished_and_every_unfinished() -> None:
    store = MemoryStore(max_tasks=10)
    tasks = [_task(i, finished=i % 3 != 0) for i in range(30)]  # 10 unfinished, 20 finished
    staged = run_now(store.staged([], tasks, []))
    kept = [t.task_id for t in run_now(staged.tasks())]
    assert kept == [f"t{i:011d}" for i in range(0, 30, 3)]  # over the limit: only unfinished ones are left
    assert not run_now(staged.make_room())


def test_ledger_keeps_the_newest_entries_and_the_whole_balance() -> None:
    store = MemoryStore(max_tasks=1_000, ledger_limit=50)
    run_now(store.add_account(Account("sk-x", 0)))
    for i in range(1_000):
        run_now(store.credit("sk-x", 1, float(i), "topup", None))
    account = run_now(store.get_account("sk-x"))
    assert account is not None
    assert account.credits == 1_000
    ledger = run_now(store.ledger("sk-x"))
    assert 1 <= len(ledger) <= 50
    assert ledger[-1].at == 999.0
    assert [e.at for e in ledger] == sorted(e.at for e in ledger)


def test_ledger_limit_follows_max_tasks(make_client: Callable[..., Client]) -> None:
    client = make_client(max_tasks=4)
    for i in range(10):
        client.submit(prompt=f"p {i}")
        client.advance(60)  # finished: the next submit may drop it
    assert client.balance() == 1000 - 10 * 15
    assert len(client.ledger()) <= 4


def test_journal_keeps_the_newest_requests(make_client: Callable[..., Client]) -> None:
    client = make_client(journal_limit=3)
    for i in range(10):
        client.get(f"/api/v1/tasks/t{i}", headers=AUTH)
    journal = client.get("/_mock/requests").json()
    assert [e["path"] for e in journal] == [f"/api/v1/tasks/t{i}" for i in (7, 8, 9)]
    assert [e["id"] for e in journal] == [8, 9, 10]
