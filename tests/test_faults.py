"""Injected faults as a client sees them: statuses, Retry-After, rate limits, cut answers, latency."""

from __future__ import annotations

import json

import pytest

from mockgen.scenario import parse_scenario

from .conftest import AUTH, Client

BODY = {"model_id": "gpt-image-2", "prompt": "a fox"}


def scenario_client(make_client, text: str) -> Client:
    return make_client(parse_scenario("clock: manual\nseed: 9\n" + text, "faults.yaml"))


def create(client: Client, headers: dict[str, str] | None = None, **body: object):
    return client.post("/api/v1/tasks/create", json={**BODY, **body}, headers={**AUTH, **(headers or {})})


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_header_fault_gives_that_status_names_itself_and_charges_nothing(client: Client, status: int) -> None:
    r = create(client, {"X-Mockgen-Fault": str(status)})
    assert r.status_code == status
    assert r.headers["x-mockgen-fault"] == f"header:{status}"
    assert r.json()["code"] == status
    if status in (429, 503):
        assert int(r.headers["retry-after"]) >= 1
    assert client.balance() == 1000 and client.get("/_mock/tasks").json() == []
    entry = client.get("/_mock/requests").json()[-1]
    assert entry["fault"] == f"header:{status}" and entry["status"] == status


def test_header_fault_on_the_query_route(client: Client) -> None:
    task_id = client.submit()["data"]["task_id"]
    r = client.get(f"/api/v1/tasks/{task_id}", headers={**AUTH, "X-Mockgen-Fault": "502"})
    assert r.status_code == 502


def test_bad_steering_headers_are_code_0(client: Client) -> None:
    for header, value in [("X-Mockgen-Fault", "418"), ("X-Mockgen-Outcome", "maybe"), ("X-Mockgen-Delay", "soon")]:
        r = create(client, {header: value})
        assert r.status_code == 200 and r.json()["code"] == 0 and header in r.json()["msg"]
    assert client.balance() == 1000


def test_outcome_and_delay_headers_steer_one_task(client: Client) -> None:
    failed = create(client, {"X-Mockgen-Outcome": "failed"}).json()["data"]["task_id"]
    slow = create(client, {"X-Mockgen-Delay": "100"}).json()["data"]["task_id"]
    client.advance(10)
    assert client.poll(failed)["data"]["task_status"] == 4
    assert client.poll(slow)["data"]["task_status"] == 2
    client.advance(90)
    assert client.poll(slow)["data"]["task_status"] == 3


def test_truncated_body(client: Client) -> None:
    r = create(client, {"X-Mockgen-Fault": "truncate"})
    assert r.status_code == 200 and r.headers["x-mockgen-fault"] == "header:truncate"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert client.get("/_mock/tasks").json() == []


def test_scenario_faults_fail_first_n_then_succeed_with_custom_body(make_client) -> None:
    client = scenario_client(
        make_client,
        "faults:\n"
        "  - name: warm-up\n"
        "    match: {route: create, first_n: 2}\n"
        "    status: 503\n"
        "    retry_after: 7\n"
        "    body: {error: warming up}\n",
    )
    answers = [create(client) for _ in range(3)]
    assert [r.status_code for r in answers] == [503, 503, 200]
    assert answers[0].json() == {"error": "warming up"} and answers[0].headers["retry-after"] == "7"
    assert len(client.get("/_mock/tasks").json()) == 1
    assert client.balance() == 985


def test_faults_match_on_the_request_like_rules(make_client) -> None:
    client = scenario_client(
        make_client, "faults:\n  - {name: no-video, match: {route: create, model_id: seedance-2}, status: 500}\n"
    )
    assert create(client, model_id="seedance-2").status_code == 500
    assert create(client).status_code == 200


def test_rate_limit_per_key_with_retry_after_refills_with_the_clock(make_client) -> None:
    client = scenario_client(
        make_client, "faults:\n  - {name: limit, match: {route: any}, rate_limit: {per_second: 2, burst: 3}}\n"
    )
    codes = [create(client).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    limited = create(client)
    assert limited.headers["x-mockgen-fault"] == "limit" and limited.headers["retry-after"] == "1"
    other = "sk-" + "z" * 32
    r = client.post("/api/v1/tasks/create", json=BODY, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 200  # each key has its own bucket
    client.advance(1)
    assert [create(client).status_code for _ in range(3)] == [200, 200, 429]
    assert len([t for t in client.get("/_mock/tasks").json() if t["key"] == client.key]) == 5


def test_latency_fault_delays_then_answers_normally_and_is_named(make_client) -> None:
    client = scenario_client(make_client, "faults:\n  - {name: slow, match: {route: query}, latency: 30ms}\n")
    task_id = client.submit()["data"]["task_id"]
    r = client.get(f"/api/v1/tasks/{task_id}", headers=AUTH)
    assert r.status_code == 200 and r.json()["code"] == 200
    assert r.headers["x-mockgen-fault"] == "slow"
    entry = client.get("/_mock/requests", params={"path": f"/api/v1/tasks/{task_id}"}).json()[0]
    assert entry["latency_ms"] >= 30 and entry["fault"] == "slow"


def test_files_route_faults(make_client) -> None:
    client = scenario_client(make_client, "faults:\n  - {name: cdn-down, match: {route: files}, status: 502}\n")
    task_id = client.submit()["data"]["task_id"]
    client.advance(60)
    url = client.poll(task_id)["data"]["image_url"]
    assert client.get(url).status_code == 502


def test_close_cuts_the_answer_on_a_real_server() -> None:
    import http.client

    from mockgen.testing import MockServer

    with MockServer(clock="manual") as mock:
        conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
        conn.request(
            "POST",
            "/api/v1/tasks/create",
            body=json.dumps(BODY),
            headers={"Authorization": f"Bearer {mock.api_key}", "X-Mockgen-Fault": "close"},
        )
        response = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        conn.close()
        assert mock.tasks() == []
