"""Status follows the clock: the manual clock moves only when told, the real one by itself."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from mockgen import ManualClock, SystemClock, create_app
from mockgen.backend import Backend
from mockgen.scenario import load_scenario
from mockgen.store import run_now
from mockgen.testing import MockServer

from .conftest import AUTH, JSON, KEY, Client

README = Path(__file__).resolve().parent.parent / "README.md"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return struct.unpack(">II", data[16:24])


def test_manual_clock_task_waits_until_advanced_then_gives_a_png_of_the_right_shape(make_client) -> None:
    client: Client = make_client("ci")
    key = "sk-ci000000000000000000000000000001"
    task_id = client.submit(key=key, aspect_ratio="16:9")["data"]["task_id"]
    for _ in range(5):
        assert client.poll(task_id, key)["data"]["task_status"] == 1
    assert client.get("/_mock/health").json()["clock"] == "manual"
    client.advance(1)
    assert client.poll(task_id, key)["data"]["task_status"] == 2
    client.advance(4)
    data = client.poll(task_id, key)["data"]
    assert data["task_status"] == 3
    png = client.get(data["image_url"])
    assert png.headers["content-type"] == "image/png"
    width, height = png_size(png.content)
    assert width * 9 == height * 16


def test_advance_returns_the_new_time_and_refuses_going_back(client: Client) -> None:
    now = client.get("/_mock/health").json()["now"]
    assert client.advance(2.5) == now + 2.5
    assert client.post("/_mock/clock/advance", json={"seconds": -1}).status_code == 400
    assert client.post("/_mock/clock/advance", json={"seconds": "x"}).status_code == 400


def test_real_clock_cannot_be_advanced(make_client) -> None:
    client = make_client(clock="real")
    r = client.post("/_mock/clock/advance", json={"seconds": 1})
    assert r.status_code == 409 and "manual" in r.json()["error"]
    assert client.get("/_mock/health").json()["clock"] == "real"


def test_ten_thousand_tasks_finish_in_one_advance(client: Client) -> None:
    backend = client.app.state.backend
    account = run_now(backend.topup(client.key, 10_000 * 15))  # (stores the open key's account)
    for i in range(10_000):
        run_now(backend.submit(account, {"model_id": "gpt-image-2", "prompt": f"p{i} [fail]" if i % 2 else f"p{i}"}))
    client.advance(10)
    statuses = [t.final_status for t in run_now(backend.store.tasks())]
    assert statuses.count(3) == 5_000 and statuses.count(4) == 5_000
    assert client.balance() == 1000 + 10_000 * 15 - 5_000 * 15


# --- a clock of the caller's: create_app(clock=...), Backend(clock=...), MockServer(clock=...) -----


class Source(SystemClock):
    """A read-only clock on a time the test holds (as an application's own fake clock would be)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


def test_the_readme_example_of_a_clock_of_your_own_runs() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### A clock of your own") :]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    exec(compile(example.group(1), "README.md", "exec"), {"__name__": "readme_example"})


def test_a_manual_clock_given_is_moved_by_the_test_and_the_control_api_and_never_replaced(make_client) -> None:
    clock = ManualClock(start=1_000)
    client: Client = make_client(clock=clock)
    backend = client.app.state.backend
    task_id = client.submit(prompt="a cat [fail]")["data"]["task_id"]
    clock.advance(1)  # directly: the next request sees the time
    assert client.poll(task_id)["data"]["task_status"] == 2
    assert client.advance(9) == 1_010 == clock.now()  # the control API moves the same object
    assert client.poll(task_id)["data"]["task_status"] == 4
    assert [(e["kind"], e["at"]) for e in client.ledger()] == [
        ("charge", 1_000),
        ("refund", 1_002),
    ]  # when it failed, not when seen
    assert client.get("/_mock/health").json()["clock"] == "manual"
    assert client.post("/_mock/reset", headers=JSON).status_code == 200
    assert backend.clock is clock and clock.now() == 1_010  # a reset keeps it, at its time
    ci = {"name": "ci"}  # a manual clock of its own, starting at 2026-01-01: not used
    assert client.put("/_mock/scenario", json=ci).status_code == 200
    assert backend.clock is clock and client.get("/_mock/health").json()["now"] == 1_010


def test_a_state_loaded_sets_the_manual_clock_given(make_client) -> None:
    clock = ManualClock(start=5_000)
    client: Client = make_client(clock=clock)
    client.submit()
    state = client.get("/_mock/state").json()
    assert state["clock"] == {"kind": "manual", "now": 5_000}
    clock.advance(100)
    assert client.put("/_mock/state", json=state).status_code == 200
    assert clock.now() == 5_000 and client.app.state.backend.clock is clock


def test_a_read_only_clock_of_your_own_is_read_and_cannot_be_advanced(make_client) -> None:
    source = Source(2_000)
    client: Client = make_client(clock=source)
    task_id = client.submit(prompt="a cat [fail]")["data"]["task_id"]
    assert client.poll(task_id)["data"]["created_at"] == 2_000
    r = client.post("/_mock/clock/advance", json={"seconds": 1})
    assert r.status_code == 409 and "manual" in r.json()["error"]
    assert client.get("/_mock/health").json()["clock"] == "real"
    source.at = 2_060
    assert client.poll(task_id)["data"]["task_status"] == 4 and client.balance() == 1000


def test_the_string_forms_stay_and_the_scenario_decides_without_one() -> None:
    ci = load_scenario("ci")
    assert Backend(ci).clock.kind == "manual" and Backend(ci).now() == 1_767_225_600
    assert isinstance(Backend(ci, clock="real").clock, SystemClock)
    assert Backend(load_scenario("default"), clock="manual").clock.kind == "manual"
    given = ManualClock(7)
    backend = Backend(ci, clock=given)
    run_now(backend.reset())
    run_now(backend.load(load_scenario("default")))
    assert backend.clock is given and backend.now() == 7


class Manualish:
    kind = "manual"

    def now(self) -> float:
        return 0.0


@pytest.mark.parametrize(
    ("clock", "error", "message"),
    [
        ("sideways", ValueError, "clock must be one of real, manual or a Clock, not 'sideways'"),
        (object(), TypeError, "a Clock has now() and a kind ('real' or 'manual'); object has not"),
        (lambda: 0.0, TypeError, "a Clock has now() and a kind"),
        (Manualish(), TypeError, "Manualish says kind 'manual' but is no ManualClock: subclass ManualClock"),
    ],
    ids=["string", "object", "function", "manual-kind"],
)
def test_a_clock_mockgen_cannot_run_on_is_refused_when_the_app_is_made(clock: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        create_app("default", clock=clock)
    with pytest.raises(error, match=re.escape(message)):
        Backend(load_scenario("default"), clock=clock)


def test_a_real_server_runs_on_the_clock_given_and_use_scenario_may_change_it() -> None:
    clock = ManualClock(start=3_000)
    with MockServer("default", clock=clock) as mock:
        body = {"model_id": "gpt-image-2", "prompt": "a lighthouse"}
        task = httpx.post(mock.url("/api/v1/tasks/create"), json=body, headers=AUTH).json()["data"]
        clock.advance(10)  # from this thread, while the server runs in its own
        polled = httpx.get(mock.url(f"/api/v1/tasks/{task['task_id']}"), headers=AUTH).json()["data"]
        assert polled["task_status"] == 3 and polled["created_at"] == 3_000 and mock.balance(KEY) == 985
        assert mock.now() == 3_010
        mock.use_scenario("ci", clock="real")
        assert (
            mock.app.state.backend.clock is not clock and httpx.get(mock.url("/_mock/health")).json()["clock"] == "real"
        )
        mock.use_scenario("default", clock=clock)
        assert mock.app.state.backend.clock is clock and mock.now() == 3_010
        mock.use_scenario("ci")  # None: the scenario's own clock, as in the constructor
        assert mock.app.state.backend.clock is not clock and mock.now() == 1_767_225_600
