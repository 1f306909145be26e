"""spec.py is the contract: the OpenAPI document is derived from it, and the live answers follow it."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mockgen
from mockgen import media, models, spec
from mockgen.conformance import credits_needed
from mockgen.openapi import build_openapi
from mockgen.spec import (
    CREATE_KEYS,
    CREATE_PATH,
    DEFAULT_RATIO,
    ENVELOPE_KEYS,
    KIND_RATIOS,
    KINDS,
    MODELS,
    POLL_KEYS,
    QUERY_PATH,
    RATIOS,
    RESULT_FIELD,
    STATUSES,
    Msg,
)

from .conftest import AUTH, JSON, Client

PACKAGE = Path(mockgen.__file__).parent
DOC = build_openapi()
SCHEMAS = DOC["components"]["schemas"]


# --- the OpenAPI document, derived from spec ---------------------------------------------------------


def test_task_data_has_the_poll_keys_in_order() -> None:
    task = SCHEMAS["TaskData"]
    assert list(task["properties"]) == list(POLL_KEYS)
    assert task["required"] == list(POLL_KEYS) and task["additionalProperties"] is False
    assert task["properties"]["task_status"]["enum"] == list(STATUSES) == [1, 2, 3, 4]
    assert task["properties"]["task_status"]["description"] == "1 queued, 2 running, 3 success, 4 failed"
    assert task["properties"]["task_type"]["enum"] == list(KINDS)
    assert set(RESULT_FIELD.values()) < set(POLL_KEYS)


def test_the_create_schemas_have_spec_s_keys() -> None:
    data = SCHEMAS["CreateData"]
    assert list(data["properties"]) == data["required"] == list(CREATE_KEYS)
    request = SCHEMAS["CreateRequest"]
    assert list(request["properties"]) == list(spec.CREATE_FIELDS)
    assert request["required"] == list(spec.CREATE_REQUIRED)
    assert request["properties"]["model_id"]["enum"] == list(MODELS)
    assert request["properties"]["aspect_ratio"]["anyOf"][0]["enum"] == list(RATIOS)
    assert set(RATIOS) == {r for ratios in KIND_RATIOS.values() for r in ratios}
    assert SCHEMAS["CreateSuccess"]["properties"]["msg"] == {"const": Msg.SUBMITTED}
    assert SCHEMAS["QuerySuccess"]["properties"]["msg"] == {"const": Msg.OK}


@pytest.mark.parametrize("name", ["CreateSuccess", "QuerySuccess", "BusinessError", "AuthError", "HttpError"])
def test_every_envelope_has_spec_s_keys(name: str) -> None:
    envelope = SCHEMAS[name]
    assert list(envelope["properties"]) == envelope["required"] == list(ENVELOPE_KEYS)


def test_the_public_paths_are_spec_s() -> None:
    public = [path for path in DOC["paths"] if not path.startswith("/_mock/")]
    assert public == [CREATE_PATH, QUERY_PATH, spec.FILES_PATH]
    assert list(DOC["paths"][CREATE_PATH]) == ["post"] and list(DOC["paths"][QUERY_PATH]) == ["get"]


def test_the_control_api_s_kinds_and_statuses_are_spec_s() -> None:
    view = SCHEMAS["TaskView"]["properties"]
    assert view["status"]["enum"] == list(STATUSES) and view["task_type"]["enum"] == list(KINDS)
    assert SCHEMAS["StateTask"]["properties"]["aspect_ratio"]["enum"] == list(RATIOS)


def test_a_key_is_spec_s_pattern_everywhere(client: Client) -> None:
    key = SCHEMAS["Account"]["properties"]["key"]
    assert key["pattern"] == f"^{spec.KEY_PATTERN}$" and key["minLength"] == key["maxLength"] == spec.KEY_LENGTH
    assert re.fullmatch(spec.KEY_PATTERN, AUTH["Authorization"].removeprefix("Bearer ")) and spec.KEY_LENGTH == 35
    short = client.post(CREATE_PATH, json={}, headers={"Authorization": "Bearer sk-" + "a" * 31})
    assert short.status_code == spec.CODE_AUTH and short.json()["msg"] == Msg.BAD_KEY


def test_the_compat_document_repeats_the_poll_keys_at_the_top_level() -> None:
    schemas = build_openapi(envelope="compat")["components"]["schemas"]
    assert list(schemas["QuerySuccess"]["properties"]) == [*ENVELOPE_KEYS, *POLL_KEYS]
    assert list(schemas["CreateSuccess"]["properties"]) == [*ENVELOPE_KEYS, *CREATE_KEYS, "task_status"]


# --- the live answers follow spec --------------------------------------------------------------------


def _ordered(response: Any) -> dict[str, Any]:
    """The JSON object of an answer, in the order its keys were sent."""
    assert response.status_code == 200, response.text
    body = json.loads(response.content)
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("shortcut", [True, False], ids=["fast path", "general path"])
@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_the_answers_have_exactly_spec_s_keys_in_order(
    make_client: Callable[..., Client], model: spec.Model, shortcut: bool
) -> None:
    client = make_client(fast_path=shortcut)
    body = {"model_id": model.model_id, "prompt": "a lighthouse at dawn"}
    created = _ordered(client.post(CREATE_PATH, json=body, headers=AUTH))
    assert list(created) == list(ENVELOPE_KEYS) and list(created["data"]) == list(CREATE_KEYS)
    assert created["code"] == spec.CODE_OK and created["msg"] == Msg.SUBMITTED
    assert created["data"]["credits"] == model.cost
    assert created["data"]["request_id"].startswith(spec.REQUEST_ID_PREFIX)
    task_id = created["data"]["task_id"]
    seen = []
    for _ in range(20):  # the default scenario finishes a task within seconds of the manual clock
        polled = _ordered(client.get(QUERY_PATH.format(task_id=task_id), headers=AUTH))
        assert list(polled) == list(ENVELOPE_KEYS) and list(polled["data"]) == list(POLL_KEYS)
        assert polled["msg"] == Msg.OK
        data = polled["data"]
        seen.append(data["task_status"])
        if data["task_status"] in spec.FINAL_STATUSES:
            break
        client.advance(1.0)
    assert seen[0] == spec.QUEUED and spec.RUNNING in seen and seen[-1] == spec.SUCCEEDED
    assert data["task_type"] == model.task_type and data["model_id"] == model.model_id
    assert data["credits"] == model.cost
    result = RESULT_FIELD[model.task_type]
    assert data[result].startswith(f"http://mock.test{spec.FILES_PREFIX}{task_id}.")
    assert all(data[k] is None for k in POLL_KEYS if k.endswith("_url") and k != result)
    record = client.get(f"/_mock/tasks/{task_id}").json()
    assert record["request"]["aspect_ratio"] == DEFAULT_RATIO[model.task_type]


def test_the_compat_answers_repeat_spec_s_keys_in_order(make_client: Callable[..., Client]) -> None:
    client = make_client(envelope="compat")
    created = _ordered(client.post(CREATE_PATH, json={"model_id": "seedance-2", "prompt": "p"}, headers=AUTH))
    assert list(created) == [*ENVELOPE_KEYS, *CREATE_KEYS, "task_status"]
    task_id = created["data"]["task_id"]
    client.post(f"/_mock/tasks/{task_id}/resolve", json={"outcome": "failed"}, headers=JSON)
    polled = _ordered(client.get(QUERY_PATH.format(task_id=task_id), headers=AUTH))
    assert list(polled) == [*ENVELOPE_KEYS, *POLL_KEYS]
    assert polled["task_status"] == spec.FAILED and polled["msg"] == Msg.GENERATION_FAILED


@pytest.mark.parametrize("model", list(MODELS.values()), ids=list(MODELS))
def test_every_ratio_of_a_kind_is_taken_and_any_other_refused_with_the_list(client: Client, model: spec.Model) -> None:
    for ratio in KIND_RATIOS[model.task_type]:
        assert client.submit(model_id=model.model_id, aspect_ratio=ratio)["code"] == spec.CODE_OK
    refused = client.submit(model_id=model.model_id, aspect_ratio="7:5")
    msg = Msg.BAD_RATIO.format(value="'7:5'", ratios=", ".join(KIND_RATIOS[model.task_type]))
    assert refused == {"code": spec.CODE_FAILED, "msg": msg, "data": None}


def test_the_messages_sent_are_spec_s(client: Client) -> None:
    unknown = client.submit(model_id="no-such-model")
    assert unknown["msg"] == Msg.BAD_MODEL.format(value="'no-such-model'", models=", ".join(MODELS))
    missing = client.get(QUERY_PATH.format(task_id="zz0000000000"), headers=AUTH).json()
    assert missing["msg"] == Msg.NOT_FOUND.format(task_id="'zz0000000000'")
    assert CREATE_PATH in missing["msg"]
    no_key = client.post(CREATE_PATH, json={})
    assert no_key.status_code == spec.CODE_AUTH and no_key.json()["msg"] == Msg.NO_AUTH
    no_route = client.get("/api/v2/nothing")
    assert no_route.status_code == 404
    assert no_route.json()["msg"] == Msg.NO_ROUTE.format(method="GET", path="/api/v2/nothing")
    assert f"GET {QUERY_PATH}." in no_route.json()["msg"]  # the template's braces are literal
    no_file = client.get(f"{spec.FILES_PREFIX}zz0000000000.png")
    assert no_file.json()["msg"] == Msg.NO_FILE.format(name="zz0000000000.png")


# --- what still holds its own copy, and the module's purity ----------------------------------------


def test_the_domain_s_statuses_and_the_media_s_ratios_are_spec_s() -> None:
    assert (models.QUEUED, models.RUNNING, models.SUCCEEDED, models.FAILED) == tuple(STATUSES)
    assert tuple(media.ASPECT_RATIOS) == RATIOS  # every ratio a create may send can be rendered


def test_the_conformance_checker_prices_spec_s_models() -> None:
    assert credits_needed(spec.SEED_MODEL) == "15 credits (1 gpt-image-2 task, at the seed's price)"
    for model in MODELS.values():
        assert str(model.cost) in credits_needed(model.model_id)


def test_spec_imports_nothing_of_mockgen_or_http() -> None:
    tree = ast.parse((PACKAGE / "spec.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "typing"}


def _literals(path: Path) -> list[str]:
    """The string constants of a module, but its docstrings (which may name a path for the reader)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]  # fmt: skip


def test_no_module_copies_spec_s_paths_models_or_messages() -> None:
    messages = [v for k, v in vars(Msg).items() if k.isupper() and len(v) > 8]
    facts = [spec.TASKS_PREFIX, spec.FILES_PREFIX, *MODELS, *messages]
    copies = [
        f"{path.name}: {literal!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "spec.py"
        for literal in _literals(path)
        if any(fact in literal for fact in facts)
    ]
    assert copies == []
