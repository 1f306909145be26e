"""Big worlds: a full export loads back through PUT /_mock/state, and big answers never block other clients."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mockgen.app import save_state_file
from mockgen.backend import Backend
from mockgen.control import account_view, task_view
from mockgen.http import CHUNK_ITEMS, PAUSE_BYTES, dumps
from mockgen.state import export_state, state_at
from mockgen.store import run_now
from mockgen.testing import MockServer
from tests.conftest import JSON, KEY, OTHER_KEY, Client


def fill(backend: Backend, tasks: int, key: str = KEY) -> None:
    """``tasks`` tasks of ``key`` made through the Backend directly (far faster than over HTTP), some
    finished (a third failed and refunded), some running, some polled."""
    account = run_now(backend.account(key, create=True))
    run_now(backend.topup(key, tasks * 100))
    for i in range(tasks):
        prompt = f"a cat number {i}" + (" [fail]" if i % 3 == 0 else "")
        task = run_now(backend.submit(account, {"model_id": "gpt-image-2", "prompt": prompt}))
        if i % 5 == 0:
            run_now(backend.query(account, task.task_id))
        if i == tasks // 2 and backend.clock.kind == "manual":
            run_now(backend.advance(30))  # the first half finishes; the rest is still queued or running


@pytest.fixture
def big(make_client: Callable[..., Client]) -> Client:
    client = make_client("default")
    backend = client.app.state.backend  # type: ignore[attr-defined]
    fill(backend, 3 * CHUNK_ITEMS + 7)
    fill(backend, 5, OTHER_KEY)
    return client


def test_a_20000_task_world_round_trips_through_put(make_client: Callable[..., Client]) -> None:
    client = make_client("default")
    fill(client.app.state.backend, 20_000)  # type: ignore[attr-defined]
    exported = client.get("/_mock/state")
    assert exported.status_code == 200
    assert len(exported.content) > 1024 * 1024 * 4  # far past the 1 MiB of other bodies
    state = exported.json()
    assert len(state["tasks"]) == 20_000
    fresh = make_client("default")
    loaded = fresh.put("/_mock/state", content=exported.content, headers=JSON)
    assert loaded.status_code == 200, loaded.text
    assert fresh.get("/_mock/state").json() == state
    assert fresh.get("/_mock/tasks?limit=0").headers["x-total-count"] == "20000"
    assert gc.isenabled()


def test_the_streamed_state_is_the_export_byte_for_byte(big: Client) -> None:
    backend = big.app.state.backend  # type: ignore[attr-defined]
    r = big.get("/_mock/state")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "content-length" not in r.headers  # it was streamed
    assert r.content == dumps(run_now(export_state(backend)))
    assert r.json() == run_now(export_state(backend))


def test_the_streamed_task_list_is_the_list_rendered_whole(big: Client) -> None:
    backend = big.app.state.backend  # type: ignore[attr-defined]
    base = "http://mock.test"
    every = [run_now(task_view(backend, t, base)) for t in run_now(backend.store.tasks())]
    r = big.get("/_mock/tasks")
    assert "content-length" not in r.headers and r.headers["x-total-count"] == str(len(every))
    assert r.content == dumps(every)
    mine = big.get(f"/_mock/tasks?key={KEY}&limit={2 * CHUNK_ITEMS}")
    assert mine.headers["x-total-count"] == str(3 * CHUNK_ITEMS + 7)
    assert mine.json() == [v for v in every if v["key"] == KEY][-2 * CHUNK_ITEMS :]
    small = big.get(f"/_mock/tasks?key={OTHER_KEY}")  # a small answer is one body, as before
    assert small.headers["content-length"] == str(len(small.content)) and len(small.json()) == 5


def test_the_streamed_account_list_is_the_list_rendered_whole(make_client: Callable[..., Client]) -> None:
    client = make_client("default")
    backend = client.app.state.backend  # type: ignore[attr-defined]
    for i in range(PAUSE_BYTES // 40):  # past what is rendered in one go (an account is ~75 bytes)
        run_now(backend.create_account(i, name=f"user {i}"))
    r = client.get("/_mock/accounts")
    assert "content-length" not in r.headers
    assert r.content == dumps([account_view(a) for a in run_now(backend.store.accounts())])


def test_an_accounts_whole_ledger_streams_as_it_is_rendered_whole(big: Client) -> None:
    backend = big.app.state.backend  # type: ignore[attr-defined]
    for _ in range(PAUSE_BYTES // 50):  # past what is rendered in one go (an entry is ~60 bytes)
        run_now(backend.topup(KEY, 1))
    r = big.get(f"/_mock/accounts/{KEY}")
    assert "content-length" not in r.headers
    assert r.content == dumps(account_view(run_now(backend.account(KEY)), run_now(backend.ledger(KEY))))
    small = big.get(f"/_mock/accounts/{OTHER_KEY}")
    assert small.json() == account_view(run_now(backend.account(OTHER_KEY)), run_now(backend.ledger(OTHER_KEY)))


def test_a_lone_surrogate_streams_escaped(make_client: Callable[..., Client]) -> None:
    client = make_client("default")
    backend = client.app.state.backend  # type: ignore[attr-defined]
    fill(backend, CHUNK_ITEMS * 2)
    raw = b'{"model_id": "gpt-image-2", "prompt": "a cat \\ud800 on a mat"}'
    client.post("/api/v1/tasks/create", content=raw, headers={"Authorization": f"Bearer {KEY}", **JSON})
    assert client.get("/_mock/state").json() == run_now(export_state(backend))
    assert client.get("/_mock/tasks").json()[-1]["request"]["prompt"] == "a cat \ud800 on a mat"


def test_the_export_is_one_moment(big: Client) -> None:
    """What changes after the snapshot (a poll, a finish, a charge, a ledger trimmed) is not in it."""
    backend = big.app.state.backend  # type: ignore[attr-defined]
    before = run_now(export_state(backend))
    snapshot = run_now(state_at(backend))
    account = run_now(backend.account(KEY))
    task = run_now(backend.submit(account, {"model_id": "gpt-image-2", "prompt": "one more"}))
    run_now(backend.query(account, before["tasks"][0]["task_id"]))  # (its polls count goes up)
    run_now(backend.advance(600))
    del account.ledger[:10]
    assert snapshot.as_dict() == before
    assert task.task_id not in {t["task_id"] for t in before["tasks"]}


def test_the_state_file_is_written_from_a_snapshot(big: Client, tmp_path: Path) -> None:
    backend = big.app.state.backend  # type: ignore[attr-defined]
    before = run_now(export_state(backend))
    snapshot = run_now(state_at(backend))
    run_now(backend.advance(600))
    save_state_file(snapshot, tmp_path / "world.json")
    assert json.loads((tmp_path / "world.json").read_text()) == before


def test_put_state_past_its_bound_is_413_early_and_changes_nothing(make_client: Callable[..., Client]) -> None:
    client = make_client("default", state_bytes=10_000)
    fill(client.app.state.backend, 50)  # type: ignore[attr-defined]
    exported = client.get("/_mock/state").content
    assert len(exported) > 10_000
    r = client.put("/_mock/state", content=exported, headers=JSON)
    assert r.status_code == 413 and r.json() == {"error": "Request body too large: the limit is 10000 bytes."}

    def chunked() -> Any:  # no Content-Length: counted as it arrives
        for start in range(0, len(exported), 1000):
            yield exported[start : start + 1000]

    assert client.put("/_mock/state", content=chunked(), headers=JSON).status_code == 413
    assert client.get("/_mock/state").content == exported
    # Other control bodies keep their own 1 MiB limit; the state's bound is its alone.
    assert client.post("/_mock/next", content=b" " * (1024 * 1024 + 1), headers=JSON).status_code == 413


def test_a_state_bigger_than_other_bodies_loads_by_default(make_client: Callable[..., Client]) -> None:
    client = make_client("default")
    fill(client.app.state.backend, 3000)  # type: ignore[attr-defined]
    exported = client.get("/_mock/state").content
    assert len(exported) > 1024 * 1024  # the limit it used to have
    assert client.put("/_mock/state", content=exported, headers=JSON).status_code == 200


def test_a_refused_state_leaves_the_old_world_whole(big: Client) -> None:
    before = big.get("/_mock/state").content
    state = json.loads(before)
    state["tasks"][-1]["credits"] = -1  # the very last thing checked is wrong
    r = big.put("/_mock/state", json=state)
    assert r.status_code == 400 and f"tasks[{len(state['tasks']) - 1}].credits" in r.json()["error"]
    assert big.get("/_mock/state").content == before
    assert big.put("/_mock/state", content=b"{", headers=JSON).status_code == 400
    assert big.get("/_mock/state").content == before
    assert gc.isenabled()  # paused while a state is parsed, and only then


def worst_latency(base: str, busy: threading.Thread, totals: set[str]) -> tuple[float, int]:
    """The slowest GET /_mock/health, from a connection of its own, while ``busy`` runs (bounded); and
    into ``totals``, each task count seen meanwhile."""
    worst, count = 0.0, 0
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=30) as client:
        while busy.is_alive():
            assert time.monotonic() < deadline
            started = time.perf_counter()
            assert client.get(f"{base}/_mock/health").status_code == 200
            worst = max(worst, time.perf_counter() - started)
            count += 1
            totals.add(client.get(f"{base}/_mock/tasks?limit=0").headers["x-total-count"])
    return worst, count


def test_health_is_answered_during_a_big_export_and_import(capsys: pytest.CaptureFixture[str]) -> None:
    mock = MockServer("default", clock="manual", max_tasks=200_000)
    fill(mock.app.state.backend, 100_000)
    with mock:
        got: dict[str, Any] = {}

        def export() -> None:
            with httpx.stream("GET", mock.url("/_mock/state"), timeout=120) as r:
                got["status"] = r.status_code
                got["body"] = b"".join(r.iter_bytes())

        busy = threading.Thread(target=export)
        busy.start()
        totals: set[str] = set()
        export_worst, export_polls = worst_latency(mock.base_url, busy, totals)
        busy.join()
        assert got["status"] == 200 and len(json.loads(got["body"])["tasks"]) == 100_000

        # The import of a smaller world (20,000 tasks), parsed and checked in a thread meanwhile.
        state = json.loads(got["body"])
        state["tasks"] = state["tasks"][:20_000]
        body = json.dumps(state).encode()

        def load() -> None:
            r = httpx.put(mock.url("/_mock/state"), content=body, headers=JSON, timeout=120)
            got["put"] = r.status_code

        busy = threading.Thread(target=load)
        busy.start()
        import_worst, import_polls = worst_latency(mock.base_url, busy, totals)
        busy.join()
        assert got["put"] == 200
        assert totals <= {"100000", "20000"}  # never half a world: the old count or the new one
        assert len(mock.control("GET", "state")["tasks"]) == 20_000
    with capsys.disabled():
        print(
            f"\n  health during a 100,000-task export: worst {export_worst * 1000:.0f} ms of {export_polls} polls;"
            f" during a 20,000-task import: worst {import_worst * 1000:.0f} ms of {import_polls}"
        )
    assert export_worst < 1.0 and import_worst < 1.0
