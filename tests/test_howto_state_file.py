"""How-to: prepare a demo once, replay it (``mockgen serve --state-file``), and snapshots over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from mockgen.cli import main


def serve(state_file: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "mockgen", "serve", "--scenario", "ci", "--port", str(port)]
    env = {**os.environ, "MOCKGEN_STATE_FILE": str(state_file)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    banner = [proc.stdout.readline() for _ in range(6)]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"{base}/_mock/health", timeout=1).close()
            return proc, base, banner
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.05)  # waiting for a real process to listen


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)  # a clean shutdown: the state file is written
    assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
    errors = proc.stderr.read()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    return errors


def call(method: str, url: str, body: object = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": "Bearer sk-ci000000000000000000000000000001", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=5) as r:
        return json.loads(r.read())


def test_a_demo_prepared_once_is_replayed_from_the_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "demo.json"
    proc, base, banner = serve(state_file)
    try:
        assert f"state      {state_file} (new; written at shutdown)" in "".join(banner)
        task_id = call("POST", f"{base}/api/v1/tasks/create", {"model_id": "gpt-image-2", "prompt": "[fail] a cat"})[
            "data"
        ]["task_id"]
        call("POST", f"{base}/_mock/clock/advance", {"seconds": 30})
    finally:
        errors = stop(proc)
    assert "Traceback" not in errors, errors
    saved = json.loads(state_file.read_text())
    assert [t["task_id"] for t in saved["tasks"]] == [task_id] and saved["clock"]["now"] == 1767225630.0

    proc, base, banner = serve(state_file)
    try:
        assert "(loaded; written at shutdown)" in "".join(banner)
        assert call("GET", f"{base}/api/v1/tasks/{task_id}")["data"]["task_status"] == 4
        ledger = call("GET", f"{base}/_mock/accounts/sk-ci000000000000000000000000000001")["ledger"]
        assert [e["kind"] for e in ledger] == ["charge", "refund"]
        assert call("GET", f"{base}/_mock/health")["now"] == 1767225630.0
    finally:
        stop(proc)


def test_a_broken_state_file_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 99}')
    result = CliRunner().invoke(main, ["serve", "--state-file", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: state file {bad} refused: state must be an export with version 1" in result.output
