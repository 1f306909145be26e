"""`serve --watch`: the scenario file is reloaded when it changes; a broken edit keeps the old one."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from starlette.testclient import TestClient

from mockgen import create_app
from mockgen.app import stop_watcher


def wait_for(client: TestClient, predicate, timeout: float = 5.0) -> dict:
    """Polls the health route: file watching is real I/O, so this waits on real time (briefly)."""
    deadline = time.monotonic() + timeout
    while True:
        health = client.get("/_mock/health").json()
        if predicate(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.02)


def test_watch_reloads_on_change_and_keeps_the_old_scenario_on_error(tmp_path: Path, caplog) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: first\nclock: manual\n")
    app = create_app(path, watch=True, watch_interval=0.02)
    with TestClient(app) as client:
        assert client.get("/_mock/health").json()["scenario"] == "first"
        path.write_text("name: second\nclock: manual\n")
        assert wait_for(client, lambda h: h["scenario"] == "second")["scenario"] == "second"
        path.write_text("name: third\nclock: sideways\n")
        time.sleep(0.2)
        assert client.get("/_mock/health").json()["scenario"] == "second"
        assert any("mine.yaml:2: clock" in r.getMessage() for r in caplog.records)
        path.write_text("name: fourth\n")
        assert wait_for(client, lambda h: h["scenario"] == "fourth")["clock"] == "real"


def test_watch_and_state_file_work_together(tmp_path: Path) -> None:
    scenario = tmp_path / "demo.yaml"
    scenario.write_text("name: one\nclock: manual\n")
    state = tmp_path / "state.json"
    app = create_app(scenario, watch=True, watch_interval=0.02, state_file=state)
    assert app.state.state_loaded is False
    with TestClient(app) as client:
        client.post("/_mock/accounts", json={"credits": 7, "key": "sk-" + "s" * 32})
        scenario.write_text("name: two\nclock: manual\n")
        assert wait_for(client, lambda h: h["scenario"] == "two")["scenario"] == "two"
        client.post("/_mock/accounts", json={"credits": 9, "key": "sk-" + "t" * 32})
    assert state.exists()  # written at shutdown
    again = create_app(scenario, state_file=state)
    assert again.state.state_loaded is True
    with TestClient(again) as client:
        assert {a["key"][-1]: a["credits"] for a in client.get("/_mock/accounts").json()} == {"t": 9}


def test_the_watcher_survives_any_bad_edit_and_loads_a_later_good_one(tmp_path: Path, caplog) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: first\nclock: manual\n")
    state = tmp_path / "state.json"
    app = create_app(path, watch=True, watch_interval=0.02, state_file=state)
    bad_edits = [
        "name: [unclosed\n",  # invalid YAML
        "name: big\nseed: " + "9" * 5000 + "\n",  # past Python's 4,300-digit limit for int()
        "name: deep\nextra: " + "[" * 5000 + "]" * 5000 + "\n",  # nesting deep enough to exhaust the stack
        "name: worse\nmodels: 17\n",
    ]
    with TestClient(app) as client:
        for number, text in enumerate(bad_edits):
            caplog.clear()
            path.write_text(text)
            os.utime(path, ns=(number + 1, number + 1))  # a new mtime each time, however fast
            deadline = time.monotonic() + 5
            while not any("mine.yaml" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, f"edit {number} was not reported: {text[:30]!r}"
                time.sleep(0.02)  # file watching is real I/O
            assert client.get("/_mock/health").json()["scenario"] == "first"
            assert all(r.exc_info is None for r in caplog.records)  # one line each, no traceback
        path.write_text("name: good\nclock: manual\n")
        assert wait_for(client, lambda h: h["scenario"] == "good")["scenario"] == "good"
    assert json.loads(state.read_text())["scenario"] == "good"  # and shutdown still saved the world


def test_a_watcher_that_died_does_not_stop_the_save_after_it(caplog) -> None:
    async def died() -> None:
        raise RuntimeError("boom")

    async def stop() -> None:
        task = asyncio.create_task(died())
        await asyncio.sleep(0)
        await stop_watcher(task)  # returns: the save that follows it in the lifespan still runs

    asyncio.run(stop())
    assert [r.getMessage() for r in caplog.records] == ["the scenario watcher had stopped: RuntimeError: boom"]
