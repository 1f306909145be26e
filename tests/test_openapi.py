"""GET /openapi.json: a valid OpenAPI 3.1 document that every answer of the server fits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, settings
from openapi_spec_validator import validate as validate_openapi

from mockgen.openapi import build_openapi, check, response_schema
from mockgen.scenario import parse_scenario
from mockgen.testing import MockServer

from .conftest import AUTH, KEY, Client

DOC = build_openapi()
CREATE, QUERY = "/api/v1/tasks/create", "/api/v1/tasks/{task_id}"


def jsonschema_errors(body: Any, schema: dict[str, Any], doc: dict[str, Any] = DOC) -> list[str]:
    """The answer checked by a real JSON Schema 2020-12 validator (the refs resolve in the document)."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": doc["components"], **schema}
    return [e.message for e in jsonschema.Draft202012Validator(root).iter_errors(body)]


def assert_fits(route: str, method: str, status: int, body: Any) -> None:
    schema = response_schema(DOC, route, method, status)
    assert schema is not None, f"{method} {route} -> {status} is not documented"
    assert jsonschema_errors(body, schema) == [], body
    assert check(body, schema, DOC) == [], body


def test_the_document_is_valid_openapi_3_1_with_valid_json_schemas() -> None:
    validate_openapi(DOC)
    assert DOC["openapi"] == "3.1.0"
    for schema in DOC["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "sk- and 32 letters or digits",
    }  # fmt: skip


def test_public_and_control_operations_are_tagged_apart() -> None:
    tags = {(path, method): op["tags"] for path, ops in DOC["paths"].items() for method, op in ops.items()}
    assert tags.pop((CREATE, "post")) == ["contract"] and tags.pop((QUERY, "get")) == ["contract"]
    assert tags.pop(("/files/{name}", "get")) == ["files"]
    assert tags and all(t == ["control"] for t in tags.values())
    assert all(path.startswith("/_mock/") for path, _ in tags)
    for path in (CREATE, QUERY):
        op = next(iter(DOC["paths"][path].values()))
        assert op["security"] == [{"bearerAuth": []}] and {"200", "401"} <= set(op["responses"])


def test_the_served_document_follows_the_scenario_and_is_not_journaled(make_client) -> None:
    client = make_client(parse_scenario("name: extra\nmodels:\n  flux-1: {task_type: image, cost: 4}\n", "extra"))
    doc = client.get("/openapi.json").json()
    validate_openapi(doc)
    assert doc["servers"] == [{"url": "http://mock.test"}]
    assert "flux-1" in doc["components"]["schemas"]["CreateRequest"]["properties"]["model_id"]["enum"]
    assert client.get("/_mock/requests").json() == []


ANSWERS = [
    ("no header", "post", CREATE, {}, {"model_id": "gpt-image-2", "prompt": "x"}, 401),
    ("basic scheme", "post", CREATE, {"Authorization": "Basic abc"}, {"model_id": "gpt-image-2", "prompt": "x"}, 401),
    ("malformed key", "get", "/api/v1/tasks/abc", {"Authorization": "Bearer sk-1"}, None, 401),
    ("unknown model", "post", CREATE, AUTH, {"model_id": "dall-e", "prompt": "x"}, 200),
    ("no prompt", "post", CREATE, AUTH, {"model_id": "gpt-image-2"}, 200),
    ("long prompt", "post", CREATE, AUTH, {"model_id": "gpt-image-2", "prompt": "x" * 5000}, 200),
    ("bad ratio", "post", CREATE, AUTH, {"model_id": "gpt-image-2", "prompt": "x", "aspect_ratio": "5:7"}, 200),
    ("bad urls", "post", CREATE, AUTH, {"model_id": "gpt-image-2", "prompt": "x", "image_urls": ["ftp://x"]}, 200),
    ("not an object", "post", CREATE, AUTH, [1, 2], 200),
    ("rejected", "post", CREATE, AUTH, {"model_id": "gpt-image-2", "prompt": "[reject] x"}, 200),
    ("unknown task", "get", "/api/v1/tasks/nosuchtask00", AUTH, None, 200),
    ("created", "post", CREATE, AUTH, {"model_id": "seedance-2", "prompt": "a river"}, 200),
    ("too big", "post", CREATE, AUTH, {"model_id": "gpt-image-2", "prompt": "x" * 2_000_000}, 413),
]


@pytest.mark.parametrize(("name", "method", "path", "headers", "body", "status"), ANSWERS, ids=[a[0] for a in ANSWERS])
def test_every_kind_of_answer_fits_the_document(
    client: Client, name: str, method: str, path: str, headers: dict[str, str], body: Any, status: int
) -> None:
    r = client.request(method.upper(), path, json=body, headers=headers)
    assert r.status_code == status, r.text
    assert_fits(CREATE if method == "post" else QUERY, method, status, r.json())


@pytest.mark.parametrize("prompt", ["a cat", "a cat [fail]"])
@pytest.mark.parametrize("model_id", ["gpt-image-2", "seedance-2"])
def test_a_task_fits_the_document_at_every_status(client: Client, model_id: str, prompt: str) -> None:
    task_id = client.submit(model_id=model_id, prompt=prompt)["data"]["task_id"]
    seen = set()
    for _ in range(12):
        answer = client.poll(task_id)
        assert_fits(QUERY, "get", 200, answer)
        seen.add(answer["data"]["task_status"])
        client.advance(0.5)
    assert seen == {1, 2, 3 if "[fail]" not in prompt else 4}


@pytest.mark.parametrize(
    "broken",
    [
        {"code": 200, "msg": "ok", "data": {"task_id": "a", "status": 1}},  # a renamed field
        {"code": "200", "msg": "ok", "data": None},  # a string code
        {"code": 0, "msg": "", "data": None},  # no reason given
        {"code": 0, "msg": "nope", "data": None, "extra": 1},  # an unexpected field
        {"code": 200, "msg": "ok", "data": {**dict.fromkeys(["task_id", "model_id"], "x"), "task_status": 5}},
    ],
)
def test_the_checker_and_jsonschema_both_refuse_drift(broken: dict[str, Any]) -> None:
    schema = response_schema(DOC, QUERY, "get", 200)
    assert schema is not None
    assert jsonschema_errors(broken, schema) and check(broken, schema, DOC)


def test_undocumented_statuses_are_reported() -> None:
    assert response_schema(DOC, CREATE, "post", 418) is None
    assert response_schema(DOC, "/_mock/tasks/{task_id}", "get", 422) is None
    assert response_schema(DOC, "/_mock/tasks/{task_id}", "get", 404) == {"$ref": "#/components/schemas/ControlError"}


# --- schemathesis against the served document, on a live server --------------------------------

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def live() -> Iterator[MockServer]:
    with MockServer("default", clock="manual") as mock:
        yield mock


@pytest.fixture(scope="module")
def served_schema(live: MockServer) -> Any:
    return schemathesis.openapi.from_url(live.url("/openapi.json"))


fuzzed = schemathesis.pytest.from_fixture("served_schema")
WAIT = "/_mock/requests/wait"
LONGEST_WAIT = 0.05  # seconds: a generated valid timeout is cut to this, so the long-poll stays fuzzed but quick


def _short_wait(query: dict[str, Any]) -> dict[str, Any]:
    """The long-poll's query with a valid timeout cut to LONGEST_WAIT (an invalid one is kept: it gets a 400)."""
    try:
        timeout = float(query["timeout"])
    except (KeyError, TypeError, ValueError):
        return query if "timeout" in query else {**query, "timeout": str(LONGEST_WAIT)}
    return {**query, "timeout": str(LONGEST_WAIT)} if 0 <= timeout <= 300 else query


@pytest.mark.fuzz
@fuzzed.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis_finds_no_5xx_and_no_schema_violation(case: Any, live: MockServer) -> None:
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
    if case.path == WAIT:
        case.query = _short_wait(dict(case.query or {}))
    case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=checks, timeout=10)
