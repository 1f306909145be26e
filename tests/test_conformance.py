"""`mockgen contract`: all-pass against mockgen, a clear failing table against a server that drifted."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import mockgen
from mockgen import conformance
from mockgen.cli import main
from mockgen.conformance import Answer, Contract, is_local
from mockgen.testing import MockServer

from .test_openapi import jsonschema_errors


def contract(base_url: str, key: str, *extra: str) -> Any:
    return CliRunner().invoke(main, ["contract", "--base-url", base_url, "--key", key, *extra])


def test_all_pass_against_mockgen(mock: MockServer) -> None:
    result = contract(mock.base_url, mock.api_key)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"mockgen contract: {mock.base_url} with key sk-ci00…0001"
    assert lines[1].split() == ["check", "result", "detail"]
    rows = [line for line in lines[3:] if "  PASS  " in line or "  FAIL  " in line or "  SKIP  " in line]
    assert len(rows) == 18 and all("  PASS  " in row for row in rows)
    assert "18 passed, 0 failed, 0 skipped" in result.output
    assert "1 -> 2 x4 -> 3" in result.output  # queued 1 s, running 4 s, polled each emulated second
    assert "shape: envelope" in result.output and "documented (task fields under data only)" in result.output
    assert mock.balance() == 1000 - 15  # one paid task, nothing else charged


def test_every_answer_of_the_contract_checks_fits_the_openapi_document_by_jsonschema(mock: MockServer) -> None:
    seen: list[int] = []

    class Checked(Contract):
        def shape(self, answer: Answer, route: str, method: str) -> list[str]:
            schema = conformance.response_schema(self.doc, route, method, answer.status)
            assert schema is not None and jsonschema_errors(answer.json(), schema) == [], answer.short()
            seen.append(answer.status)
            return super().shape(answer, route, method)

    report = Checked(mock.base_url, mock.api_key).run()
    assert report.failed == [] and report.answers_checked == len(seen) >= 15


def test_the_failure_path_is_checked_too(mock: MockServer) -> None:
    mock.queue_next("failed")
    result = contract(mock.base_url, mock.api_key)
    assert result.exit_code == 0, result.output
    assert "query: a failed task has no result URL" in result.output and "-> 4" in result.output
    assert mock.balance() == 1000  # refunded


def test_a_wrong_key_fails_with_a_table_not_a_traceback(mock: MockServer) -> None:
    result = contract(mock.base_url, "sk-" + "z" * 32)  # strict scenario: an unknown key
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "key: accepted by the server" in result.output and "check --key: HTTP 401" in result.output
    assert "4 passed, 1 failed, 2 skipped" in result.output
    assert "Error: contract drift: 1 check(s) failed" in result.output


def test_a_non_local_server_gets_no_paid_task_without_allow_charges(
    mock: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conformance, "is_local", lambda url: False)  # pretend; no network beyond loopback
    result = contract(mock.base_url, mock.api_key)
    assert result.exit_code == 0, result.output
    assert "SKIP" in result.output
    assert "would spend 15 credits (1 gpt-image-2 task, at the seed's price)" in result.output
    assert "Pass --allow-charges to run them." in result.output
    assert mock.tasks() == [] and mock.balance() == 1000
    charged = contract(mock.base_url, mock.api_key, "--allow-charges")
    assert charged.exit_code == 0 and "18 passed" in charged.output and mock.balance() == 985


def test_is_local() -> None:
    assert is_local("http://127.0.0.1:8000") and is_local("http://localhost:1") and is_local("http://[::1]:8000")
    assert not is_local("https://api.example.com") and not is_local("http://10.0.0.1")


# --- a server that drifted from the contract ----------------------------------------------------


class Drifted:
    """mockgen behind a proxy that renames task_status to status and answers a missing key with 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = json.loads(b"".join(chunks))
        status = start["status"]
        if status == 401 and "Missing" in body["msg"]:
            status, body["code"] = 403, 403
        if isinstance(body.get("data"), dict) and "task_status" in body["data"]:
            body["data"]["status"] = body["data"].pop("task_status")
        raw = json.dumps(body).encode()
        headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


@pytest.fixture
def drifted() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = Drifted(mockgen.create_app("ci"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)  # waiting for the socket to listen
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_fails_with_a_clear_table_against_a_server_that_drifted(drifted: str) -> None:
    result = contract(drifted, "sk-ci000000000000000000000000000001")
    assert result.exit_code == 1, result.output
    rows = {line.split("  ")[0].strip(): line for line in result.output.splitlines() if "  FAIL  " in line}
    assert set(rows) == {
        "auth: create without Authorization",
        "auth: query without Authorization",
        "query: poll the task",
        "shapes: answers fit /openapi.json",
    }
    assert "expected HTTP 401, got HTTP 403" in rows["auth: create without Authorization"]
    assert "missing field 'task_status'" in rows["query: poll the task"]
    assert "unexpected field 'status'" in rows["query: poll the task"]
    assert "auth: create with the Basic scheme" in result.output  # the checks that still hold pass
    assert "Error: contract drift: 4 check(s) failed" in result.output
