"""The vendor's SDKs read the task's fields at the top level: `envelope: compat` lets them run unchanged.

The Python SDK (PyPI omnivideo-sdk 0.1.0) runs here against real servers; the README's "Known clients"
section says what it and its PHP/Go/Rust/.NET siblings read. The documented envelope stays the default,
and the SDK's failure against it is asserted too, exactly as the README describes it.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from omnivideo_sdk import OmniVideo, OmniVideoError, TaskStatus
from openapi_spec_validator import validate as validate_openapi

from mockgen import create_app
from mockgen.api import POLL_KEYS, polled, polled_compat, submitted, submitted_compat, task_data
from mockgen.backend import Msg
from mockgen.cli import main
from mockgen.conformance import Contract
from mockgen.errors import ScenarioError
from mockgen.http import dumps
from mockgen.openapi import build_openapi, response_schema
from mockgen.scenario import DEFAULT_FAILURE_MESSAGE, bundled_dir, parse_scenario
from mockgen.store import run_now
from mockgen.testing import MockServer

from .conftest import AUTH, KEY, Client
from .serving import Serve
from .test_openapi import jsonschema_errors

FAIL_MESSAGE = "Generation failed ([fail] test prompt). Credits were refunded."
REJECT_MESSAGE = "Prompt rejected by the content policy ([reject] test prompt). Nothing was charged."
# The default scenario (its [fail]/[reject] prompts), with tasks that move on at each poll instead of
# by the clock: the SDK's run() then finishes in three polls, with no waiting at all.
FAST = (
    (bundled_dir() / "default.yaml")
    .read_text()
    .replace("  outcome: success\n", "  outcome: success\n  progress: polls\n")
)


def fast(envelope: str | None = None) -> Any:
    text = FAST if envelope is None else f"{FAST}envelope: {envelope}\n"
    return parse_scenario(text, "fast.yaml")


@pytest.fixture(scope="module")
def compat_server() -> Iterator[MockServer]:
    with MockServer(fast(), envelope="compat") as mock:
        yield mock


@pytest.fixture(scope="module")
def documented_server() -> Iterator[MockServer]:
    with MockServer(fast()) as mock:
        yield mock


def sdk(mock: MockServer, key: str | None = None) -> OmniVideo:
    """The vendor's client, pointed at ``mock`` (its base URL includes /api/v1)."""
    return OmniVideo(key or mock.api_key, base_url=f"{mock.base_url}/api/v1", timeout=10)


def fresh(mock: MockServer) -> str:
    """A key of a new account with 1000 credits, so each test reads its own balance."""
    return mock.create_account(1000)


# --- the Python SDK, unchanged, against --envelope compat -------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "kind"), [("gpt-image-2", "image_url", "image/"), ("seedance-2", "video_url", "video/")]
)
def test_the_sdk_runs_a_task_to_its_result(compat_server: MockServer, model: str, field: str, kind: str) -> None:
    key = fresh(compat_server)
    task = sdk(compat_server, key).run(model, "a cat on a windowsill", poll_interval=0, max_wait=10)
    assert task.task_status == TaskStatus.SUCCESS and task.done
    url = getattr(task, field)
    assert task.output_url == url and url.startswith(f"{compat_server.base_url}/files/")
    assert task.raw is not None and task.raw["data"][field] == url  # the documented reading works too
    cost = {"gpt-image-2": 15, "seedance-2": 60}[model]
    assert task.credits == cost and compat_server.balance(key) == 1000 - cost
    result = httpx.get(url, timeout=10)
    assert result.status_code == 200 and result.headers["content-type"].startswith(kind)
    assert [e["status"] for e in compat_server.requests(key=key)] == [200] * 4  # create, then polls at 1, 2, 3


def test_the_sdk_create_and_get_task_read_the_ids(compat_server: MockServer) -> None:
    client = sdk(compat_server, fresh(compat_server))
    created = client.create_task("nano-banana-2", "a lighthouse", aspect_ratio="16:9")
    assert re.fullmatch(r"[a-z0-9]{12}", created.task_id) and created.task_status == TaskStatus.QUEUED
    assert created.credits == 8 and created.raw is not None and created.raw["request_id"].startswith("kie_")
    polled_task = client.get_task(created.task_id)
    assert polled_task.task_id == created.task_id and polled_task.task_status == TaskStatus.QUEUED


def test_a_failed_task_raises_with_its_failure_message_at_hand_and_the_refund_lands(
    compat_server: MockServer,
) -> None:
    key = fresh(compat_server)
    client = sdk(compat_server, key)
    with pytest.raises(OmniVideoError) as info:
        client.run("gpt-image-2", "a cat [fail]", poll_interval=0, max_wait=10)
    error = info.value
    assert error.code == TaskStatus.FAILED and error.status is None
    task_id = re.fullmatch(r"Task (\w+) failed", str(error)).group(1)  # type: ignore[union-attr]
    # The Python SDK's error names the task; the failure message is the answer's top-level msg, which
    # is what the Go, Rust and .NET SDKs raise with (README, Known clients).
    last = client.get_task(task_id)
    assert last.task_status == TaskStatus.FAILED and last.raw is not None and last.raw["msg"] == FAIL_MESSAGE
    assert compat_server.balance(key) == 1000
    assert [(e["kind"], e["amount"]) for e in compat_server.ledger(key)[-2:]] == [("charge", 15), ("refund", 15)]


def test_a_bad_key_raises_the_sdks_401(compat_server: MockServer) -> None:
    for key in ("sk-short", "not-a-key-at-all"):
        with pytest.raises(OmniVideoError) as info:
            sdk(compat_server, key).run("gpt-image-2", "a cat", poll_interval=0)
        assert info.value.status == 401 and "Unauthorized" in str(info.value)


@pytest.mark.parametrize(
    ("model", "prompt", "message"),
    [
        ("dall-e-3", "a cat", "dall-e-3"),
        ("gpt-image-2", "a cat [reject]", REJECT_MESSAGE),
    ],
)
def test_a_code_0_answer_raises_with_its_msg(compat_server: MockServer, model: str, prompt: str, message: str) -> None:
    key = fresh(compat_server)
    with pytest.raises(OmniVideoError) as info:
        sdk(compat_server, key).run(model, prompt, poll_interval=0)
    assert info.value.code == 0 and info.value.status is None and message in str(info.value)
    assert compat_server.balance(key) == 1000  # nothing charged


# --- the same flow against the default (documented) envelope fails as the README says ----------------


def test_against_the_documented_envelope_the_sdk_charges_then_polls_an_empty_task_id_and_gets_a_404(
    documented_server: MockServer,
) -> None:
    key = fresh(documented_server)
    client = sdk(documented_server, key)
    created = client.create_task("gpt-image-2", "a cat")
    assert created.task_id == "" and created.task_status == TaskStatus.QUEUED and created.credits is None
    with pytest.raises(OmniVideoError) as info:
        client.run("gpt-image-2", "a cat", poll_interval=0, max_wait=10)
    assert info.value.status == 404 and "No route GET /api/v1/tasks/." in str(info.value)
    assert documented_server.balance(key) == 1000 - 2 * 15  # both submits were charged, neither task was seen
    paths = [(e["method"], e["path"], e["status"]) for e in documented_server.requests(key=key)]
    assert paths == [("POST", "/api/v1/tasks/create", 200)] * 2 + [("GET", "/api/v1/tasks/", 404)]


def test_against_the_documented_envelope_errors_still_raise(documented_server: MockServer) -> None:
    with pytest.raises(OmniVideoError) as info:
        sdk(documented_server, "sk-short").create_task("gpt-image-2", "a cat")
    assert info.value.status == 401
    with pytest.raises(OmniVideoError) as info:
        sdk(documented_server).create_task("gpt-image-2", "a cat [reject]")
    assert info.value.code == 0 and str(info.value) == REJECT_MESSAGE


# --- the compat shapes -------------------------------------------------------------------------------


def compat_of(body: dict[str, Any], msg: str | None = None) -> dict[str, Any]:
    """What a compat answer must be: the documented one with data's fields also at the top level
    (a create answer's with task_status 1; a poll's, the contract's keys only)."""
    data = body["data"]
    top = {**data, "task_status": 1} if "request_id" in data else {k: data[k] for k in POLL_KEYS}
    return {"code": 200, "msg": msg or body["msg"], "data": data, **top}


def test_compat_answers_for_every_status(make_client: Callable[..., Client]) -> None:
    client = make_client(envelope="compat")
    backend = client.app.state.backend
    for prompt in ("a cat", "a cat [fail]"):
        created = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": prompt}, headers=AUTH)
        assert list(created.json()) == ["code", "msg", "data", "task_id", "request_id", "credits", "task_status"]
        assert created.json() == compat_of(created.json()) and created.json()["credits"] == 15
        task_id = created.json()["task_id"]
        seen = []
        for step in (0, 0.6, 2):  # an image task: queued 0.5 s, running 1.5 s
            client.advance(step)
            answer = client.get(f"/api/v1/tasks/{task_id}", headers=AUTH)
            body = answer.json()
            seen.append(body["task_status"])
            documented = json.loads(
                polled(task_data(backend, run_now(backend.store.get_task(task_id)), "http://mock.test"))
            )
            failure = FAIL_MESSAGE if body["task_status"] == 4 else None
            assert body == compat_of(documented, failure), body
            assert list(body) == ["code", "msg", "data", *POLL_KEYS]
            assert answer.content == polled_compat(body["data"], failure)
        assert seen == [1, 2, 4 if "[fail]" in prompt else 3]


def test_documented_answers_are_unchanged_byte_for_byte(client: Client) -> None:
    created = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers=AUTH)
    data = created.json()["data"]
    assert created.content == submitted(data["task_id"], data["request_id"], 15)
    assert set(created.json()) == {"code", "msg", "data"}
    polled_body = client.poll(data["task_id"])
    assert set(polled_body) == {"code", "msg", "data"} and polled_body["msg"] == "ok"


def test_compat_keeps_the_envelope_of_errors(make_client: Callable[..., Client]) -> None:
    client = make_client(envelope="compat")
    unauthorized = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"})
    assert unauthorized.status_code == 401 and set(unauthorized.json()) == {"code", "msg", "data"}
    for body in ({"model_id": "dall-e-3", "prompt": "x"}, {"model_id": "gpt-image-2", "prompt": "x [reject]"}):
        refused = client.post("/api/v1/tasks/create", json=body, headers=AUTH).json()
        assert set(refused) == {"code", "msg", "data"} and refused["code"] == 0 and refused["data"] is None
    missing = client.get("/api/v1/tasks/zz0000000000", headers=AUTH).json()
    assert set(missing) == {"code", "msg", "data"} and missing["code"] == 0


def test_a_rules_extra_fields_stay_under_data(make_client: Callable[..., Client]) -> None:
    scenario = parse_scenario(
        "envelope: compat\nrules:\n  - match: {prompt_contains: x}\n    extra: {code: 7, msg: no, seed: 42}\n"
    )
    client = make_client(scenario)
    task_id = client.submit(prompt="x")["data"]["task_id"]
    body = client.poll(task_id)
    assert body["code"] == 200 and body["msg"] == "ok" and body["data"]["seed"] == 42 and "seed" not in body
    assert list(body) == ["code", "msg", "data", *POLL_KEYS]
    assert body["data"]["code"] == 7 and {k: body[k] for k in POLL_KEYS} == {k: body["data"][k] for k in POLL_KEYS}


text = st.text(max_size=12)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text


@given(text, text, st.integers())
@settings(max_examples=200, deadline=None, database=None)
def test_the_compat_create_answer_of_any_ids(task_id: str, request_id: str, credits: int) -> None:
    documented = json.loads(submitted(task_id, request_id, credits))
    assert json.loads(submitted_compat(task_id, request_id, credits)) == compat_of(documented)


@given(
    st.fixed_dictionaries({k: scalars for k in POLL_KEYS}),
    st.dictionaries(text, scalars, max_size=2),
    st.sampled_from([1, 2, 3, 4, 4, 4, None, "4", 4.5, True]),  # mostly 4, the one with another msg
    st.none() | text,
)
@settings(max_examples=300, deadline=None, database=None)
def test_the_compat_poll_answer_of_any_data(data: dict[str, Any], more: dict[str, Any], status: Any, msg: Any) -> None:
    data["task_status"] = status
    data.update(more)
    expected_msg = (msg or DEFAULT_FAILURE_MESSAGE) if status == 4 else "ok"
    body = json.loads(polled_compat(data, msg))
    assert body == {"code": 200, "msg": expected_msg, "data": data, **{k: data[k] for k in POLL_KEYS}}
    assert json.loads(polled(data)) == {"code": 200, "msg": Msg.OK, "data": data}


def test_the_compat_bytes_are_compact_json(make_client: Callable[..., Client]) -> None:
    client = make_client(envelope="compat")
    created = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers=AUTH)
    assert created.content == dumps(created.json())
    assert client.get(f"/api/v1/tasks/{created.json()['task_id']}", headers=AUTH).content == dumps(
        client.poll(created.json()["task_id"])
    )


# --- choosing the envelope: scenario key, flag, environment, create_app, control API ------------------


def test_the_scenario_key_parses_and_defaults_to_documented() -> None:
    assert parse_scenario("").envelope == "documented"
    assert parse_scenario("envelope: compat\n").envelope == "compat"
    assert parse_scenario("envelope: documented\n").envelope == "documented"


@pytest.mark.parametrize(
    ("value", "fragment"), [("loose", "'loose' is not one of: documented, compat"), ("3", "must be a string")]
)
def test_a_bad_envelope_names_file_line_and_key(value: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(f"name: x\n\nenvelope: {value}\n", "shapes.yaml")
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.path) == ("shapes.yaml", 3, "envelope") and fragment in issue.message
    assert str(issue).startswith("shapes.yaml:3")


def test_create_app_overrides_the_scenario_and_refuses_a_bad_value(make_client: Callable[..., Client]) -> None:
    assert make_client(fast("compat")).get("/_mock/health").json()["envelope"] == "compat"
    assert make_client(fast("compat"), envelope="documented").get("/_mock/health").json()["envelope"] == "documented"
    with pytest.raises(ValueError, match="envelope must be one of documented, compat, not 'loose'"):
        create_app("default", envelope="loose")


def test_the_control_api_shows_the_envelope_in_force_and_the_override_outlives_a_scenario_load(
    make_client: Callable[..., Client],
) -> None:
    plain = make_client()
    assert plain.get("/_mock/scenario").json()["envelope"] == "documented"
    loaded = plain.put(
        "/_mock/scenario", content=b"name: shaped\nenvelope: compat\n", headers={"Content-Type": "application/yaml"}
    )
    assert loaded.status_code == 200, loaded.text
    assert plain.get("/_mock/health").json()["envelope"] == "compat"
    assert "task_id" in plain.submit()
    overridden = make_client(envelope="compat")
    assert overridden.put("/_mock/scenario", json={"name": "default"}).status_code == 200
    assert overridden.get("/_mock/scenario").json()["envelope"] == "compat" and "task_id" in overridden.submit()


def test_serve_refuses_an_unknown_envelope_without_a_traceback() -> None:
    result = CliRunner().invoke(main, ["serve", "--envelope", "loose"])
    assert result.exit_code == 2 and "'loose' is not one of 'documented', 'compat'" in result.output
    assert "Traceback" not in result.output
    assert "--envelope [documented|compat]" in CliRunner().invoke(main, ["serve", "--help"]).output


def test_mockgen_envelope_beats_the_scenario_in_a_real_serve_and_the_sdk_runs(tmp_path: Path) -> None:
    scenario = tmp_path / "fast.yaml"
    scenario.write_text(f"{FAST}envelope: documented\n")
    with Serve("--scenario", str(scenario), "--port", "0", env={"MOCKGEN_ENVELOPE": "compat"}) as served:
        base = served.base
        with urllib.request.urlopen(f"{base}/_mock/health", timeout=1) as r:
            assert json.loads(r.read())["envelope"] == "compat"
        task = OmniVideo(KEY, base_url=f"{base}/api/v1", timeout=10).run("gpt-image-2", "a cat", poll_interval=0)
        assert task.task_status == TaskStatus.SUCCESS and task.image_url and task.image_url.startswith(base)
    assert "Traceback" not in served.errors, served.errors


# --- the OpenAPI document and `mockgen contract` -----------------------------------------------------


def test_the_openapi_document_describes_the_envelope_in_force(make_client: Callable[..., Client]) -> None:
    compat = make_client(envelope="compat")
    doc = compat.get("/openapi.json").json()
    validate_openapi(doc)
    assert doc == build_openapi(compat.app.state.backend.scenario, "http://mock.test", envelope="compat")
    plain_doc = build_openapi()
    created = compat.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x [fail]"}, headers=AUTH)
    compat.advance(5)
    failed = compat.get(f"/api/v1/tasks/{created.json()['task_id']}", headers=AUTH)
    for answer, path, method in ((created, "/api/v1/tasks/create", "post"), (failed, "/api/v1/tasks/{task_id}", "get")):
        schema = response_schema(doc, path, method, 200)
        assert schema is not None and jsonschema_errors(answer.json(), schema, doc) == []
        plain = response_schema(plain_doc, path, method, 200)
        assert plain is not None and jsonschema_errors(answer.json(), plain, plain_doc) != []  # documented: no extras
    documented = make_client()
    task_id = documented.submit()["data"]["task_id"]
    schema = response_schema(doc, "/api/v1/tasks/{task_id}", "get", 200)
    assert schema is not None and jsonschema_errors(documented.poll(task_id), schema, doc) != []  # compat requires them
    assert "compat" in doc["info"]["description"] and "compat" not in plain_doc["info"]["description"]
    assert make_client().get("/openapi.json").json()["info"] == plain_doc["info"]
    by_the_scenario = build_openapi(fast("compat"))  # the scenario's key alone puts compat in the document
    create_success = by_the_scenario["components"]["schemas"]["CreateSuccess"]
    assert {"task_id", "request_id", "credits", "task_status"} <= set(create_success["required"])


@pytest.mark.parametrize("envelope", ["documented", "compat"])
def test_mockgen_contract_reports_the_shape(envelope: str) -> None:
    with MockServer("ci", envelope=envelope) as mock:
        result = CliRunner().invoke(main, ["contract", "--base-url", mock.base_url, "--key", mock.api_key])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("shape: envelope"))
    expected = {"documented": "documented (task fields under data only)", "compat": "compat (also at top level)"}
    assert row.split(None, 3)[2:] == ["PASS", expected[envelope]]
    assert "18 passed, 0 failed" in result.output


def test_mockgen_contract_fails_a_server_whose_shape_is_mixed(compat_server: MockServer) -> None:
    report = Contract(compat_server.base_url, compat_server.api_key)
    assert report.envelope_of({"code": 200, "msg": "ok", "data": {"task_id": "a", "credits": 1}}) == "documented"
    mixed = {"code": 200, "msg": "ok", "data": {"task_id": "a", "credits": 1}, "task_id": "a"}
    assert report.envelope_of(mixed) == "mixed"
    assert report.envelope_of({**mixed, "credits": 2}) == "mixed"
    assert report.envelope_of({**mixed, "credits": 1}) == "compat"
    assert report.envelope_of({"code": 0, "msg": "no", "data": None}) is None
    report.check_envelope("compat", {"code": 200, "msg": "ok", "data": {"task_status": 4}, "task_status": 4})
    report.check_envelope("documented", mixed)
    results = report.report.results
    assert [r.outcome for r in results] == ["FAIL", "FAIL"]
    assert "a failed task's msg is 'ok'" in results[0].detail and "the last poll mixed" in results[1].detail
