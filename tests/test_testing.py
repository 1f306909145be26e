"""mockgen.testing and create_app used the way a user would: only the public API, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

import mockgen
from mockgen.testing import MockServer, RequestMatch

CREATE = "/api/v1/tasks/create"


def submit(mock: MockServer, prompt: str = "a cat", **extra: object) -> dict:
    body = {"model_id": "gpt-image-2", "prompt": prompt, **extra}
    return httpx.post(mock.url(CREATE), json=body, headers=mock.headers()).json()


def test_create_app_runs_in_process_with_httpx_asgi_transport() -> None:
    async def scenario() -> tuple[int, int]:
        app = mockgen.create_app(scenario="ci", clock="manual")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mock.test") as client:
            auth = {"Authorization": "Bearer sk-ci000000000000000000000000000001"}
            created = await client.post(CREATE, json={"model_id": "gpt-image-2", "prompt": "x"}, headers=auth)
            task_id = created.json()["data"]["task_id"]
            await client.post("/_mock/clock/advance", json={"seconds": 10})
            polled = await client.get(f"/api/v1/tasks/{task_id}", headers=auth)
            return created.json()["code"], polled.json()["data"]["task_status"]

    assert asyncio.run(scenario()) == (200, 3)


def test_context_manager_gives_a_live_server_a_ready_key_and_stops() -> None:
    with MockServer("ci") as mock:
        assert mock.base_url.startswith("http://127.0.0.1:") and mock.port > 0
        assert mock.api_key == "sk-ci000000000000000000000000000001"
        assert httpx.get(mock.url("/_mock/health")).json()["clock"] == "manual"
        url = mock.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/_mock/health")


def test_async_context_manager_and_await_requests() -> None:
    async def scenario() -> list[dict]:
        async with MockServer("ci") as mock:
            async with httpx.AsyncClient(base_url=mock.base_url, headers=mock.headers()) as client:
                waiting = asyncio.create_task(mock.await_requests(f"POST {CREATE}", count=2, timeout=10))
                for prompt in ("one", "two"):
                    await client.post(CREATE, json={"model_id": "gpt-image-2", "prompt": prompt})
                return await waiting

    arrived = asyncio.run(scenario())
    assert [e["body"] for e in arrived] == [
        '{"model_id":"gpt-image-2","prompt":"one"}',
        '{"model_id":"gpt-image-2","prompt":"two"}',
    ]


def test_advance_resolve_balance_ledger_and_tasks(mock: MockServer) -> None:
    slow = submit(mock, "[slow] a cat")["data"]["task_id"]
    failing = submit(mock, "[fail] a dog")["data"]["task_id"]
    assert mock.balance() == 1000 - 30
    mock.advance(10)
    assert mock.balance() == 1000 - 15  # the [fail] task was refunded when it failed
    assert [e["kind"] for e in mock.ledger()] == ["charge", "charge", "refund"]
    resolved = mock.resolve(slow, "failed", msg="GPU on fire")
    assert resolved["status"] == 4 and resolved["message"] == "GPU on fire"
    assert mock.balance() == 1000
    assert {t["task_id"]: t["status"] for t in mock.tasks()} == {slow: 4, failing: 4}
    assert mock.task(failing)["planned_outcome"] == "failed"


def test_accounts_topup_queue_next_and_reset(mock: MockServer) -> None:
    key = mock.create_account(40, name="poor")
    assert mock.balance(key) == 40 and mock.topup(-10, key) == 30
    mock.queue_next("failed", count=1)
    task_id = submit(mock)["data"]["task_id"]
    mock.advance(10)
    assert mock.task(task_id)["status"] == 4
    mock.reset()
    assert mock.tasks() == [] and mock.requests() == [] and mock.balance() == 1000


def test_use_scenario_by_name_yaml_text_and_file(mock: MockServer, tmp_path) -> None:
    mock.use_scenario("default", clock="manual")
    assert httpx.get(mock.url("/_mock/health")).json() | {"now": 0} == {
        "status": "ok", "scenario": "default", "clock": "manual", "envelope": "documented", "now": 0,
        "store": "memory", "up": True,
    }  # fmt: skip
    mock.use_scenario("name: tiny\nclock: manual\nmodels:\n  gpt-image-2: {cost: 3}\n")
    assert submit(mock)["data"]["credits"] == 3
    path = tmp_path / "mine.yaml"
    path.write_text("name: from-file\nclock: manual\n")
    mock.use_scenario(path)
    assert httpx.get(mock.url("/_mock/health")).json()["scenario"] == "from-file"
    with pytest.raises(AssertionError, match="422"):
        mock.use_scenario("name: bad\nauth:\n  mode: sometimes\n")
    mock.use_scenario("ci")
    assert mock.api_key == "sk-ci000000000000000000000000000001"


def test_state_snapshot_round_trip(mock: MockServer) -> None:
    task_id = submit(mock)["data"]["task_id"]
    state = mock.state()
    assert state["clock"]["kind"] == "manual" and [t["task_id"] for t in state["tasks"]] == [task_id]
    mock.reset()
    assert mock.tasks() == []
    mock.load_state(state)
    assert [t["task_id"] for t in mock.tasks()] == [task_id] and mock.balance() == 985


# --- the journal and verification --------------------------------------------------------------


def test_journal_entries_carry_what_was_sent_and_what_happened(mock: MockServer) -> None:
    task_id = submit(mock, aspect_ratio="16:9")["data"]["task_id"]
    httpx.get(mock.url(f"/api/v1/tasks/{task_id}?verbose=1"), headers=mock.headers())
    create, query = mock.requests()
    assert create["method"] == "POST" and create["status"] == 200 and create["task_id"] == task_id
    assert create["key"] == "sk-ci00…0001" and mock.api_key not in str(create)
    assert create["headers"]["authorization"] == "Bearer sk-ci00…0001"
    assert '"aspect_ratio":"16:9"' in create["body"] and create["latency_ms"] >= 0
    assert query["query"] == "verbose=1" and query["fault"] is None and query["error"] is None
    assert mock.requests(path="/api/v1/tasks/*", method="get") == [query]
    assert mock.requests(key=mock.api_key) == [create, query]


def test_verify_counts_bodies_keys_and_statuses(mock: MockServer) -> None:
    submit(mock, "one")
    submit(mock, "two", aspect_ratio="9:16")
    assert len(mock.verify(f"POST {CREATE}", count=2)) == 2
    mock.verify(CREATE, body={"prompt": "two", "aspect_ratio": "9:16"}, count=1)
    mock.verify(CREATE, body=lambda b: b["prompt"].startswith("o"), count=1)
    mock.verify(CREATE, body='{"model_id":"gpt-image-2","prompt":"one"}')
    mock.verify("POST /api/v1/*", key=mock.api_key, status=200, at_least=2, at_most=2)
    mock.verify_never(f"GET {CREATE}")
    mock.verify_never(CREATE, body={"prompt": "three"})


def test_verify_failure_explains_with_the_journal_and_near_misses(mock: MockServer) -> None:
    submit(mock, "one")
    httpx.post(mock.url("/api/v1/task/create"), json={}, headers=mock.headers())  # a typo in the path
    submit(mock, "")  # refused by validation
    with pytest.raises(AssertionError) as info:
        mock.verify(f"POST {CREATE}", body={"prompt": "two"})
    text = str(info.value)
    assert (
        "expected at least 1 request(s) matching POST /api/v1/tasks/create with body {'prompt': 'two'}, got 0" in text
    )
    assert "POST /api/v1/task/create -> 404" in text and "[near miss: No route POST /api/v1/task/create." in text
    assert "[near miss: prompt is required" in text
    misses = mock.near_misses()
    assert [(m["path"], m["status"]) for m in misses] == [("/api/v1/task/create", 404), (CREATE, 200)]


def test_verify_order(mock: MockServer) -> None:
    task_id = submit(mock)["data"]["task_id"]
    httpx.get(mock.url(f"/api/v1/tasks/{task_id}"), headers=mock.headers())
    found = mock.verify_order(f"POST {CREATE}", "GET /api/v1/tasks/*")
    assert [e["method"] for e in found] == ["POST", "GET"]
    mock.verify_order(RequestMatch(CREATE, body={"prompt": "a cat"}))
    with pytest.raises(AssertionError, match="matched GET /api/v1/tasks/\\*, then no POST"):
        mock.verify_order("GET /api/v1/tasks/*", f"POST {CREATE}")


def test_wait_for_requests_returns_at_once_or_fails_with_the_journal(mock: MockServer) -> None:
    submit(mock)
    assert len(mock.wait_for_requests(f"POST {CREATE}", count=1, timeout=5)) == 1
    with pytest.raises(AssertionError, match="waited 0.05 s for 2 request"):
        mock.wait_for_requests(f"POST {CREATE}", count=2, timeout=0.05)


def test_the_journal_is_bounded() -> None:
    with MockServer("ci", journal_limit=3) as mock:
        for prompt in "abcde":
            submit(mock, prompt)
        assert [e["body"][-4:-2] for e in mock.requests()] == ['"c', '"d', '"e']


# --- the server's own lifecycle: its socket, its lifespan, its loop ----------------------------


@pytest.mark.parametrize("loop", ["asyncio", "auto"])
def test_the_server_keeps_serving_on_either_event_loop(loop: str) -> None:
    with MockServer("ci", loop=loop) as mock:
        for _ in range(3):  # a listening socket closed under uvicorn fails from the first accept on
            assert httpx.get(mock.url("/_mock/health"), timeout=5).status_code == 200
        assert submit(mock)["code"] == 200


def test_state_file_is_loaded_at_start_and_written_at_stop(tmp_path) -> None:
    state = tmp_path / "world.json"
    with MockServer("ci", state_file=state) as mock:
        task_id = submit(mock)["data"]["task_id"]
        assert not state.exists()
    assert [t["task_id"] for t in json.loads(state.read_text())["tasks"]] == [task_id]
    with MockServer("ci", state_file=state) as mock:
        assert [t["task_id"] for t in mock.tasks()] == [task_id] and mock.balance() == 985


def test_watch_reloads_the_scenario_file_of_a_running_server(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: first\nclock: manual\n")
    with MockServer(path, watch=True, watch_interval=0.02) as mock:
        path.write_text("name: second\nclock: manual\n")
        deadline = time.monotonic() + 5
        while httpx.get(mock.url("/_mock/health")).json()["scenario"] != "second":
            assert time.monotonic() < deadline, "the watcher never reloaded the file"
            time.sleep(0.02)  # file watching is real I/O


def test_stop_answers_a_parked_long_poll_at_once() -> None:
    mock = MockServer("ci").start()
    answers: list[int] = []

    def park() -> None:
        answers.append(httpx.get(mock.url("/_mock/requests/wait?path=/nothing&timeout=30"), timeout=40).status_code)

    waiter = threading.Thread(target=park)
    waiter.start()
    journal = mock.app.state.backend.journal
    deadline = time.monotonic() + 10
    while not journal.waiting and time.monotonic() < deadline:  # the real request parked on the real server
        time.sleep(0.01)
    assert journal.waiting == 1
    started = time.monotonic()
    mock.stop()
    took = time.monotonic() - started
    waiter.join(timeout=10)
    assert took < 2.0 and answers == [503]


def test_a_server_started_again_after_a_stop_still_long_polls() -> None:
    mock = MockServer("ci")
    for _ in range(2):
        with mock:
            submit(mock)
            assert mock.wait_for_requests(f"POST {CREATE}", count=1, timeout=5)
