"""The lost-answer fault: the request is handled (a create makes and charges its task), then the
client never gets the answer. In process, on a real server with httpx, and with retrying clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mockgen.scenario import parse_scenario
from mockgen.testing import MockServer

from .conftest import AUTH, JSON, Client

BODY = {"model_id": "gpt-image-2", "prompt": "a fox"}
CREATE = "/api/v1/tasks/create"


def scenario_client(make_client: Callable[..., Client], faults: str) -> Client:
    return make_client(parse_scenario("clock: manual\nseed: 9\nfaults:\n" + faults, "lost.yaml"))


def create(client: Client, headers: dict[str, str] | None = None, **body: object) -> httpx.Response:
    return client.post(CREATE, json={**BODY, **body}, headers={**AUTH, **(headers or {})})


# --- in process ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_lost_create_makes_and_charges_the_task_then_answers_a_gateway_error(client: Client, status: int) -> None:
    r = create(client, {"X-Mockgen-Fault": f"lost-{status}"})
    assert r.status_code == status and r.headers["x-mockgen-fault"] == f"header:lost-{status}"
    assert r.json()["code"] == status and r.json()["data"] is None  # no task id for the client
    assert ("retry-after" in r.headers) == (status == 503)
    [task] = client.get("/_mock/tasks").json()
    assert task["lost_answer"] == f"header:lost-{status}" and task["request"]["prompt"] == "a fox"
    assert client.balance() == 985
    assert client.ledger()[-1] == {
        "kind": "charge",
        "amount": 15,
        "at": client.ledger()[-1]["at"],
        "task_id": task["task_id"],
    }
    entry = client.get("/_mock/requests").json()[-1]
    assert (entry["task_id"], entry["fault"], entry["status"]) == (task["task_id"], f"header:lost-{status}", status)
    assert client.get(f"/_mock/tasks/{task['task_id']}").json()["lost_answer"] == f"header:lost-{status}"


def test_an_answered_task_has_no_lost_marker_and_the_task_goes_on(client: Client) -> None:
    create(client, {"X-Mockgen-Fault": "lost-502"})
    kept = client.submit()["data"]["task_id"]
    lost, shown = client.get("/_mock/tasks").json()
    assert shown["task_id"] == kept and shown["lost_answer"] is None
    client.advance(60)
    assert client.poll(lost["task_id"])["data"]["task_status"] == 3  # the lost one ran as any other


def test_a_scenario_lose_answer_fault_counts_like_the_others(make_client: Callable[..., Client]) -> None:
    client = scenario_client(
        make_client,
        "  - {name: gateway, match: {route: create, every_nth: 2}, lose_answer: 504, body: '<html>504</html>'}\n",
    )
    answers = [create(client, prompt=f"p{i}") for i in range(4)]
    assert [r.status_code for r in answers] == [200, 504, 200, 504]
    assert answers[1].text == "<html>504</html>" and answers[1].headers["content-type"].startswith("text/plain")
    tasks = client.get("/_mock/tasks").json()
    assert [t["lost_answer"] for t in tasks] == [None, "gateway", None, "gateway"]
    assert client.balance() == 1000 - 4 * 15


def test_a_refused_create_loses_its_answer_too_and_charges_nothing(client: Client) -> None:
    r = create(client, {"X-Mockgen-Fault": "lost-502"}, prompt="")
    assert r.status_code == 502  # the service said code 0; the gateway lost that answer
    assert client.get("/_mock/tasks").json() == [] and client.balance() == 1000
    entry = client.get("/_mock/requests").json()[-1]
    assert entry["fault"] == "header:lost-502" and entry["task_id"] is None and "prompt" in entry["error"]


def test_a_lost_poll_still_counts_the_poll(make_client: Callable[..., Client]) -> None:
    client = make_client(parse_scenario("clock: manual\ndefaults: {progress: polls, polls: {queued: 1, running: 1}}"))
    task_id = client.submit()["data"]["task_id"]
    for _ in range(2):
        r = client.get(f"/api/v1/tasks/{task_id}", headers={**AUTH, "X-Mockgen-Fault": "lost-504"})
        assert r.status_code == 504 and r.json()["code"] == 504
    assert client.poll(task_id)["data"]["task_status"] == 3  # the third poll: the lost two were counted
    assert client.get(f"/_mock/tasks/{task_id}").json()["polls"] == 3
    lost = client.get("/_mock/requests", params={"path": f"/api/v1/tasks/{task_id}"}).json()[:2]
    assert [(e["task_id"], e["fault"], e["status"]) for e in lost] == [(task_id, "header:lost-504", 504)] * 2


def test_a_lost_result_file_answer(make_client: Callable[..., Client]) -> None:
    client = scenario_client(make_client, "  - {name: cdn, match: {route: files}, lose_answer: 502}\n")
    task_id = client.submit()["data"]["task_id"]
    client.advance(60)
    url = client.poll(task_id)["data"]["image_url"]
    r = client.get(url)
    assert r.status_code == 502 and r.headers["x-mockgen-fault"] == "cdn"


def test_latency_then_a_lost_answer(make_client: Callable[..., Client]) -> None:
    client = scenario_client(
        make_client, "  - {name: slow-loss, match: {route: create}, latency: 30ms, lose_answer: 502}\n"
    )
    assert create(client).status_code == 502
    entry = client.get("/_mock/requests").json()[-1]
    assert entry["latency_ms"] >= 30 and entry["fault"] == "slow-loss" and entry["task_id"]


def test_the_lost_marker_survives_a_state_export_and_import(client: Client) -> None:
    create(client, {"X-Mockgen-Fault": "lost"})
    client.submit()
    state = client.get("/_mock/state").json()
    assert [t["lost_answer"] for t in state["tasks"]] == ["header:lost", None]
    client.post("/_mock/reset", headers=JSON)
    assert client.put("/_mock/state", json=state).status_code == 200
    assert [t["lost_answer"] for t in client.get("/_mock/tasks").json()] == ["header:lost", None]
    old = json.loads(json.dumps(state))
    for row in old["tasks"]:
        del row["lost_answer"]  # an export from before the marker still loads
    assert client.put("/_mock/state", json=old).status_code == 200
    assert [t["lost_answer"] for t in client.get("/_mock/tasks").json()] == [None, None]
    state["tasks"][0]["lost_answer"] = 7
    refused = client.put("/_mock/state", json=state)
    assert refused.status_code == 400 and "tasks[0].lost_answer must be a string or null" in refused.text


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("lose_answer: 418", "lose_answer: must be close or one of [500, 502, 503, 504], not 418"),
        ("lose_answer: cut", "lose_answer: must be close or one of [500, 502, 503, 504], not 'cut'"),
        ("lose_answer: true", "lose_answer: must be close or one of [500, 502, 503, 504], not True"),
        ("{lose_answer: 502, status: 500}", "a fault does one of: status, truncate, close, rate_limit, lose_answer"),
        ("{lose_answer: close, close: true}", "a fault does one of"),
    ],
)
def test_a_bad_lose_answer_is_refused_naming_file_line_and_key(fault: str, message: str) -> None:
    from mockgen.errors import ScenarioError

    text = "seed: 1\nfaults:\n  - name: x\n    match: {route: create}\n" if fault.startswith("lose") else "faults:\n"
    text += f"    {fault}\n" if fault.startswith("lose") else f"  - {fault}\n"
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "lost.yaml")
    shown = str(info.value)
    assert "lost.yaml:" in shown and message in shown, shown


# --- on a real server, with httpx ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer(clock="manual") as mock:
        yield mock


@pytest.fixture
def mock(server: MockServer) -> MockServer:
    server.reset()
    return server


def test_a_cut_create_raises_in_httpx_while_the_task_and_charge_exist(mock: MockServer) -> None:
    with httpx.Client(base_url=mock.base_url, headers=mock.headers(), timeout=5) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post(CREATE, json=BODY, headers={"X-Mockgen-Fault": "lost"})
        [task] = mock.tasks()
        assert task["lost_answer"] == "header:lost"
        assert mock.balance() == 985 and [e["kind"] for e in mock.ledger()][-1:] == ["charge"]
        assert http.post(CREATE, json=BODY).json()["code"] == 200  # the next connection is served
    [entry] = mock.requests(path=CREATE)[:1]
    assert entry["task_id"] == task["task_id"] and entry["fault"] == "header:lost"


@pytest.mark.parametrize("status", [502, 504])
def test_a_lost_create_with_a_gateway_status_on_a_real_server(mock: MockServer, status: int) -> None:
    with httpx.Client(base_url=mock.base_url, headers=mock.headers(), timeout=5) as http:
        r = http.post(CREATE, json=BODY, headers={"X-Mockgen-Fault": f"lost-{status}"})
        assert r.status_code == status and r.json()["code"] == status
    [task] = mock.tasks()
    assert task["lost_answer"] == f"header:lost-{status}" and mock.balance() == 985


# --- clients that retry ------------------------------------------------------------------------------


def naive_create(http: httpx.Client, body: dict[str, Any], attempts: int = 5) -> str:
    """Retries a create on any failure: the kind of client that double-charges."""
    for _ in range(attempts):
        try:
            r = http.post(CREATE, json=body)
        except httpx.TransportError:
            continue
        if r.status_code == 200 and r.json()["code"] == 200:
            return str(r.json()["data"]["task_id"])
    raise RuntimeError("gave up")


class Ambiguous(Exception):
    """The create may or may not have happened: reconcile before trying again."""


def careful_create(http: httpx.Client, body: dict[str, Any], attempts: int = 5) -> str:
    """Retries only what provably never reached the service (429, 503: refused at the door); a 5xx
    or a cut connection after the request was sent is ambiguous, and is not retried blindly."""
    for _ in range(attempts):
        try:
            r = http.post(CREATE, json=body)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
            raise Ambiguous(str(exc)) from exc
        if r.status_code in (429, 503):
            continue
        if r.status_code >= 500:
            raise Ambiguous(f"HTTP {r.status_code}")
        if r.json()["code"] == 200:
            return str(r.json()["data"]["task_id"])
        raise RuntimeError(r.json()["msg"])
    raise RuntimeError("gave up")


@pytest.fixture(scope="module")
def lost_answers() -> Iterator[MockServer]:
    with MockServer("lost-answers", clock="manual") as mock:
        yield mock


def charges(mock: MockServer) -> int:
    return sum(1 for e in mock.ledger() if e["kind"] == "charge")


def test_a_naive_retrying_client_pays_twice_for_one_request(lost_answers: MockServer) -> None:
    mock = lost_answers
    mock.reset()
    with httpx.Client(base_url=mock.base_url, headers=mock.headers(), timeout=5) as http:
        task_ids = [naive_create(http, {**BODY, "prompt": f"logical request {i}"}) for i in range(6)]
    prompts = [t["request"]["prompt"] for t in mock.tasks()]
    # 6 logical requests, 10 creates: 3, 6 and 9 lost a 502, 7 (the 5th the cut fault saw) was cut.
    assert len(prompts) == charges(mock) == 10 and len(set(prompts)) == 6
    assert {p: prompts.count(p) for p in prompts if prompts.count(p) > 1} == {
        "logical request 2": 2,
        "logical request 4": 3,
        "logical request 5": 2,
    }
    lost = [t for t in mock.tasks() if t["lost_answer"]]
    assert [t["lost_answer"] for t in lost] == ["lost-502", "lost-502", "lost-cut", "lost-502"]
    assert {t["task_id"] for t in lost}.isdisjoint(task_ids)  # the client never learnt these ids
    assert mock.balance() == 1000 - 10 * 15


def test_a_careful_client_is_charged_at_most_once_per_request(lost_answers: MockServer) -> None:
    mock = lost_answers
    mock.reset()
    outcomes: dict[str, str] = {}
    with httpx.Client(base_url=mock.base_url, headers=mock.headers(), timeout=5) as http:
        for i in range(9):
            prompt = f"logical request {i}"
            try:
                outcomes[prompt] = careful_create(http, {**BODY, "prompt": prompt})
            except Ambiguous:
                outcomes[prompt] = "ambiguous"
    prompts = [t["request"]["prompt"] for t in mock.tasks()]
    assert len(prompts) == len(set(prompts)) == charges(mock) == 9  # one task and one charge each
    # Each ambiguous answer was a task created behind a lost answer: reconcile, never retry blindly.
    ambiguous = {p for p, o in outcomes.items() if o == "ambiguous"}
    assert ambiguous == {t["request"]["prompt"] for t in mock.tasks() if t["lost_answer"]}
    assert len(ambiguous) == 4  # creates 3, 6 and 9 (502) and 7 (cut)
