"""The OpenAPI 3.1 description of the public contract and the control API, plus a small checker for it."""

from __future__ import annotations

import re
from typing import Any

from .scenario import MAX_INT, Scenario, bundled_names
from .spec import (
    CODE_AUTH,
    CODE_FAILED,
    CODE_OK,
    CREATE_FIELDS,
    CREATE_KEYS,
    CREATE_PATH,
    CREATE_REQUIRED,
    ENVELOPE_KEYS,
    FAILED,
    FILES_PATH,
    KEY_LENGTH,
    KEY_PATTERN,
    KINDS,
    MODELS,
    POLL_KEYS,
    QUERY_PATH,
    QUEUED,
    RATIOS,
    RESULT_FIELD,
    STATUSES,
    SUCCEEDED,
    Msg,
)
from .state import TASK_CHECKS, TASK_REQUIRED

Schema = dict[str, Any]
_STATUS_TEXT = ", ".join(f"{code} {name}" for code, name in STATUSES.items())  # "1 queued, 2 running, ..."
JSON = "application/json"
ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}  # a task id or a key: one path segment


# Every status an injected fault can answer with (scenario faults and X-Mockgen-Fault alike), on
# every public route and /files/: what a client must be ready for. (The same set as FAULT_STATUSES.)
FAULTS = {
    400: "Bad request (an injected fault)",
    403: "Forbidden (an injected fault, or a Host this server does not answer: README, Who can drive the control API)",
    408: "Request timeout (an injected fault)",
    409: "Conflict (an injected fault)",
    429: "Rate limited (an injected fault): retry after Retry-After seconds",
    500: "Internal server error (an injected fault)",
    502: "Bad gateway (an injected fault, or an answer lost after the task was created and charged)",
    503: "Unavailable (an injected fault): retry after Retry-After seconds",
    504: "Gateway timeout (an injected fault, or an answer lost after the task was created and charged)",
}
KEY = {"type": "string", "pattern": f"^{KEY_PATTERN}$", "minLength": KEY_LENGTH, "maxLength": KEY_LENGTH}
# What backend.URL_RE accepts: a scheme, then a host that does not start with '/', '$', '.', '?' or '#'.
IMAGE_URL = {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/$.?#]\\S*$", "maxLength": 2048}
TEN_YEARS = 10 * 365 * 86_400
ENVELOPE = {"type": "string", "enum": ["documented", "compat"], "description": "the answers' shape in force"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _null(schema: Schema) -> Schema:
    """``schema`` or null (the control API takes a null field as an omitted one)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _envelope(code: Schema, data: Schema, msg: Schema | None = None) -> Schema:
    code_key, msg_key, data_key = ENVELOPE_KEYS
    return {
        "type": "object",
        "required": list(ENVELOPE_KEYS),
        "additionalProperties": False,
        "properties": {code_key: code, msg_key: msg or {"type": "string", "minLength": 1}, data_key: data},
    }


def _obj(required: tuple[str, ...] = (), /, **props: Schema) -> Schema:
    """An object with these properties (others are allowed: answers may grow), ``required`` of them."""
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def _closed(required: tuple[str, ...], /, **props: Schema) -> Schema:
    """An object with exactly these properties (what PUT /_mock/state checks field by field)."""
    return {**_obj(required, **props), "additionalProperties": False}


def _contract_schemas(
    models: list[str], ratios: list[str], max_prompt: int, max_urls: int, extras: set[str]
) -> dict[str, Schema]:
    nullable_url = {"type": ["string", "null"]}
    poll_schemas: dict[str, Schema] = {
        "task_id": {"type": "string", "minLength": 1},
        "task_status": {"enum": list(STATUSES), "description": _STATUS_TEXT},
        "task_type": {"enum": list(KINDS)},
        "model_id": {"type": "string", "minLength": 1},
        **dict.fromkeys(RESULT_FIELD.values(), nullable_url),
        "audio_url": nullable_url,
        "credits": {"type": "integer", "minimum": 0},
        "created_at": {"type": "integer", "description": "Unix seconds"},
    }
    task_props = {name: poll_schemas[name] for name in POLL_KEYS}  # spec's keys, in its order
    create_schemas: dict[str, Schema] = {
        "task_id": {"type": "string", "minLength": 1},
        "request_id": {"type": "string", "minLength": 1},
        "credits": {"type": "integer", "minimum": 0},
    }
    request_schemas: dict[str, Schema] = {
        "model_id": {"type": "string", "enum": models},
        # Not only whitespace: a blank prompt is refused like a missing one.
        "prompt": {"type": "string", "minLength": 1, "maxLength": max_prompt, "pattern": "\\S"},
        "image_urls": _null({"type": "array", "maxItems": max_urls, "items": IMAGE_URL}),
        "aspect_ratio": _null({"type": "string", "enum": ratios}),
    }
    # A rule's `extra` fields are added to a task's data (one may even replace a contract field).
    task_props.update({name: {"description": "an extra field of a scenario rule"} for name in sorted(extras)})
    return {
        "CreateRequest": {
            "type": "object",
            "required": list(CREATE_REQUIRED),
            "properties": {name: request_schemas[name] for name in CREATE_FIELDS},
        },
        "CreateData": {
            "type": "object",
            "required": list(CREATE_KEYS),
            "additionalProperties": False,
            "properties": {name: create_schemas[name] for name in CREATE_KEYS},
        },
        "CreateSuccess": _envelope({"const": CODE_OK}, _ref("CreateData"), {"const": Msg.SUBMITTED}),
        "TaskData": {
            "type": "object",
            "required": list(POLL_KEYS),
            "additionalProperties": False,
            "properties": task_props,
        },
        "QuerySuccess": _envelope({"const": CODE_OK}, _ref("TaskData"), {"const": Msg.OK}),
        "BusinessError": _envelope({"const": CODE_FAILED}, {"type": "null"}),
        "AuthError": _envelope({"const": CODE_AUTH}, {"type": "null"}),
        "HttpError": _envelope({"type": "integer"}, {"type": "null"}),
        "CreateResponse": {"oneOf": [_ref("CreateSuccess"), _ref("BusinessError")]},
        "QueryResponse": {"oneOf": [_ref("QuerySuccess"), _ref("BusinessError")]},
    }


def _control_schemas(models: list[str], ratios: list[str], scenarios: list[str]) -> dict[str, Schema]:
    s = {"type": "string"}
    # Numbers the control API takes and gives stay within what JavaScript reads exactly (README, Limits).
    n = {"type": "number", "minimum": -MAX_INT, "maximum": MAX_INT}
    i = {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT}
    count = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
    outcome = {"type": "string", "enum": ["success", "failed"]}
    ledger_kind = {"type": "string", "enum": ["charge", "refund", "topup"]}
    return {
        "ControlError": _obj(
            ("error",),
            error=s,
            issues={"type": "array", "items": _ref("ScenarioIssue"), "description": "PUT /_mock/scenario's 422"},
        ),
        "ScenarioIssue": _obj(("file", "line", "path", "message"), file=s, line=_null(i), path=s, message=s),
        "Health": _obj(
            ("status", "scenario", "clock", "now", "store", "up"),
            status={"type": "string", "enum": ["ok", "store down"]},
            scenario=s,
            clock={"type": "string", "enum": ["real", "manual"]},
            envelope=ENVELOPE,
            now=n,
            store={"type": "string", "enum": ["memory", "redis"]},
            up={"type": "boolean"},
            error=s,
        ),
        "LedgerEntry": _obj(("kind", "amount", "at"), kind=ledger_kind, amount=i, at=n, task_id=s),
        "Account": _obj(("key", "name", "credits"), key=KEY, name=_null(s), credits=count),
        "AccountWithLedger": _obj(
            ("key", "name", "credits", "ledger"),
            key=KEY,
            name=_null(s),
            credits=count,
            ledger={"type": "array", "items": _ref("LedgerEntry")},
        ),
        "TaskRequest": _obj(
            ("model_id", "prompt", "aspect_ratio", "image_urls"),
            model_id=s,
            prompt=s,
            aspect_ratio=s,
            image_urls={"type": "array", "items": s},
        ),
        "TaskTimeline": _obj(
            ("created_at", "running_at", "finish_at", "settled_at"),
            created_at=n,
            running_at=_null(n),
            finish_at=_null(n),
            settled_at=_null(n),
        ),
        "TaskView": _obj(
            ("task_id", "key", "account", "request_id", "status", "request", "task_type", "credits"),
            task_id=s,
            key=s,
            account=_null(s),
            request_id=s,
            status={"type": "integer", "enum": list(STATUSES)},
            request=_ref("TaskRequest"),
            task_type={"type": "string", "enum": list(KINDS)},
            credits=count,
            planned_outcome=outcome,
            failure_message=_null(s),
            message=_null(s),
            progress={"type": "string", "enum": ["time", "polls", "manual"]},
            polls=count,
            rule=_null(s),
            timeline=_ref("TaskTimeline"),
            result_url=_null(s),
            lost_answer={**_null(s), "description": "the fault that lost the create's answer"},
        ),
        "JournalEntry": _obj(
            ("at", "method", "path", "query", "headers", "key", "body", "status", "latency_ms"),
            at=n,
            method=s,
            path=s,
            query=s,
            headers={"type": "object", "additionalProperties": s},
            key=_null(s),
            body=s,
            status=i,
            latency_ms=n,
            task_id=_null(s),
            fault=_null(s),
            error={**_null(s), "description": "why a near miss was refused"},
        ),
        "WaitResult": _obj(
            ("arrived", "count", "requests"),
            arrived={"type": "boolean"},
            count=count,
            requests={"type": "array", "items": _ref("JournalEntry")},
        ),
        "ModelInfo": _obj(("task_type", "cost"), task_type={"type": "string", "enum": list(KINDS)}, cost=i),
        "ScenarioInfo": _obj(
            ("name", "clock", "auth_mode", "models", "rules", "faults"),
            name=s,
            description=_null(s),
            path=_null(s),
            seed=_null(i),
            clock={"type": "string", "enum": ["real", "manual"]},
            envelope=ENVELOPE,
            auth_mode={"type": "string", "enum": ["open", "strict"]},
            models={"type": "object", "additionalProperties": _ref("ModelInfo")},
            rules={"type": "array", "items": s},
            faults={"type": "array", "items": s},
            source=_null(s),
        ),
        "ScenarioLoaded": _obj(("name", "loaded"), name=s, loaded={"type": "boolean"}),
        "NextOutcome": _obj(
            ("outcome", "count", "model_id", "key", "msg"),
            outcome=outcome,
            count={"type": "integer", "minimum": 1},
            model_id=_null(s),
            key=_null(s),
            msg=_null(s),
        ),
        "NextQueue": _obj(
            ("queued",),
            queued={"type": "array", "items": _ref("NextOutcome")},
            length={**count, "description": "POST: the entries in the queue now (it answers only what it queued)"},
        ),
        "ClockNow": _obj(("now",), now=n),
        "ResetDone": _obj(("reset", "scenario", "now"), reset={"type": "boolean"}, scenario=s, now=n),
        "StateRestored": _obj(("restored", "now"), restored={"type": "boolean"}, now=n),
        # --- request bodies: exactly what the endpoints require (a null field counts as omitted) ---
        "NewAccount": _obj(key=_null(KEY), credits=_null(count), name=_null(s)),
        "CreditsChange": _obj(("delta",), delta={**i, "description": "negative to take away (never below 0)"}),
        "Resolve": _obj(("outcome",), outcome=outcome, msg=_null(s)),
        "ClockAdvance": _obj(("seconds",), seconds={"type": "number", "minimum": 0, "maximum": TEN_YEARS}),
        "ScenarioName": _obj(("name",), name={"type": "string", "enum": scenarios}),
        "QueueNext": _obj(
            ("outcome",),
            outcome=outcome,
            count=_null({"type": "integer", "minimum": 1}),
            model_id=_null({"type": "string", "enum": models}),
            key=_null(s),
            msg=_null(s),
        ),
        # --- the export of GET /_mock/state, which PUT /_mock/state checks field by field ---
        "State": _closed(
            ("version", "clock", "accounts", "tasks"),
            version={"const": 1},
            scenario=s,
            clock=_ref("StateClock"),
            accounts={"type": "array", "items": _ref("StateAccount")},
            tasks={"type": "array", "items": _ref("StateTask")},
            next={"type": "array", "items": _ref("StateNext")},
        ),
        "StateClock": _closed(("now",), kind={"enum": ["real", "manual"]}, now=n),
        "StateAccount": _closed(
            ("key", "credits", "ledger"),
            key=KEY,
            name=_null(s),
            credits=count,
            ledger={"type": "array", "items": _ref("StateLedgerEntry")},
        ),
        "StateLedgerEntry": _closed(("kind", "amount", "at"), kind=ledger_kind, amount=i, at=n, task_id=_null(s)),
        # Its fields are PUT /_mock/state's own list (state.TASK_CHECKS), so a field added there is here too.
        "StateTask": _closed(
            tuple(sorted(TASK_REQUIRED)),
            **{name: _state_task_field(name, ratios) for name in TASK_CHECKS},
        ),
        "StateNext": _closed(
            ("outcome", "count"),
            outcome={"enum": ["success", "failed"]},
            count={"type": "integer", "minimum": 1},
            model_id=_null(s),
            key=_null(s),
            message=_null(s),
        ),
    }


def _state_task_field(name: str, ratios: list[str]) -> Schema:
    """The JSON Schema of one field of a task in a state, as ``state.TASK_CHECKS`` checks it."""
    s, n = {"type": "string"}, {"type": "number"}
    count = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
    known: dict[str, Schema] = {
        "task_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "maxLength": 64},
        "key": KEY,
        "task_type": {"enum": list(KINDS)},
        "aspect_ratio": {"enum": ratios},
        "image_urls": {"type": "array", "items": s},
        "credits": count,
        "polls_queued": count,
        "polls_running": count,
        "polls": count,
        "outcome": {"enum": ["success", "failed"]},
        "progress": {"enum": ["time", "polls", "manual"]},
        "final_status": {"enum": [0, SUCCEEDED, FAILED]},
        "results": {"enum": ["local", "cdn"]},
        "extra": _null({"type": "object"}),
        **dict.fromkeys(("model_id", "prompt", "request_id", "failure_message"), s),
        **dict.fromkeys(("created_at", "running_at"), n),
        **dict.fromkeys(("finish_at", "settled_at"), _null(n)),
        **dict.fromkeys(("message", "rule", "lost_answer"), _null(s)),
    }
    return known.get(name, {})


def _content(schema: Schema, media_type: str = JSON) -> dict[str, Any]:
    return {"content": {media_type: {"schema": schema}}}


def _fault_responses(custom_bodies: bool) -> dict[str, Any]:
    """The injected faults' answers; a scenario fault with its own ``body`` may answer anything."""
    retry = {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "description": "seconds to wait", "required": True}
    marker = {"schema": {"type": "string"}, "description": "the name of the injected fault"}
    content: dict[str, Any] = _content(_ref("HttpError"))
    if custom_bodies:
        content = {"content": {JSON: {"schema": {}}, "text/plain": {"schema": {"type": "string"}}}}
    responses = {}
    for status, text in FAULTS.items():
        headers: dict[str, Any] = {"X-Mockgen-Fault": marker}
        if status in (429, 503):
            headers["Retry-After"] = retry
        responses[str(status)] = {"description": text, "headers": headers, **content}
    return responses


def _public_paths(custom_bodies: bool) -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    auth = {"description": "missing header, another scheme, malformed or unknown key", **_content(_ref("AuthError"))}
    faults = _fault_responses(custom_bodies)
    task_id = {"operationId": "getTask", "parameters": {"task_id": "$response.body#/data/task_id"}}
    return {
        CREATE_PATH: {
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
                        "links": {
                            "GetTask": {**task_id, "description": "poll the task just created"},
                            "GetTaskRecord": {
                                **task_id,
                                "operationId": "getTaskRecord",
                                "description": "the mock's record of it",
                            },
                            "ResolveTask": {
                                **task_id,
                                "operationId": "resolveTask",
                                "description": "finish it now",
                            },
                        },
                    },
                    "401": auth,
                    "413": {"description": "body over the size limit", **_content(_ref("HttpError"))},
                    **faults,
                },
            }
        },
        QUERY_PATH: {
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
                    "401": auth,
                    **faults,
                },
            }
        },
        FILES_PATH: {
            "get": {
                "tags": ["files"],
                "operationId": "getResultFile",
                "summary": "A succeeded task's result file (the image_url or video_url of a local result).",
                "security": [{}],  # no key: the links go into <img> tags and downloads
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+\\.(png|mp4)$"},
                        "description": "the task id and png (an image task) or mp4 (a video task)",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                            "video/mp4": {"schema": {"type": "string", "contentMediaType": "video/mp4"}},
                        },
                    },
                    "404": {
                        "description": "no such task, the other extension, or the task has not succeeded",
                        **_content(_ref("HttpError")),
                    },
                    **faults,
                },
            }
        },
    }


CONTROL_ERRORS = {
    "400": "the request is malformed (the message says what to fix)",
    "401": "--admin-token is set and the request lacks 'Authorization: Bearer <token>'",
    "403": "a Host this server does not answer, or (a change) a foreign Origin (README, Who can drive the control API)",
}
# A change must be sent as JSON, with or without a body: what a web page of another origin cannot send.
NOT_JSON = "not a JSON content type: send 'Content-Type: application/json' (PUT /_mock/scenario: or application/yaml)"


def _health_op() -> Schema:
    op = _control_op("getHealth", "Status, scenario, clock kind, the time now and the store's.", _ref("Health"))
    op["responses"]["503"] = {"description": "the shared store does not answer", **_content(_ref("Health"))}
    return op


def _control_op(
    op_id: str,
    summary: str,
    answer: Schema | None,
    *,
    body: Schema | None = None,
    ok: str = "200",
    params: tuple[str, ...] = (),
    errors: tuple[str, ...] = (),
    changes: bool = False,
) -> Schema:
    """One /_mock/ operation: its answer, its request body (any JSON when it ``changes`` something without one)
    and the errors it can send."""
    refused = _content(_ref("ControlError"))
    statuses = {
        **CONTROL_ERRORS,
        "404": "no such account or task",
        "409": "a conflict (the message says which)",
        "413": "body over the size limit",
        "422": "the scenario was refused (each issue listed)",
        "503": "the shared store is unavailable (README, Sharing one world)",
    }
    op: Schema = {
        "tags": ["control"],
        "operationId": op_id,
        "summary": summary,
        "security": [{}, {"adminToken": []}],
        "responses": {ok: {"description": "done", **({} if answer is None else _content(answer))}},
    }
    for status in ("400", "401", "403", *errors, *(("413",) if body is not None else ()), "503"):
        op["responses"][status] = {"description": statuses[status], **refused}
    if changes or body is not None:
        # Required: the server refuses a change without a JSON content type (a bodiless one: any JSON, ignored).
        op["requestBody"] = {"required": True, **_content({} if body is None else body)}
        op["responses"]["415"] = {"description": NOT_JSON, **refused}
    if params:
        op["parameters"] = [_param(p) for p in params]
    return op


QUERY_PARAMS: dict[str, Schema] = {
    "path": {"type": "string", "description": "only requests to this path ('/api/v1/*' for a prefix)"},
    "method": {"type": "string", "description": "only requests with this method"},
    "key": {"type": "string", "description": "only this key's requests or tasks"},
    "errors": {"type": "string", "description": "'1', 'true' or 'yes': only the near misses, each with its reason"},
    "limit": {
        "type": "integer",
        "minimum": 0,
        "maximum": 10**15 - 1,
        "description": "only the newest N (X-Total-Count: all)",
    },
    "count": {"type": "integer", "minimum": 1, "description": "how many to wait for (1)"},
    "timeout": {"type": "number", "minimum": 0, "maximum": 300, "description": "seconds (10)"},
}


def _param(name: str) -> Schema:
    """'key' is a path parameter, '?key' an optional query parameter."""
    query = name.startswith("?")
    name = name.lstrip("?")
    schema = QUERY_PARAMS[name] if query else (KEY if name == "key" else ID)
    return {"name": name, "in": "query" if query else "path", "required": not query, "schema": schema}


def _control_paths() -> dict[str, Any]:
    filters = ("?path", "?method", "?key", "?errors")
    wait = _control_op(
        "waitForRequests",
        "Long-poll until 'count' matching requests arrived (408 at the timeout).",
        _ref("WaitResult"),
        params=(*filters, "?count", "?timeout"),
    )
    wait["responses"]["408"] = {
        "description": "the timeout passed first; what did arrive",
        **_content(_ref("WaitResult")),
    }
    wait["responses"]["503"] = {
        "description": "64 long-polls are waiting already (retry after Retry-After seconds), or the server is stopping",
        "headers": {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}},
        **_content(_ref("ControlError")),
    }

    def array(name: str) -> Schema:
        return {"type": "array", "items": _ref(name)}

    return {
        "/_mock/health": {
            "get": _health_op(),
        },
        "/_mock/accounts": {
            "get": _control_op("listAccounts", "Every account and its balance.", array("Account"), params=("?limit",)),
            "post": _control_op(
                "createAccount",
                "Create an account (a new key unless one is given).",
                _ref("Account"),
                body=_ref("NewAccount"),
                ok="201",
                errors=("409",),
            ),
        },
        "/_mock/accounts/{key}": {
            "get": _control_op(
                "getAccount",
                "An account with its ledger.",
                _ref("AccountWithLedger"),
                params=("key", "?limit"),
                errors=("404",),
            )  # fmt: skip
        },
        "/_mock/accounts/{key}/credits": {
            "post": _control_op(
                "changeCredits",
                "Top up (or down; 409 past the balance bound).",
                _ref("AccountWithLedger"),
                body=_ref("CreditsChange"),
                params=("key",),
                errors=("404", "409"),
            )
        },
        "/_mock/tasks": {
            "get": _control_op(
                "listTasks",
                "Every task with its request, timeline and outcome.",
                array("TaskView"),
                params=("?key", "?limit"),
            )  # fmt: skip
        },
        "/_mock/tasks/{task_id}": {
            "get": _control_op(
                "getTaskRecord",
                "One task, as the mock keeps it.",
                _ref("TaskView"),
                params=("task_id",),
                errors=("404",),
            )  # fmt: skip
        },
        "/_mock/tasks/{task_id}/resolve": {
            "post": _control_op(
                "resolveTask",
                "Finish a task now (a failure refunds it).",
                _ref("TaskView"),
                body=_ref("Resolve"),
                params=("task_id",),
                errors=("404", "409"),
            )
        },
        "/_mock/clock/advance": {
            "post": _control_op(
                "advanceClock",
                "Move the manual clock (409 on the real clock, or past year 9999).",
                _ref("ClockNow"),
                body=_ref("ClockAdvance"),
                errors=("409",),
            )
        },
        "/_mock/requests": {
            "get": _control_op(
                "listRequests",
                "The request journal, newest last (near misses carry an 'error').",
                array("JournalEntry"),
                params=filters,
            ),
            "delete": _control_op("clearRequests", "Clear the journal.", None, ok="204", changes=True),
        },
        "/_mock/requests/wait": {"get": wait},
        "/_mock/scenario": {
            "get": _control_op("getScenario", "The scenario in force.", _ref("ScenarioInfo")),
            "put": _control_op(
                "loadScenario",
                "Load a bundled scenario by name (or its YAML as application/yaml), from its starting state.",
                _ref("ScenarioLoaded"),
                body=_ref("ScenarioName"),
                errors=("422",),
            ),
        },
        "/_mock/scenarios": {
            "get": _control_op(
                "listScenarios", "The bundled scenario names.", {"type": "array", "items": {"type": "string"}}
            )
        },
        "/_mock/reset": {
            "post": _control_op("reset", "Back to the scenario's starting state.", _ref("ResetDone"), changes=True)
        },
        "/_mock/next": {
            "get": _control_op("listNext", "The queued outcomes, oldest first.", _ref("NextQueue"), params=("?limit",)),
            "post": _control_op(
                "queueNext",
                "Queue outcomes for the next matching submits (409 past 1,000 entries): what it queued, the length.",
                _ref("NextQueue"),
                body=_ref("QueueNext"),
                ok="201",
                errors=("409",),
            ),
            "delete": _control_op("clearNext", "Empty the queue.", None, ok="204", changes=True),
        },
        "/_mock/state": {
            "get": _control_op(
                "getState", "Export accounts, ledger, tasks, queued outcomes and the clock.", _ref("State")
            ),
            "put": _control_op(
                "putState",
                "Restore an export; a malformed one changes nothing (a 400 names the field).",
                _ref("StateRestored"),
                body=_ref("State"),
            ),
        },
    }


def build_openapi(
    scenario: Scenario | None = None, server_url: str | None = None, *, envelope: str | None = None
) -> dict[str, Any]:
    """The document served at ``GET /openapi.json``; model ids, limits and the envelope follow
    ``scenario`` (``envelope``, when given, is the one in force instead of the scenario's)."""
    from . import __version__

    models = list(scenario.models if scenario is not None else MODELS)
    max_prompt = scenario.limits.max_prompt_length if scenario is not None else 4000
    max_urls = scenario.limits.max_image_urls if scenario is not None else 8
    rules = scenario.rules if scenario is not None else ()
    extras = {name for rule in rules if rule.behaviour.extra for name in rule.behaviour.extra}
    custom_bodies = scenario is not None and any(f.body is not None for f in scenario.faults)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Open API for image and video generation (mockgen)",
            "version": __version__,
            "license": {"name": "MIT", "identifier": "MIT"},
            "description": (
                "The public contract (tag 'contract'): every answer is an envelope {code, msg, data}; "
                "code 200 is success, code 0 a business failure (HTTP 200), HTTP 401 a bad key. "
                "The control API of the mock is tagged 'control'."
            ),
        },
        "tags": [
            {"name": "contract", "description": "The real service's routes, as the mock reproduces them."},
            {"name": "files", "description": "The result files mockgen serves (the real service links to its CDN)."},
            {"name": "control", "description": "mockgen's /_mock/ API for tests and demos (not on the real service)."},
        ],
        "paths": {**_public_paths(custom_bodies), **_control_paths()},
        "components": {
            "schemas": {
                **_contract_schemas(models, list(RATIOS), max_prompt, max_urls, extras),
                **_control_schemas(models, list(RATIOS), bundled_names()),
            },
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

    code_key, msg_key, data_key = ENVELOPE_KEYS
    for path, method in ((CREATE_PATH, "post"), (QUERY_PATH, "get")):
        answer = resolve(doc["paths"][path][method]["responses"]["200"]["content"][JSON]["schema"])
        for success in map(resolve, answer.get("oneOf", [answer])):
            props = success.get("properties", {})
            if props.get(code_key, {}).get("const") != CODE_OK or data_key not in props:
                continue  # a code-0 answer keeps the documented envelope
            data = resolve(props[data_key])
            top = {k: v for k, v in data["properties"].items() if k not in props}
            required = [k for k in data.get("required", []) if k in top]
            if method == "post":
                top["task_status"] = {"const": QUEUED, "description": f"{QUEUED} queued (at the top level only)"}
                required.append("task_status")
            else:
                props[msg_key] = {"type": "string", "minLength": 1, "description": "'ok', or a failed task's message"}
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
