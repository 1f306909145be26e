"""No 500 from any interleaving: a request in flight across a reset, a state load or a scenario swap.

A request awaits at two points between authenticating and changing the world: its body, and an
injected fault's latency. Each test here holds a request at one of them (an asyncio Event, or on a
real server a client that sends its body only after the server's ``100 Continue``, which uvicorn
sends when the app first asks for the body), replaces the world, then lets the request go on.
No test sleeps to order events; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from mockgen import create_app, faults
from mockgen.backend import Msg
from mockgen.scenario import parse_scenario
from mockgen.testing import MockServer

from .conftest import JSON, KEY

CREATE = "/api/v1/tasks/create"
BODY = json.dumps({"model_id": "nano-banana-2", "prompt": "a cat"}).encode()
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
RESET_ANSWER = {"code": 0, "msg": Msg.RESET, "data": None}
# A scenario with a latency on every route (its faults take the Request-based path of api.py).
SLOW = """
name: slow
clock: manual
auth: {mode: open, default_credits: 1000}
models:
  nano-banana-2: {task_type: image, cost: 8}
faults:
  - name: slow
    match: {route: any}
    latency: 0.01
"""
# A scenario without nano-banana-2: a body validated in the old world names a model this one lacks.
OTHER = """
name: other
auth: {mode: open, default_credits: 5}
models:
  other-model: {task_type: image, cost: 1}
"""
REPLACEMENTS = ["reset", "state", "scenario", "other-scenario"]


async def replace_world(client: httpx.AsyncClient, how: str) -> None:
    """Replace the world through the control API, as a test or the dashboard would."""
    if how == "reset":
        r = await client.post("/_mock/reset", headers=JSON)
    elif how == "state":
        r = await client.put("/_mock/state", json=(await client.get("/_mock/state")).json())
    elif how == "scenario":
        r = await client.put("/_mock/scenario", json={"name": "default"})
    else:
        r = await client.put("/_mock/scenario", content=OTHER, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text


def in_process(scenario: str = "default") -> httpx.AsyncClient:
    """A client of an in-process app on the manual clock; ``scenario`` is a bundled name or YAML text."""
    app = create_app(parse_scenario(scenario) if "\n" in scenario else scenario, clock="manual")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=10)


async def no_charge_in_new_world(client: httpx.AsyncClient) -> None:
    """Nothing of the old request reached the new world: no task, no charge on any account."""
    assert (await client.get("/_mock/tasks")).json() == []
    for account in (await client.get("/_mock/accounts")).json():
        ledger = (await client.get(f"/_mock/accounts/{account['key']}")).json()["ledger"]
        assert [e for e in ledger if e["kind"] == "charge"] == [], ledger


async def no_sleep(seconds: float) -> None:
    """A fault's latency, over at once (the manual clock does not drive asyncio.sleep)."""


class Gate:
    """A point where a request waits until the test lets it go: ``reached`` is set when it arrives."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        """Stands in for a fault's ``asyncio.sleep``: the latency lasts until the test releases it."""
        self.reached.set()
        await asyncio.wait_for(self.release.wait(), 10)

    async def body(self, data: bytes = BODY) -> AsyncIterator[bytes]:
        """A request body that arrives only when the test releases it (the app asks for it after
        authenticating the request: that is when ``reached`` is set)."""
        self.reached.set()
        await asyncio.wait_for(self.release.wait(), 10)
        yield data


async def held(request: Awaitable[httpx.Response], gate: Gate, meanwhile: Callable[[], Awaitable[None]]) -> Any:
    """Run ``request`` until it waits at ``gate``, run ``meanwhile``, let the request go on; its JSON answer."""
    task = asyncio.ensure_future(request)
    await asyncio.wait_for(gate.reached.wait(), 10)
    await meanwhile()
    gate.release.set()
    response = await asyncio.wait_for(task, 10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("scenario", ["default", SLOW], ids=["fast-path", "faulted-path"])
@pytest.mark.parametrize("how", REPLACEMENTS)
def test_a_submit_whose_world_is_replaced_while_its_body_is_awaited_is_told_to_retry(
    how: str, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fix: a 500 (KeyError in store.charge), or a charge in the new world on the old one's say."""
    monkeypatch.setattr(faults, "asyncio", SimpleNamespace(sleep=no_sleep))  # latencies pass at once

    async def run() -> None:
        async with in_process(scenario) as client:
            assert (await client.post("/_mock/accounts", json={"credits": 100, "key": KEY})).status_code == 201
            gate = Gate()
            answer = await held(
                client.post(CREATE, content=gate.body(), headers=HEADERS), gate, lambda: replace_world(client, how)
            )
            assert answer == RESET_ANSWER
            await no_charge_in_new_world(client)
            # The retry, in the new world, is served as usual (or refused for what this world lacks).
            r = await client.post(CREATE, content=BODY, headers=HEADERS)
            expected = 0 if how == "other-scenario" else 200
            assert (r.status_code, r.json()["code"]) == (200, expected), r.text

    asyncio.run(run())


@pytest.mark.parametrize("how", REPLACEMENTS)
def test_a_submit_whose_world_is_replaced_during_a_fault_latency_is_told_to_retry(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body has arrived and been validated against the old scenario; the world is replaced while a
    latency fault holds the request (before the fix: KeyError on the old model, or on the account)."""
    gate = Gate()
    monkeypatch.setattr(faults, "asyncio", SimpleNamespace(sleep=gate.sleep))

    async def run() -> None:
        async with in_process(SLOW) as client:
            create = client.post(CREATE, content=BODY, headers=HEADERS)
            answer = await held(create, gate, lambda: replace_world(client, how))
            assert answer == RESET_ANSWER
            await no_charge_in_new_world(client)

    asyncio.run(run())


@pytest.mark.parametrize("how", REPLACEMENTS)
def test_a_poll_whose_world_is_replaced_during_a_fault_latency_gets_a_contract_answer(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task is gone ("not found"), or, after a load of the same state, still there: never a 500."""

    async def run() -> None:
        async with in_process(SLOW) as client:
            created = (await client.post(CREATE, content=BODY, headers=HEADERS)).json()
            assert created["code"] == 200, created
            task_id = created["data"]["task_id"]
            gate = Gate()
            monkeypatch.setattr(faults, "asyncio", SimpleNamespace(sleep=gate.sleep))
            poll = client.get(f"/api/v1/tasks/{task_id}", headers=HEADERS)
            answer = await held(poll, gate, lambda: replace_world(client, how))
            if how == "state":
                assert (answer["code"], answer["data"]["task_id"]) == (200, task_id)
            else:
                assert answer["code"] == 0 and answer["msg"].startswith("Task not found"), answer

    asyncio.run(run())


def test_a_top_up_and_an_account_made_while_their_bodies_are_awaited_land_in_the_new_world() -> None:
    """Control requests change the world only after their body is read, in one step: a reset that
    comes first simply happens first (in open mode the top-up then makes the account anew)."""

    async def run() -> None:
        async with in_process() as client:
            await client.post(CREATE, content=BODY, headers=HEADERS)  # 1000 - 8
            gate, other = Gate(), Gate()
            url = f"/_mock/accounts/{KEY}/credits"
            topup = client.post(url, content=gate.body(b'{"delta": 5}'), headers=JSON)
            answer = await held(topup, gate, lambda: replace_world(client, "reset"))
            assert answer["credits"] == 1005 and [e["kind"] for e in answer["ledger"]] == ["topup"], answer
            made = client.post("/_mock/accounts", content=other.body(b'{"credits": 3}'), headers=JSON)
            task = asyncio.ensure_future(made)
            await asyncio.wait_for(other.reached.wait(), 10)
            await replace_world(client, "reset")
            other.release.set()
            r = await asyncio.wait_for(task, 10)
            assert r.status_code == 201 and r.json()["credits"] == 3, r.text
            keys = [a["key"] for a in (await client.get("/_mock/accounts")).json()]
            assert r.json()["key"] in keys

    asyncio.run(run())


# --- on a real uvicorn ---------------------------------------------------------------------------------


def _read_until(sock: socket.socket, marker: bytes, deadline: float) -> bytes:
    data = b""
    while marker not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("how", REPLACEMENTS)
def test_on_a_real_server_a_submit_whose_world_is_replaced_mid_body_is_told_to_retry(how: str) -> None:
    """A raw client sends a create's headers with ``Expect: 100-continue`` and its body only after the
    server's ``100 Continue`` (uvicorn sends it when the app asks for the body, after authenticating)."""
    with MockServer("default") as mock, httpx.Client(base_url=mock.base_url, timeout=10) as client:
        assert client.post("/_mock/accounts", json={"credits": 100, "key": KEY}).status_code == 201
        deadline = time.monotonic() + 10
        with socket.create_connection((mock.host, mock.port), timeout=10) as sock:
            head = (
                f"POST {CREATE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Length: {len(BODY)}\r\nExpect: 100-continue\r\n"
                "Connection: close\r\n\r\n"
            )
            sock.sendall(head.encode())
            assert _read_until(sock, b"\r\n\r\n", deadline).startswith(b"HTTP/1.1 100 Continue\r\n")

            async def replace() -> None:
                async with httpx.AsyncClient(base_url=mock.base_url, timeout=10) as ac:
                    await replace_world(ac, how)

            asyncio.run(replace())
            sock.sendall(BODY)
            raw = _read_until(sock, b"}", deadline)
            while not raw.endswith(b"}") and time.monotonic() < deadline:
                raw += _read_until(sock, b"}", deadline)
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK"
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == RESET_ANSWER
        assert client.get("/_mock/tasks").json() == []
        r = client.post(CREATE, content=BODY, headers=HEADERS)
        assert r.json()["code"] == (0 if how == "other-scenario" else 200), r.text


# Every answer a client may see while the world is replaced under it: (status, code or None, what).
SUBMIT_ANSWERS = {(200, 200), (200, 0)}
POLL_ANSWERS = {(200, 200), (200, 0)}
CONTROL_STATUSES = {200, 201, 404}


def test_on_a_real_server_submits_polls_and_top_ups_racing_resets_state_loads_and_swaps_never_get_a_500() -> None:
    """Clients submit (their bodies in two parts, so each awaits it), poll and top up while another
    replaces the world over and over, under a scenario with latency faults and one without:
    every answer is one the README documents, none a 500."""
    seen: Counter[tuple[str, int, int | None]] = Counter()
    messages: Counter[str] = Counter()
    swaps = [SLOW.replace("latency: 0.01", "latency: 0..0.005"), "default"]

    async def body() -> AsyncIterator[bytes]:
        yield BODY[:10]
        await asyncio.sleep(0)
        yield BODY[10:]

    async def call(kind: str, request: Awaitable[httpx.Response]) -> dict[str, Any] | None:
        """Send ``request`` and count its answer; a dropped connection counts as status 0 (a 500's
        traceback used to end the connection)."""
        try:
            r = await request
        except httpx.TransportError:
            seen[(kind, 0, None)] += 1
            return None
        answer = r.json()
        seen[(kind, r.status_code, answer.get("code") if kind != "topup" else None)] += 1
        return answer

    async def submitter(client: httpx.AsyncClient, n: int) -> None:
        task_ids: list[str] = []
        for i in range(n):
            headers = {**HEADERS, "Content-Length": str(len(BODY))}
            answer = await call("submit", client.post(CREATE, content=body(), headers=headers))
            if answer is not None and answer["code"] == 200:
                task_ids.append(answer["data"]["task_id"])
            elif answer is not None:
                messages[answer["msg"].split(":")[0]] += 1
            if task_ids and i % 3 == 0:
                await call("poll", client.get(f"/api/v1/tasks/{task_ids[-1]}", headers=HEADERS))
            if i % 5 == 0:
                await call("topup", client.post(f"/_mock/accounts/{KEY}/credits", json={"delta": 50}))

    async def replacer(client: httpx.AsyncClient, n: int) -> None:
        for i in range(n):
            how = ("reset", "state", "scenario")[i % 3]
            if how == "scenario":
                text = swaps[i % 2]
                if text == "default":
                    r = await client.put("/_mock/scenario", json={"name": "default"})
                else:
                    r = await client.put("/_mock/scenario", content=text, headers={"Content-Type": "application/yaml"})
                assert r.status_code == 200, r.text
            else:
                await replace_world(client, how)
            seen[("replace", 200, None)] += 1

    async def run() -> None:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=mock.base_url, timeout=10, limits=limits) as client:
            await asyncio.wait_for(asyncio.gather(*(submitter(client, 40) for _ in range(8)), replacer(client, 60)), 90)

    with MockServer("default", clock="real") as mock:
        asyncio.run(run())
        assert mock.app.state.backend.world > 60
    assert sum(n for (kind, _, _), n in seen.items() if kind == "submit") == 320
    assert {(s, c) for (kind, s, c) in seen if kind == "submit"} <= SUBMIT_ANSWERS, seen
    assert {(s, c) for (kind, s, c) in seen if kind == "poll"} <= POLL_ANSWERS, seen
    assert {s for (kind, s, _) in seen if kind == "topup"} <= CONTROL_STATUSES, seen
    assert set(messages) <= {Msg.RESET.split(":")[0], "Insufficient credits"}, messages


def test_after_a_reset_a_result_file_is_the_new_worlds_even_when_its_task_id_repeats(make_client: Any) -> None:
    """A seeded scenario hands out the same task ids after a reset: the file shows the new task's prompt
    (before: the old world's image, from the cache of rendered files)."""
    key = {"Authorization": "Bearer sk-ci000000000000000000000000000001"}
    client, fresh = make_client("ci"), make_client("ci")

    def png(c: Any, prompt: str) -> tuple[str, bytes]:
        r = c.post(CREATE, json={"model_id": "gpt-image-2", "prompt": prompt}, headers=key)
        task_id = r.json()["data"]["task_id"]
        c.post("/_mock/clock/advance", json={"seconds": 60}, headers=JSON)
        r = c.get(f"/files/{task_id}.png")
        assert r.status_code == 200
        return task_id, r.content

    old_id, old_png = png(client, "a red square")
    assert client.post("/_mock/reset", headers=JSON).status_code == 200
    new_id, new_png = png(client, "a blue circle")
    assert new_id == old_id and new_png != old_png
    assert png(fresh, "a blue circle") == (new_id, new_png)


def test_mock_server_changes_the_world_on_the_servers_loop_never_from_the_tests_thread(tmp_path: Any) -> None:
    """``use_scenario(path)`` and the ready key are run between requests on the server's own loop: from the
    test's thread they could run in the middle of a submit being handled (threads switch at any point)."""
    path = tmp_path / "other.yaml"
    path.write_text(OTHER)
    with MockServer("default", clock="manual") as mock:

        async def ident() -> int:
            return threading.get_ident()

        assert mock._thread is not None and mock._on_server(ident) == mock._thread.ident
        mock.use_scenario(path, clock="real")
        with httpx.Client(base_url=mock.base_url, timeout=10) as client:
            scenario = client.get("/_mock/scenario").json()
            assert (scenario["name"], scenario["path"]) == ("other", str(path)), scenario
            assert client.get("/_mock/health").json()["clock"] == "real"
            r = client.post(CREATE, json={"model_id": "other-model", "prompt": "a cat"}, headers=mock.headers())
            assert r.json()["code"] == 200, r.text

    async def answer() -> int:
        return 42

    assert MockServer("default")._on_server(answer) == 42  # not started: simply run
