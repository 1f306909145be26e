"""Conformance to the contract (spec.py), checked over HTTP against any server: mockgen, or the real service."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .guard import is_loopback_host
from .openapi import build_openapi, check, response_schema
from .spec import (
    CODE_AUTH,
    CODE_FAILED,
    CODE_OK,
    CREATE_PATH,
    ENVELOPE_KEYS,
    FAILED,
    FINAL_STATUSES,
    MODELS,
    QUERY_PATH,
    RESULT_FIELD,
    SEED_MODEL,
    SEED_PRICED,
    TASKS_PREFIX,
    Msg,
)

_CODE, _MSG, _DATA = ENVELOPE_KEYS
MAGIC = {"image": (b"\x89PNG\r\n\x1a\n",), "video": (b"ftyp",)}  # how a result file of each kind starts


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def short(self, limit: int = 90) -> str:
        text = self.body.decode("utf-8", "replace").replace("\n", " ")
        text = text if len(text) <= limit else text[: limit - 3] + "..."
        return f"HTTP {self.status} {text}"


@dataclass
class Result:
    name: str
    outcome: str  # "PASS", "FAIL" or "SKIP"
    detail: str = ""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    answers_checked: int = 0
    shape_failures: int = 0
    notes: list[str] = field(default_factory=list)
    unreachable: str = ""  # why nothing answered at the URL (then no check ran)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.outcome == "FAIL"]

    def table(self) -> str:
        width = max([len(r.name) for r in self.results] + [5])
        lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
        for r in self.results:
            detail = r.detail if len(r.detail) <= 110 else r.detail[:107] + "..."
            lines.append(f"{r.name:<{width}}  {r.outcome:<6}  {detail}")
        counts = {o: sum(1 for r in self.results if r.outcome == o) for o in ("PASS", "FAIL", "SKIP")}
        lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
        return "\n".join(lines + self.notes)


def is_local(base_url: str) -> bool:
    """Whether a base URL names this machine (loopback), where paid tasks cost nothing real."""
    return is_loopback_host(urllib.parse.urlsplit(base_url).hostname or "")


def credits_needed(model: str) -> str:
    known = MODELS.get(model)
    if known is None:
        return f"the price of 1 {model} task"
    if model in SEED_PRICED:
        return f"{known.cost} credits (1 {model} task, at the seed's price)"
    return f"about {known.cost} credits (1 {model} task, at mockgen's default price)"


class Contract:
    """Runs the checks; each answer is also checked against the OpenAPI document's schema for it."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        allow_charges: bool = False,
        model: str = SEED_MODEL,
        timeout: float = 120.0,
        interval: float = 1.0,
        admin_token: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.allow_charges = allow_charges or is_local(base_url)
        self.model = model
        self.timeout = timeout
        self.interval = interval
        self.admin_token = admin_token
        self.sleep = sleep
        self.doc = build_openapi()
        self.report = Report()

    # --- HTTP ----------------------------------------------------------------------------------

    def call(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        if not url.startswith(("http://", "https://")):
            url = self.base_url + url
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        if body is not None or method not in ("GET", "HEAD"):  # mockgen refuses a change sent as anything else
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers.items()), exc.read())
        except (OSError, urllib.error.URLError) as exc:
            return Answer(0, {}, f"no answer: {exc}".encode())

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def create(self, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> Answer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.call("POST", CREATE_PATH, raw, self.auth() if headers is None else headers)

    def query(self, task_id: str, headers: dict[str, str] | None = None) -> Answer:
        return self.call("GET", TASKS_PREFIX + urllib.parse.quote(task_id), None, headers or self.auth())

    # --- recording -----------------------------------------------------------------------------

    def record(self, name: str, problems: list[str], detail: str = "") -> bool:
        self.report.results.append(Result(name, "FAIL" if problems else "PASS", "; ".join(problems) or detail))
        return not problems

    def shape(self, answer: Answer, route: str, method: str) -> list[str]:
        """Problems of the answer's status and body against the OpenAPI document."""
        if answer.status == 0:
            return [answer.body.decode()]
        schema = response_schema(self.doc, route, method, answer.status)
        if schema is None:
            return [f"undocumented status: {answer.short()}"]
        body = answer.json()
        if body is None:
            return [f"not JSON: {answer.short()}"]
        self.report.answers_checked += 1
        problems = check(body, schema, self.doc, "body")
        self.report.shape_failures += bool(problems)
        return problems

    def expect(self, name: str, answer: Answer, route: str, method: str, status: int, code: int) -> bool:
        problems = []
        if answer.status != status:
            problems.append(f"expected HTTP {status}, got {answer.short()}")
        else:
            problems += self.shape(answer, route, method)
            body = answer.json()
            if not problems and body[_CODE] != code:
                problems.append(f"expected code {code}, got {answer.short()}")
        return self.record(name, problems, f"HTTP {answer.status}, code {code}: {(answer.json() or {}).get(_MSG)}")

    # --- the checks ----------------------------------------------------------------------------

    def run(self) -> Report:
        probe = self.call("GET", TASKS_PREFIX + "abcdef123456")  # needs no key, costs nothing
        if probe.status == 0:
            self.report.unreachable = probe.body.decode("utf-8", "replace").removeprefix("no answer: ")
            return self.report
        self.check_auth()
        refused = self.query("zz0000000000")
        if refused.status in (0, 401, 403):
            self.record("key: accepted by the server", [f"check --key: {refused.short()}"])
            for name in ("business failures", "lifecycle: submit, poll to 3/4, download"):
                self.report.results.append(Result(name, "SKIP", "the key was refused"))
            return self.report
        self.check_business_failures()
        if self.allow_charges:
            self.check_lifecycle()
        else:
            self.report.results.append(
                Result("lifecycle: submit, poll to 3/4, download", "SKIP", f"would spend {credits_needed(self.model)}")
            )
            self.report.notes.append(
                f"Paid checks skipped: {self.base_url} is not local, and they would spend "
                f"{credits_needed(self.model)}. Pass --allow-charges to run them."
            )
        self.record(
            "shapes: answers fit /openapi.json",
            [f"{self.report.shape_failures} answers did not fit (see above)"] if self.report.shape_failures else [],
            f"{self.report.answers_checked} answers checked against the OpenAPI schemas",
        )
        return self.report

    def check_auth(self) -> None:
        body = {"model_id": self.model, "prompt": "contract check: auth"}
        cases = [
            ("auth: create without Authorization", {}),
            ("auth: create with the Basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}),
            ("auth: create with a malformed key", {"Authorization": "Bearer sk-short"}),
        ]
        for name, headers in cases:
            self.expect(name, self.create(body, headers), CREATE_PATH, "post", 401, CODE_AUTH)
        answer = self.call("GET", TASKS_PREFIX + "abcdef123456")
        self.expect("auth: query without Authorization", answer, QUERY_PATH, "get", 401, CODE_AUTH)

    def check_business_failures(self) -> None:
        cases: list[tuple[str, dict[str, Any] | bytes]] = [
            ("business: unknown model_id", {"model_id": "no-such-model", "prompt": "contract check"}),
            ("business: missing prompt", {"model_id": self.model}),
            ("business: empty prompt", {"model_id": self.model, "prompt": ""}),
            ("business: unsupported aspect_ratio", {"model_id": self.model, "prompt": "x", "aspect_ratio": "7:5"}),
            ("business: image_urls not a list", {"model_id": self.model, "prompt": "x", "image_urls": "nope"}),
            ("business: malformed JSON", b'{"model_id": '),
        ]
        for name, body in cases:
            self.expect(name, self.create(body), CREATE_PATH, "post", 200, CODE_FAILED)
        self.expect("business: unknown task_id", self.query("zz0000000000"), QUERY_PATH, "get", 200, CODE_FAILED)

    def check_lifecycle(self) -> None:
        answer = self.create({"model_id": self.model, "prompt": "contract check: a lighthouse at dawn"})
        envelope = self.envelope_of(answer.json())
        if envelope == "compat":  # check its answers against the document of a compat mockgen
            self.doc = build_openapi(envelope="compat")
        if not self.expect("create: submit a task", answer, CREATE_PATH, "post", 200, CODE_OK):
            return
        created = answer.json()[_DATA]
        task_id = created["task_id"]
        statuses, last = self.poll(task_id)
        if last is None:
            return
        problems = []
        if any(b < a for a, b in zip(statuses, statuses[1:], strict=False)):
            problems.append(f"the status went backwards: {statuses}")
        if statuses[-1] not in FINAL_STATUSES:
            problems.append(f"no final status within {self.timeout} s: {statuses}")
        data = last[_DATA]
        for key in ("task_id", "credits"):
            if data.get(key) != created.get(key):
                problems.append(f"{key} is {data.get(key)!r} on query but {created.get(key)!r} on create")
        if data.get("model_id") != self.model:
            problems.append(f"model_id is {data.get('model_id')!r}, not {self.model!r}")
        kind = MODELS[self.model].task_type if self.model in MODELS else None
        if kind and data.get("task_type") != kind:
            problems.append(f"task_type is {data.get('task_type')!r}, not {kind!r}")
        seq = " -> ".join(str(s) for s in _runs(statuses))
        self.record("query: status sequence to 3 or 4", problems, f"task {task_id}: {seq}")
        self.check_result(data)
        self.check_envelope(envelope, last)

    @staticmethod
    def envelope_of(body: Any) -> str | None:
        """Which shape a code-200 answer has: "documented" (the task's fields under data only),
        "compat" (every one of them also at the top level, equal), "mixed", or None (no such answer)."""
        if not isinstance(body, dict) or body.get(_CODE) != CODE_OK or not isinstance(body.get(_DATA), dict):
            return None
        data = body[_DATA]
        copied = [k for k in data if k in body and k not in ENVELOPE_KEYS]
        if not copied:
            return "documented"
        return "compat" if all(k in body and body[k] == v for k, v in data.items()) else "mixed"

    def check_envelope(self, created: str | None, last: dict[str, Any]) -> None:
        """The shape row: the create answer and the last poll must have the same one of the two shapes."""
        polled = self.envelope_of(last)
        problems = []
        if created != polled or created not in ("documented", "compat"):
            problems.append(
                f"the create answer is {created}, the last poll {polled}: neither the documented shape "
                "(task fields under data only) nor compat (also at the top level) throughout"
            )
        if polled == "compat" and last[_DATA].get("task_status") == FAILED and last.get(_MSG) == Msg.OK:
            problems.append("compat, but a failed task's msg is 'ok', not its failure message")
        detail = {
            "documented": "documented (task fields under data only)",
            "compat": "compat (also at top level)",
        }.get(str(created), "")
        self.record("shape: envelope", problems, detail)

    def poll(self, task_id: str) -> tuple[list[int], dict[str, Any] | None]:
        """Poll until 3 or 4; on a mockgen with a manual clock, move the clock instead of waiting."""
        manual = self.manual_clock()
        statuses: list[int] = []
        waited = 0.0
        while True:
            answer = self.query(task_id)
            problems = [f"expected HTTP 200, got {answer.short()}"] if answer.status != 200 else []
            problems = problems or self.shape(answer, QUERY_PATH, "get")
            body = answer.json()
            if not problems and body[_CODE] != CODE_OK:
                problems.append(f"expected code 200, got {answer.short()}")
            if problems:
                self.record("query: poll the task", problems)
                return statuses, None
            statuses.append(body[_DATA]["task_status"])
            if statuses[-1] in FINAL_STATUSES or waited >= self.timeout:
                self.record("query: every poll fits the contract", [], f"{len(statuses)} polls")
                return statuses, body
            if manual is not None:
                self.call("POST", "/_mock/clock/advance", json.dumps({"seconds": self.interval}).encode(), manual)
            else:
                self.sleep(self.interval)
            waited += self.interval

    def manual_clock(self) -> dict[str, str] | None:
        """The control headers when the server is a mockgen on a manual clock, else None."""
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        answer = self.call("GET", "/_mock/health", None, headers)
        health = answer.json() if answer.status == 200 else None
        if isinstance(health, dict) and health.get("clock") == "manual":
            self.report.notes.append("The server is a mockgen on a manual clock: the checks moved its clock.")
            return headers
        return None

    def check_result(self, data: dict[str, Any]) -> None:
        kind = data.get("task_type")
        field_name = RESULT_FIELD.get(str(kind), RESULT_FIELD["image"])
        others = [f for f in RESULT_FIELD.values() if f != field_name]
        url = data.get(field_name)
        if data.get("task_status") == FAILED:
            problems = [f"{f} is set on a failed task" for f in RESULT_FIELD.values() if data.get(f) is not None]
            self.record("query: a failed task has no result URL", problems, "task failed; no URL to download")
            return
        problems = [] if isinstance(url, str) and url else [f"{field_name} is {url!r} at status 3"]
        problems += [f"{other} is set on a {kind} task" for other in others if data.get(other) is not None]
        self.record(f"query: result on {field_name} at status 3", problems, str(url))
        if problems:
            return
        answer = self.call("GET", str(url))
        problems = [] if answer.status == 200 else [f"expected HTTP 200, got HTTP {answer.status}"]
        content_type = answer.headers.get("Content-Type", answer.headers.get("content-type", ""))
        if not problems and not content_type.startswith(f"{kind}/"):
            problems.append(f"Content-Type is {content_type!r}, not {kind}/*")
        if not problems and not any(m in answer.body[:16] for m in MAGIC.get(str(kind), (b"",))):
            problems.append(f"the body does not look like a {kind} file")
        self.record("result: URL downloadable", problems, f"{content_type}, {len(answer.body)} bytes")


def _runs(statuses: list[int]) -> list[str]:
    """[1, 1, 2, 2, 2, 3] -> ['1 x2', '2 x3', '3']."""
    runs: list[list[int]] = []
    for s in statuses:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    return [f"{s} x{n}" if n > 1 else str(s) for s, n in runs]


def run_contract(base_url: str, key: str, **options: Any) -> Report:
    """Every check against ``base_url`` with ``key``; see ``Contract`` for the options."""
    return Contract(base_url, key, **options).run()


__all__ = ["Contract", "Report", "Result", "credits_needed", "is_local", "is_loopback_host", "run_contract"]
