"""GET /openapi.json: a valid OpenAPI 3.1 document that every answer of the server fits."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
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
# Its engine (what `st run` drives) with every check, in all its phases: examples, coverage (which
# includes each undeclared method, for 405 and Allow), fuzzing and the stateful phase over the links,
# inside a plain test: schemathesis' pytest integration (from_fixture) breaks on pytest 9.2.

schemathesis = pytest.importorskip("schemathesis")

LONGEST_WAIT = 0.05  # seconds: a generated valid timeout is cut to this, so the long-poll stays fuzzed but quick
# Where the contract itself requires the behaviour a check refuses (README, "/openapi.json"): each one by
# operation, with its reason.
EXCLUDED = {
    # The public routes answer invalid input with HTTP 200 and code 0 (the seed's contract), never a 4xx.
    "createTask": ("negative_data_rejection",),
    "getTask": ("negative_data_rejection",),
    # The long-poll answers 408 when its timeout passes first: its documented answer, not a refusal.
    "waitForRequests": ("positive_data_acceptance",),
    # A state's account keys and task ids must each be unique, which JSON Schema cannot say of array items.
    "putState": ("positive_data_acceptance",),
}
SCHEMATHESIS_CONFIG = f"""
seed = 20261201
workers = 1
max-time = 30
request-timeout = 5
headers = {{ Authorization = "Bearer {KEY}" }}
[checks]
enabled = true
[generation]
max-examples = 4
[phases.stateful]
max-steps = 8
"""


def _config() -> Any:
    text = SCHEMATHESIS_CONFIG
    for op_id, checks in EXCLUDED.items():
        text += f'\n[[operations]]\ninclude-operation-id = "{op_id}"\n'
        text += "".join(f"checks.{check}.enabled = false\n" for check in checks)
    return schemathesis.Config.from_str(text)


def _short_wait(query: dict[str, Any]) -> dict[str, Any]:
    """The long-poll's query with a valid timeout cut to LONGEST_WAIT (an invalid one is kept: it gets a 400)."""
    try:
        timeout = float(query["timeout"])
    except (KeyError, TypeError, ValueError):
        return query if "timeout" in query else {**query, "timeout": str(LONGEST_WAIT)}
    return {**query, "timeout": str(LONGEST_WAIT)} if 0 <= timeout <= 300 else query


def _failures(live: MockServer) -> tuple[list[str], set[str], set[str]]:
    """Run the engine; the failures and errors it found, the operations and the phases it ran."""
    from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

    schema = schemathesis.openapi.from_url(live.url("/openapi.json"), config=_config())

    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        if case.operation.path == "/_mock/requests/wait":
            case.query = _short_wait(dict(case.query or {}))

    def after_call(context: Any, case: Any, response: Any) -> None:
        # A scenario or a state loaded by a case changes the world (keys, models, extra fields) and so the
        # document: back to the one this run was given, so each case is checked against the truth.
        if response.status_code < 300 and case.operation.method.upper() == "PUT":
            httpx.put(live.url("/_mock/scenario"), json={"name": "default"}, timeout=5).raise_for_status()

    hooks = [schemathesis.hook(before_call), schemathesis.hook(after_call)]  # call hooks are global only
    try:
        return _run(schema)
    finally:
        for hook in hooks:
            GLOBAL_HOOK_DISPATCHER.unregister(hook)


def _run(schema: Any) -> tuple[list[str], set[str], set[str]]:
    from schemathesis.engine import events, from_schema

    found: list[str] = []
    operations: set[str] = set()
    phases: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            operations.add(str(event.recorder.label))
            phases.add(event.phase.name)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        found.append(
                            f"{event.recorder.label}: {check.name}: {check.failure_info.failure.title}\n"
                            f"  {check.failure_info.failure.message}\n  {check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.append(
                f"error: {getattr(event, 'label', '')}: {event.info.format() if hasattr(event, 'info') else event}"
            )
    return found, operations, phases


@pytest.mark.fuzz
def test_schemathesis_all_checks_and_stateful_find_nothing() -> None:
    with MockServer("default", clock="manual") as live:
        found, operations, phases = _failures(live)
    assert found == [], "\n".join(found)
    documented = {f"{m.upper()} {p}" for p, ops in DOC["paths"].items() for m in ops}
    assert documented <= operations
    assert {"COVERAGE", "FUZZING", "STATEFUL_TESTING"} <= phases
