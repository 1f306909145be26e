"""The OpenAPI 3.1 description of the public contract and the control API, plus a small checker for it."""

from __future__ import annotations

import re
from typing import Any

from .scenario import Scenario

Schema = dict[str, Any]
SEED_MODELS = ("seedance-2", "gpt-image-2", "nano-banana-2")
SEED_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9")
SUBMITTED = "提交成功,等待生成"  # the seed's text, with an ASCII comma (the same as backend.Msg.SUBMITTED)
JSON = "application/json"
ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}  # a task id or a key: one path segment


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _envelope(code: Schema, data: Schema, msg: Schema | None = None) -> Schema:
    return {
        "type": "object",
        "required": ["code", "msg", "data"],
        "additionalProperties": False,
        "properties": {"code": code, "msg": msg or {"type": "string", "minLength": 1}, "data": data},
    }


def _schemas(models: list[str], ratios: list[str], max_prompt: int, max_urls: int) -> dict[str, Schema]:
    nullable_url = {"type": ["string", "null"]}
    return {
        "CreateRequest": {
            "type": "object",
            "required": ["model_id", "prompt"],
            "properties": {
                "model_id": {"type": "string", "enum": models},
                "prompt": {"type": "string", "minLength": 1, "maxLength": max_prompt},
                "image_urls": {
                    "type": "array",
                    "maxItems": max_urls,
                    "items": {"type": "string", "format": "uri", "pattern": "^https?://"},
                },
                "aspect_ratio": {"type": "string", "enum": ratios},
            },
        },
        "CreateData": {
            "type": "object",
            "required": ["task_id", "request_id", "credits"],
            "additionalProperties": False,
            "properties": {
                "task_id": {"type": "string", "minLength": 1},
                "request_id": {"type": "string", "minLength": 1},
                "credits": {"type": "integer", "minimum": 0},
            },
        },
        "CreateSuccess": _envelope({"const": 200}, _ref("CreateData"), {"const": SUBMITTED}),
        "TaskData": {
            "type": "object",
            "required": [
                "task_id",
                "task_status",
                "task_type",
                "model_id",
                "image_url",
                "video_url",
                "audio_url",
                "credits",
                "created_at",
            ],  # fmt: skip
            "additionalProperties": False,
            "properties": {
                "task_id": {"type": "string", "minLength": 1},
                "task_status": {"enum": [1, 2, 3, 4], "description": "1 queued, 2 running, 3 success, 4 failed"},
                "task_type": {"enum": ["image", "video"]},
                "model_id": {"type": "string", "minLength": 1},
                "image_url": nullable_url,
                "video_url": nullable_url,
                "audio_url": nullable_url,
                "credits": {"type": "integer", "minimum": 0},
                "created_at": {"type": "integer", "description": "Unix seconds"},
            },
        },
        "QuerySuccess": _envelope({"const": 200}, _ref("TaskData"), {"const": "ok"}),
        "BusinessError": _envelope({"const": 0}, {"type": "null"}),
        "AuthError": _envelope({"const": 401}, {"type": "null"}),
        "HttpError": _envelope({"type": "integer"}, {"type": "null"}),
        "CreateResponse": {"oneOf": [_ref("CreateSuccess"), _ref("BusinessError")]},
        "QueryResponse": {"oneOf": [_ref("QuerySuccess"), _ref("BusinessError")]},
        "ControlError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "issues": {"type": "array"}},
        },
    }


def _content(schema: Schema) -> dict[str, Any]:
    return {"content": {JSON: {"schema": schema}}}


def _error_responses() -> dict[str, Any]:
    retry = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}}
    return {
        "401": {
            "description": "missing header, another scheme, malformed or unknown key",
            **_content(_ref("AuthError")),
        },
        "413": {"description": "body over the size limit", **_content(_ref("HttpError"))},
        "429": {"description": "rate limited (an injected fault)", "headers": retry, **_content(_ref("HttpError"))},
        "503": {"description": "unavailable (an injected fault)", "headers": retry, **_content(_ref("HttpError"))},
    }


def _public_paths() -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    return {
        "/api/v1/tasks/create": {
            "post": {
                "tags": ["contract"],
                "operationId": "createTask",
                "summary": "Submit a generation task; its cost is charged now and refunded if it fails.",
                "security": security,
                "requestBody": {"required": True, **_content(_ref("CreateRequest"))},
                "responses": {
                    "200": {
                        "description": "code 200 with the new task, or code 0 with a business failure",
                        **_content(_ref("CreateResponse")),
                    },
                    **_error_responses(),
                },
            }
        },
        "/api/v1/tasks/{task_id}": {
            "get": {
                "tags": ["contract"],
                "operationId": "getTask",
                "summary": "Poll a task until task_status is 3 (success) or 4 (failed).",
                "security": security,
                "parameters": [{"name": "task_id", "in": "path", "required": True, "schema": ID}],
                "responses": {
                    "200": {
                        "description": "code 200 with the task, or code 0 (e.g. task not found)",
                        **_content(_ref("QueryResponse")),
                    },
                    **_error_responses(),
                },
            }
        },
    }


def _control_op(summary: str, body: Schema | None = None, ok: str = "200", params: tuple[str, ...] = ()) -> Schema:
    op: Schema = {
        "tags": ["control"],
        "summary": summary,
        "security": [{}, {"adminToken": []}],
        "responses": {
            ok: {"description": "done", **({} if ok == "204" else _content({}))},
            "4XX": {"description": "refused", **_content(_ref("ControlError"))},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": False, **_content(body)}
    if params:
        op["parameters"] = [_param(p) for p in params]
    return op


def _param(name: str) -> Schema:
    """'key' is a path parameter, '?key' an optional query parameter."""
    query = name.startswith("?")
    schema = {"type": "string"} if query else ID
    return {"name": name.lstrip("?"), "in": "query" if query else "path", "required": not query, "schema": schema}


def _obj(**props: Schema) -> Schema:
    return {"type": "object", "properties": props}


def _control_paths() -> dict[str, Any]:
    outcome = {"enum": ["success", "failed"]}
    filters = ("?path", "?method", "?key", "?errors")
    wait = _control_op(
        "Long-poll until 'count' matching requests arrived (408 at the timeout).",
        params=(*filters, "?count", "?timeout"),
    )
    wait["responses"]["408"] = {"description": "the timeout passed first; what did arrive", **_content({})}
    return {
        "/_mock/health": {"get": _control_op("Status, scenario, clock kind and the time now.")},
        "/_mock/accounts": {
            "get": _control_op("Every account and its balance."),
            "post": _control_op(
                "Create an account.", _obj(credits={"type": "integer"}, key={"type": "string"}), ok="201"
            ),
        },
        "/_mock/accounts/{key}": {"get": _control_op("An account with its ledger.", params=("key",))},
        "/_mock/accounts/{key}/credits": {
            "post": _control_op("Top up (or down).", _obj(delta={"type": "integer"}), params=("key",))
        },
        "/_mock/tasks": {"get": _control_op("Every task with its request, timeline and outcome.", params=("?key",))},
        "/_mock/tasks/{task_id}": {"get": _control_op("One task.", params=("task_id",))},
        "/_mock/tasks/{task_id}/resolve": {
            "post": _control_op(
                "Finish a task now.", _obj(outcome=outcome, msg={"type": "string"}), params=("task_id",)
            )
        },
        "/_mock/clock/advance": {"post": _control_op("Move the manual clock.", _obj(seconds={"type": "number"}))},
        "/_mock/requests": {
            "get": _control_op("The request journal, newest last (near misses carry an 'error').", params=filters),
            "delete": _control_op("Clear the journal.", ok="204"),
        },
        "/_mock/requests/wait": {"get": wait},
        "/_mock/scenario": {
            "get": _control_op("The scenario in force."),
            "put": _control_op("Load a scenario: YAML text, or JSON {name}.", _obj(name={"type": "string"})),
        },
        "/_mock/scenarios": {"get": _control_op("The bundled scenario names.")},
        "/_mock/reset": {"post": _control_op("Back to the scenario's starting state.")},
        "/_mock/next": {
            "get": _control_op("The queued outcomes."),
            "post": _control_op(
                "Queue outcomes for the next matching submits.",
                _obj(outcome=outcome, count={"type": "integer"}, model_id={"type": "string"}),
                ok="201",
            ),
        },
        "/_mock/state": {
            "get": _control_op("Export accounts, ledger, tasks, queued outcomes and the clock."),
            "put": _control_op(
                "Restore an export; a malformed one changes nothing (a 400 names the field).", {"type": "object"}
            ),
        },
    }


def build_openapi(
    scenario: Scenario | None = None, server_url: str | None = None, *, envelope: str | None = None
) -> dict[str, Any]:
    """The document served at ``GET /openapi.json``; model ids, limits and the envelope follow
    ``scenario`` (``envelope``, when given, is the one in force instead of the scenario's)."""
    from . import __version__

    models = list(scenario.models) if scenario is not None else list(SEED_MODELS)
    max_prompt = scenario.limits.max_prompt_length if scenario is not None else 4000
    max_urls = scenario.limits.max_image_urls if scenario is not None else 8
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Open API for image and video generation (mockgen)",
            "version": __version__,
            "description": (
                "The public contract (tag 'contract'): every answer is an envelope {code, msg, data}; "
                "code 200 is success, code 0 a business failure (HTTP 200), HTTP 401 a bad key. "
                "The control API of the mock is tagged 'control'."
            ),
        },
        "tags": [
            {"name": "contract", "description": "The real service's routes, as the mock reproduces them."},
            {"name": "control", "description": "mockgen's /_mock/ API for tests and demos (not on the real service)."},
        ],
        "paths": {**_public_paths(), **_control_paths()},
        "components": {
            "schemas": _schemas(models, list(SEED_RATIOS), max_prompt, max_urls),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "sk- and 32 letters or digits"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "only with --admin-token"},
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    if (envelope or (scenario.envelope if scenario is not None else "documented")) == "compat":
        add_compat_fields(doc)
    return doc


def add_compat_fields(doc: dict[str, Any]) -> None:
    """Describe the compat envelope: the code-200 answers of the two contract routes also carry
    their data's fields at the top level (the create answer task_status 1 too), and a poll's msg is
    a failed task's failure message. Found from the routes' 200 schemas, whatever they are named."""
    schemas = doc["components"]["schemas"]

    def resolve(schema: Schema) -> Schema:
        return schemas[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema

    for path, method in (("/api/v1/tasks/create", "post"), ("/api/v1/tasks/{task_id}", "get")):
        answer = resolve(doc["paths"][path][method]["responses"]["200"]["content"][JSON]["schema"])
        for success in map(resolve, answer.get("oneOf", [answer])):
            props = success.get("properties", {})
            if props.get("code", {}).get("const") != 200 or "data" not in props:
                continue  # a code-0 answer keeps the documented envelope
            data = resolve(props["data"])
            top = {k: v for k, v in data["properties"].items() if k not in props}
            required = [k for k in data.get("required", []) if k in top]
            if method == "post":
                top["task_status"] = {"const": 1, "description": "1 queued (at the top level only)"}
                required.append("task_status")
            else:
                props["msg"] = {"type": "string", "minLength": 1, "description": "'ok', or a failed task's message"}
            props.update(top)
            success["required"] = [*success.get("required", []), *required]
    doc["info"]["description"] += " Envelope in force: compat (code-200 answers repeat data's fields at the top level)."


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> Schema | None:
    """The schema of an answer with ``status`` on a documented operation, or None when it is undocumented."""
    responses = doc["paths"][path][method.lower()]["responses"]
    response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    if response is None:
        return None
    return response.get("content", {}).get(JSON, {}).get("schema", {})


def check(instance: Any, schema: Schema, doc: dict[str, Any], where: str = "$") -> list[str]:
    """The ways ``instance`` breaks ``schema`` (the JSON Schema subset this document uses); [] when it fits."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return check(instance, doc["components"]["schemas"][name], doc, where)
    if "oneOf" in schema:
        results = [check(instance, s, doc, where) for s in schema["oneOf"]]
        passing = sum(1 for r in results if not r)
        if passing == 1:
            return []
        if passing > 1:
            return [f"{where}: matches more than one of the allowed shapes"]
        return min(results, key=len)  # the shape it came closest to says best what is wrong
    if "const" in schema and not _same(instance, schema["const"]):
        return [f"{where}: must be {schema['const']!r}, got {instance!r}"]
    if "enum" in schema and not any(_same(instance, v) for v in schema["enum"]):
        return [f"{where}: must be one of {schema['enum']!r}, got {instance!r}"]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(instance, k) for k in kinds):
            return [f"{where}: must be {' or '.join(kinds)}, got {_kind(instance)}"]
    errors: list[str] = []
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{where}: must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{where}: must match {schema['pattern']!r}")
    if _is(instance, "integer") and "minimum" in schema and instance < schema["minimum"]:
        errors.append(f"{where}: must be >= {schema['minimum']}")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        errors += [f"{where}: missing field {k!r}" for k in schema.get("required", []) if k not in instance]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected field {k!r}" for k in instance if k not in props]
        for k, sub in props.items():
            if k in instance:
                errors += check(instance[k], sub, doc, f"{where}.{k}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors += check(item, schema["items"], doc, f"{where}[{i}]")
    return errors


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    py = {"string": str, "object": dict, "array": list, "boolean": bool, "null": type(None)}[kind]
    return isinstance(value, py)


def _same(a: Any, b: Any) -> bool:
    if _is(a, "integer") and _is(b, "integer"):
        return a == b
    return type(a) is type(b) and a == b


def _kind(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is(value, kind):
            return kind
    return type(value).__name__
