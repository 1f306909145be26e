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


# --- faults first, then validation ------------------------------------------------------------------

# Creates the service refuses with code 0, each for another reason.
INVALID = [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"[1, 2]", id="an-array"),
    pytest.param(json.dumps({"model_id": "dall-e-9", "prompt": "a fox"}).encode(), id="unknown-model"),
    pytest.param(json.dumps({"model_id": "gpt-image-2", "prompt": ""}).encode(), id="empty-prompt"),
    pytest.param(json.dumps({**BODY, "aspect_ratio": "7:5"}).encode(), id="bad-ratio"),
]


def post_raw(client: Client, raw: bytes, headers: dict[str, str] | None = None):
    h = {**AUTH, "Content-Type": "application/json", **(headers or {})}
    return client.post("/api/v1/tasks/create", content=raw, headers=h)


@pytest.mark.parametrize("raw", INVALID)
def test_an_invalid_create_gets_the_header_fault_before_validation(client: Client, raw: bytes) -> None:
    assert post_raw(client, raw).json()["code"] == 0  # refused without a fault
    r = post_raw(client, raw, {"X-Mockgen-Fault": "502"})
    assert r.status_code == 502 and r.headers["x-mockgen-fault"] == "header:502"
    assert r.json() == {"code": 502, "msg": "Bad gateway (injected by mockgen).", "data": None}
    assert client.balance() == 1000 and client.get("/_mock/tasks").json() == []
    assert client.get("/_mock/requests").json()[-1]["fault"] == "header:502"


@pytest.mark.parametrize("raw", INVALID)
def test_an_invalid_create_is_throttled_failed_and_delayed_by_scenario_faults(make_client, raw: bytes) -> None:
    client = scenario_client(
        make_client,
        "faults:\n"
        "  - {name: limit, match: {route: create}, rate_limit: {per_second: 1, burst: 2}}\n"
        "  - {name: slow, match: {route: create}, latency: 30ms}\n",
    )
    first, second, third = (post_raw(client, raw) for _ in range(3))
    # Past the limit the invalid create gets the 429 too: the bucket counted the two before it.
    assert third.status_code == 429 and third.headers["x-mockgen-fault"] == "limit"
    assert third.headers["retry-after"] == "1"
    for r in (first, second):  # within it, delayed, then refused by validation, carrying the fault's name
        assert r.status_code == 200 and r.json()["code"] == 0 and r.headers["x-mockgen-fault"] == "slow"
    entries = client.get("/_mock/requests").json()
    assert [e["fault"] for e in entries] == ["slow", "slow", "limit"]
    assert all(e["latency_ms"] >= 30 for e in entries[:2]) and entries[0]["error"]
    client.advance(1)
    assert create(client).status_code == 200  # a valid one after the refill is served
    assert client.balance() == 985


def test_counters_count_invalid_creates(make_client) -> None:
    client = scenario_client(
        make_client,
        "faults:\n"
        "  - {name: warm-up, match: {route: create, first_n: 2}, status: 503}\n"
        "  - {name: every-3rd, match: {route: create, every_nth: 3}, status: 500}\n",
    )
    bad = json.dumps({"model_id": "gpt-image-2"}).encode()  # no prompt
    statuses = [post_raw(client, bad).status_code, post_raw(client, b"nope").status_code]
    assert statuses == [503, 503]  # first_n counted the two invalid creates: the warm-up is over
    statuses = [create(client).status_code, post_raw(client, bad).status_code, create(client).status_code]
    # every-3rd saw: valid (1), invalid (2), valid (3) -> 500
    assert statuses == [200, 200, 500]
    assert len(client.get("/_mock/tasks").json()) == 1 and client.balance() == 985


def test_after_n_and_count_per_key_count_invalid_creates(make_client) -> None:
    client = scenario_client(
        make_client,
        "faults:\n"
        "  - {name: per-key, match: {route: create, first_n: 1, count_per: key}, status: 503}\n"
        "  - {name: later, match: {route: create, after_n: 2}, status: 500}\n",
    )
    other = {"Authorization": "Bearer sk-" + "z" * 32}
    assert post_raw(client, b"[]").status_code == 503  # this key's first create, invalid: its one 503
    assert create(client).status_code == 200  # 'later' has now seen one (the per-key fault took the first)
    assert post_raw(client, b"[]").json()["code"] == 0  # 'later' saw two: still within after_n
    assert client.post("/api/v1/tasks/create", json=BODY, headers=other).status_code == 503  # a new key's first
    assert create(client).status_code == 500  # 'later' is past its two


def test_a_missing_key_is_refused_before_faults_and_not_counted(make_client) -> None:
    client = scenario_client(make_client, "faults:\n  - {name: first, match: {route: any, first_n: 1}, status: 503}\n")
    r = client.post("/api/v1/tasks/create", json=BODY)
    assert r.status_code == 401 and "x-mockgen-fault" not in r.headers
    r = client.post("/api/v1/tasks/create", json=BODY, headers={**AUTH, "X-Mockgen-Fault": "502"})
    assert r.status_code == 502  # the header fault comes before the scenario's, which is not consulted
    assert create(client).status_code == 503  # the scenario's first_n: 1 is still unspent
    assert create(client).status_code == 200


def lenient(make_client, match: str) -> Client:
    return scenario_client(
        make_client, f"faults:\n  - {{name: keyed, match: {{route: create, {match}}}, status: 500}}\n"
    )


@pytest.mark.parametrize(
    ("match", "body", "matched"),
    [
        # A key read from the JSON object even though the body is refused for something else.
        ("model_id: seedance-2", {"model_id": "seedance-2", "prompt": ""}, True),
        ("model_id: seedance-2", {"model_id": "gpt-image-2", "prompt": ""}, False),
        ("model_id: seedance-2", {"model_id": ["seedance-2"], "prompt": "x"}, False),  # not a string: unread
        ("prompt_contains: fox", {**BODY, "aspect_ratio": "7:5"}, True),
        ("prompt_regex: '^a f'", {**BODY, "image_urls": "nope"}, True),
        ("prompt_contains: fox", {"model_id": "gpt-image-2", "prompt": 42}, False),
        ("aspect_ratio: '16:9'", {"model_id": "seedance-2", "prompt": ""}, True),  # a video's default ratio
        ("aspect_ratio: '16:9'", {"model_id": "nope", "prompt": "x"}, False),  # no model, no default
        ("aspect_ratio: '16:9'", {"model_id": "nope", "aspect_ratio": "16:9"}, True),
        ("has_images: true", {"model_id": "nope", "image_urls": ["ftp://x"]}, True),
        ("has_images: false", {"model_id": "nope", "prompt": "x"}, True),
        ("has_images: false", {**BODY, "image_urls": "http://x.test/a.png"}, False),  # not a list: unread
        ("has_images: true", {**BODY, "image_urls": {"a": 1}}, False),
    ],
)
def test_request_keys_are_read_leniently_from_an_invalid_body(make_client, match: str, body, matched: bool) -> None:
    client = lenient(make_client, match)
    r = post_raw(client, json.dumps(body).encode())
    assert r.status_code == (500 if matched else 200)
    assert matched or r.json()["code"] == 0


@pytest.mark.parametrize("match", ["model_id: gpt-image-2", "prompt_contains: a", "has_images: false"])
def test_request_keys_never_match_a_body_that_is_not_an_object(make_client, match: str) -> None:
    client = lenient(make_client, match)
    for raw in (b"{broken", b'"a fox"', b"null"):
        r = post_raw(client, raw)
        assert r.status_code == 200 and r.json()["code"] == 0


def test_request_keys_never_match_a_poll(make_client) -> None:
    client = scenario_client(
        make_client, "faults:\n  - {name: no-images, match: {route: any, has_images: false}, status: 500}\n"
    )
    r = client.post("/api/v1/tasks/create", json={**BODY, "image_urls": ["http://x.test/a.png"]}, headers=AUTH)
    task_id = r.json()["data"]["task_id"]
    assert client.get(f"/api/v1/tasks/{task_id}", headers=AUTH).status_code == 200
    assert create(client).status_code == 500


@pytest.mark.parametrize("value", ["50²", "lost-50²", "lost-429", "lost-", "5020", "lost-close"])
def test_a_malformed_fault_header_is_code_0_never_a_500(client: Client, value: str) -> None:
    r = create(client, {"X-Mockgen-Fault": value.encode("latin-1")})  # type: ignore[dict-item]
    assert r.status_code == 200 and r.json()["code"] == 0 and "'lost'" in r.json()["msg"]
    assert client.balance() == 1000
