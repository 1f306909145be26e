"""The fast path (mockgen.fastpath) against Starlette's routing: ``create_app(fast_path=False)`` and
the default answer the contract's two routes alike, faults and errors included; and the rule for
when the fast path is off."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from mockgen import create_app
from mockgen.scenario import parse_scenario

from .conftest import KEY

CREATE = "/api/v1/tasks/create"
AUTH = {"Authorization": f"Bearer {KEY}"}
SCENARIO = """\
clock: manual
start_time: 2026-01-01T00:00:00Z
seed: 9
envelope: {envelope}
rules:
  - {{name: slow-fail, match: {{prompt_contains: '[fail]'}}, outcome: failed, failure_message: 'no luck', running: 1}}
faults:
  - {{name: warm-up, match: {{route: create, first_n: 1}}, status: 503, retry_after: 5}}
  - {{name: broken-json, match: {{route: query, every_nth: 4}}, truncate: true}}
  - {{name: hang-up, match: {{route: create, prompt_contains: hang}}, close: true}}
  - {{name: lost, match: {{route: create, prompt_contains: lose}}, lose_answer: 502}}
  - {{name: custom, match: {{route: query, every_nth: 5}}, status: 429, body: slow down}}
"""
SUBMIT = {"model_id": "gpt-image-2", "prompt": "a cat"}

# (method, path, json body or raw bytes, extra headers); {0}, {1}: ids of earlier submits
REQUESTS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("POST", CREATE, SUBMIT, AUTH),  # the scenario's 503 (first_n)
    ("POST", CREATE, SUBMIT, AUTH),
    ("POST", CREATE, {"model_id": "seedance-2", "prompt": "[fail] a dog"}, AUTH),
    ("POST", CREATE, {**SUBMIT, "prompt": "hang up"}, AUTH),
    ("POST", CREATE, {**SUBMIT, "prompt": "lose it"}, AUTH),
    ("POST", CREATE, {"model_id": "nope", "prompt": "x"}, AUTH),
    ("POST", CREATE, b"{", AUTH),
    ("POST", CREATE, b'{"model_id": "gpt-image-2", "prompt": "\\ud800"}', AUTH),
    ("POST", CREATE, SUBMIT, {**AUTH, "X-Mockgen-Outcome": "failed", "X-Mockgen-Delay": "0"}),
    ("POST", CREATE, SUBMIT, {**AUTH, "X-Mockgen-Outcome": "maybe"}),
    ("POST", CREATE, SUBMIT, {**AUTH, "X-Mockgen-Fault": "lost"}),
    ("POST", CREATE, SUBMIT, {**AUTH, "X-Mockgen-Fault": "bogus"}),
    ("POST", CREATE, SUBMIT, {}),
    ("POST", CREATE, SUBMIT, {"Authorization": "Bearer nope"}),
    ("GET", "/api/v1/tasks/{0}", None, AUTH),
    ("GET", "/api/v1/tasks/{1}", None, AUTH),
    ("GET", "/api/v1/tasks/{2}", None, AUTH),  # the fourth poll: broken-json
    ("GET", "/api/v1/tasks/{0}", None, AUTH),  # the fifth: custom 429
    ("GET", "/api/v1/tasks/{0}", None, {**AUTH, "X-Mockgen-Fault": "503"}),
    ("GET", "/api/v1/tasks/{0}", None, {**AUTH, "X-Mockgen-Fault": "lost-504"}),
    ("GET", "/api/v1/tasks/{0}", None, {**AUTH, "X-Mockgen-Fault": "truncate"}),
    ("GET", "/api/v1/tasks/{0}", None, {"Authorization": "Bearer sk-" + "d" * 32}),
    ("GET", "/api/v1/tasks/missing", None, AUTH),
    ("GET", "/api/v1/tasks/{0}", None, {}),
    ("GET", "/api/v1/tasks/{0}", None, {**AUTH, "Host": "rebound.example"}),
]


def _replay(envelope: str, fast: bool) -> list[Any]:
    """Every answer a client sees (status, headers but the date, body), then the journal and the world."""
    scenario = parse_scenario(SCENARIO.format(envelope=envelope), "fast.yaml")
    app = create_app(scenario, fast_path=fast)
    seen: list[Any] = []
    ids: list[str] = []
    with TestClient(app, base_url="http://mock.test") as client:
        for step, (method, path, body, headers) in enumerate(REQUESTS):
            if step == len(REQUESTS) // 2:
                client.post("/_mock/clock/advance", json={"seconds": 60})  # some tasks finished
            url = path.format(*ids, "x", "y", "z")
            raw = body if isinstance(body, bytes) or body is None else None
            r = client.request(method, url, content=raw, json=None if raw is not None else body, headers=headers)
            if r.status_code == 200 and b'"request_id"' in r.content:
                ids.append(r.json()["data"]["task_id"])
            seen.append((r.status_code, sorted((k, v) for k, v in r.headers.items() if k != "date"), r.content))
        journal = client.get("/_mock/requests").json()
        for entry in journal:
            del entry["latency_ms"]
        seen += [journal, client.get("/_mock/state").json()]
    assert len(ids) >= 3  # the polls above reached real tasks
    return seen


@pytest.mark.parametrize("envelope", ["documented", "compat"])
def test_the_fast_path_and_starlettes_routing_give_identical_answers(envelope: str) -> None:
    fast, general = _replay(envelope, fast=True), _replay(envelope, fast=False)
    statuses = {answer[0] for answer in fast[: len(REQUESTS)]}
    assert {200, 401, 403, 429, 502, 503, 504} <= statuses  # errors and faults were all exercised
    for a, b in zip(fast, general, strict=True):
        assert a == b


class Counting:
    """A user's middleware: counts the requests it sees."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


def test_a_middleware_added_after_create_app_sees_the_contracts_routes_too() -> None:
    """The documented rule: add_middleware turns the fast path off rather than being skipped by it."""
    app = create_app("default", clock="manual")
    seen: list[str] = []
    app.add_middleware(Counting, seen=seen)
    with TestClient(app, base_url="http://mock.test") as client:
        created = client.post(CREATE, json=SUBMIT, headers=AUTH).json()
        task_id = created["data"]["task_id"]
        assert client.get(f"/api/v1/tasks/{task_id}", headers=AUTH).json()["data"]["task_status"] == 1
    assert seen == [f"POST {CREATE}", f"GET /api/v1/tasks/{task_id}"]
