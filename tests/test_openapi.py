"""GET /openapi.json: a valid OpenAPI 3.1 document that every answer of the server fits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from mockgen.openapi import build_openapi, check, response_schema
from mockgen.scenario import FAULT_STATUSES, bundled_names, load_scenario, parse_scenario
from mockgen.testing import MockServer

from .conftest import AUTH, JSON, KEY, Client

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


EXTRAS = """
name: extras
clock: manual
rules:
  - {name: progress, match: {prompt_contains: "[extra]"}, extra: {progress: 100, task_status: "done"}}
faults:
  - {name: warm-up, match: {route: create, prompt_contains: "[warm]"}, status: 503, body: {error: warming up}}
  - {name: text, match: {route: create, prompt_contains: "[text]"}, status: 500, body: "down"}
"""


def test_a_rules_extra_fields_and_a_faults_own_body_are_in_the_served_document(make_client) -> None:
    client = make_client(parse_scenario(EXTRAS, "extras"))
    doc = client.get("/openapi.json").json()
    validate_openapi(doc)
    task_id = client.submit(prompt="a cat [extra]")["data"]["task_id"]
    answer = client.poll(task_id)
    assert answer["data"]["progress"] == 100 and answer["data"]["task_status"] == "done"
    schema = response_schema(doc, QUERY, "get", 200)
    assert schema is not None and jsonschema_errors(answer, schema, doc) == [] and check(answer, schema, doc) == []
    assert jsonschema_errors(answer, schema) != []  # the default document refuses the extras, rightly
    r = client.post(CREATE, json={"model_id": "gpt-image-2", "prompt": "[warm] a cat"}, headers=AUTH)
    assert r.status_code == 503 and r.json() == {"error": "warming up"} and r.headers["retry-after"]
    fault = doc["paths"][CREATE]["post"]["responses"]["503"]
    assert jsonschema_errors(r.json(), fault["content"]["application/json"]["schema"], doc) == []
    assert "text/plain" in fault["content"] and fault["headers"]["Retry-After"]["required"] is True
    r = client.post(CREATE, json={"model_id": "gpt-image-2", "prompt": "[text] a cat"}, headers=AUTH)
    assert (r.status_code, r.text, r.headers["content-type"].split(";")[0]) == (500, "down", "text/plain")


def test_every_status_the_server_sends_is_documented_on_each_route() -> None:
    faults = {str(s) for s in FAULT_STATUSES}
    for path, method, also in [(CREATE, "post", {"200", "401", "413"}), (QUERY, "get", {"200", "401"}),
                               ("/files/{name}", "get", {"200", "404"})]:  # fmt: skip
        assert set(DOC["paths"][path][method]["responses"]) == faults | also
    ops = [op for ops in DOC["paths"].values() for op in ops.values()]
    assert len({op["operationId"] for op in ops}) == len(ops) and all(op["summary"] for op in ops)
    assert DOC["info"]["license"]["identifier"] == "MIT"
    links = DOC["paths"][CREATE]["post"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == {"getTask", "getTaskRecord", "resolveTask"}


def test_the_state_schema_names_the_fields_put_state_checks() -> None:
    """PUT /_mock/state checks a state field by field (mockgen.state): the document must say the same."""
    from mockgen import state

    schemas = DOC["components"]["schemas"]
    for name, fields, required in [
        ("State", state.STATE_FIELDS, state.STATE_REQUIRED),
        ("StateClock", state.CLOCK_FIELDS, {"now"}),
        ("StateAccount", state.ACCOUNT_FIELDS, state.ACCOUNT_REQUIRED),
        ("StateLedgerEntry", state.LEDGER_FIELDS, state.LEDGER_REQUIRED),
        ("StateTask", state.TASK_CHECKS, state.TASK_REQUIRED),
        ("StateNext", state.NEXT_FIELDS, state.NEXT_REQUIRED),
    ]:
        assert set(schemas[name]["properties"]) == set(fields), name
        assert set(schemas[name]["required"]) == set(required), name
        assert schemas[name]["additionalProperties"] is False
        assert all(schemas[name]["properties"].values()), f"{name}: a field without a type"


@pytest.mark.parametrize(
    ("url", "accepted"),
    [("http://", False), ("https://./x", False), ("ftp://a.b/c", False), ("http:// a", False),
     ("HTTPS://a.b/c.png", True), ("http://a", True)],
)  # fmt: skip
def test_the_image_urls_schema_accepts_what_the_server_accepts(client: Client, url: str, accepted: bool) -> None:
    body = {"model_id": "gpt-image-2", "prompt": "a cat", "image_urls": [url]}
    assert (jsonschema_errors(body, DOC["components"]["schemas"]["CreateRequest"]) == []) is accepted
    assert (client.submit(**body)["code"] == 200) is accepted


def test_405_says_which_methods_the_path_has(client: Client) -> None:
    for method, path, allow in [
        ("DELETE", CREATE, "POST"),  # the concrete path, as OpenAPI matches (not /api/v1/tasks/{task_id})
        ("PUT", "/api/v1/tasks/abc", "GET, HEAD"),
        ("TRACE", "/_mock/accounts", "GET, HEAD, POST"),  # two routes on one path: both named
        ("POST", "/_mock/state", "GET, HEAD, PUT"),
        ("POST", "/files/abc.png", "GET, HEAD"),
    ]:
        r = client.request(method, path, headers=AUTH)
        assert (r.status_code, r.headers.get("allow")) == (405, allow), (method, path, r.text)
    assert client.get("/api/v1/nowhere", headers=AUTH).headers.get("allow") is None  # a 404 has none


def test_the_control_api_takes_what_its_schemas_allow_and_refuses_the_rest(client: Client) -> None:
    task_id = client.submit()["data"]["task_id"]
    ok = [
        ("POST", "/_mock/accounts", None, 201),  # every field optional: no body at all (as JSON) is {}
        ("POST", "/_mock/accounts", {"credits": 3.0, "key": None, "name": None}, 201),  # 3.0 is an integer
        ("POST", "/_mock/next", {"outcome": "failed", "count": None, "model_id": None}, 201),
        ("POST", "/_mock/clock/advance", {"seconds": 0}, 200),
        ("POST", f"/_mock/tasks/{task_id}/resolve", {"outcome": "success", "msg": None}, 200),
        ("GET", "/_mock/tasks?limit=0", None, 200),
        ("GET", "/_mock/requests/wait?count=99&timeout=0.01", None, 408),
    ]
    refused = [
        ("POST", "/_mock/clock/advance", {}, 400),  # seconds is required: the schema says so
        ("POST", "/_mock/next", {}, 400),
        ("POST", f"/_mock/tasks/{task_id}/resolve", {}, 400),
        ("POST", f"/_mock/accounts/{KEY}/credits", {}, 400),
        ("PUT", "/_mock/scenario", None, 400),  # neither YAML nor a name
        ("PUT", "/_mock/state", {}, 400),
        ("GET", "/_mock/tasks?limit=", None, 400),
        ("GET", "/_mock/tasks?limit=%C2%B2", None, 400),  # '²' is a digit to str.isdigit, not to int()
        ("GET", "/_mock/requests/wait?count=1_0", None, 400),
        ("GET", "/_mock/requests/wait?timeout=%205", None, 400),
    ]
    for method, path, body, status in ok + refused:
        headers = JSON if method != "GET" else None  # a change, with a body or not, is sent as JSON
        r = client.request(method, path, headers=headers, **({} if body is None else {"json": body}))
        assert r.status_code == status, (method, path, body, r.text)


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
    # A state must be what GET /_mock/state exported: unique account keys and task ids, and integers written
    # as integers (3.0 is refused), neither of which JSON Schema can say.
    "putState": ("positive_data_acceptance",),
}
SCHEMATHESIS_CONFIG = f"""
seed = 20261201
workers = 1
max-time = 25  # fuzzing and the stateful phase repeat until it is spent (about 12 s without it)
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
    """The long-poll's query with a valid timeout cut to LONGEST_WAIT (an invalid one is kept: it gets a 400).
    A number, as generated: schemathesis validates the query again to tell a negative case."""
    try:
        timeout = float(query["timeout"])
    except (KeyError, TypeError, ValueError):
        return query if "timeout" in query else {**query, "timeout": LONGEST_WAIT}
    return {**query, "timeout": LONGEST_WAIT} if 0 <= timeout <= 300 else query


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


# --- @redocly/cli lint, from the repository's package-lock.json (npm ci), offline -------------------

REDOCLY = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "redocly"


def test_redocly_lint_passes_on_every_bundled_scenarios_document(tmp_path: Path) -> None:
    if shutil.which("node") is None or not REDOCLY.exists():
        reason = "needs Node and `npm ci --no-audit --no-fund` at the repository's root (node_modules/)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}")
        print(f"skipped: {reason}")
        pytest.skip(reason)
    files = []
    for name in bundled_names():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(build_openapi(load_scenario(name), "http://127.0.0.1:8000")), encoding="utf-8")
        files.append(str(path))
    # No telemetry and no update check: the test must not reach the network.
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true", "NO_COLOR": "1"}
    done = subprocess.run(
        [str(REDOCLY), "lint", "--format", "stylish", *files],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "warning" not in output.lower().replace("deprecation warning", ""), output
