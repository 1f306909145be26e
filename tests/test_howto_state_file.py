"""How-to: prepare a demo once, replay it (``mockgen serve --state-file``), and snapshots over HTTP."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from mockgen.cli import main

from .serving import Serve


def serve(state_file: Path) -> Serve:
    """``mockgen serve --scenario ci`` with ``MOCKGEN_STATE_FILE``: its banner has a sixth line, the state."""
    return Serve("--scenario", "ci", "--port", "0", env={"MOCKGEN_STATE_FILE": str(state_file)}, banner_lines=6)


def call(method: str, url: str, body: object = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": "Bearer sk-ci000000000000000000000000000001", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=5) as r:
        return json.loads(r.read())


def test_a_demo_prepared_once_is_replayed_from_the_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "demo.json"
    with serve(state_file) as served:  # stopped with SIGTERM, a clean shutdown: the state file is written
        base = served.base
        assert f"state      {state_file} (new; written at shutdown)" in "".join(served.banner)
        body = {"model_id": "gpt-image-2", "prompt": "[fail] a cat"}
        task_id = call("POST", f"{base}/api/v1/tasks/create", body)["data"]["task_id"]
        call("POST", f"{base}/_mock/clock/advance", {"seconds": 30})
    assert "Traceback" not in served.errors and served.proc.returncode in (0, -signal.SIGTERM), served.errors
    saved = json.loads(state_file.read_text())
    assert [t["task_id"] for t in saved["tasks"]] == [task_id] and saved["clock"]["now"] == 1767225630.0

    with serve(state_file) as served:
        base = served.base
        assert "(loaded; written at shutdown)" in "".join(served.banner)
        assert call("GET", f"{base}/api/v1/tasks/{task_id}")["data"]["task_status"] == 4
        ledger = call("GET", f"{base}/_mock/accounts/sk-ci000000000000000000000000000001")["ledger"]
        assert [e["kind"] for e in ledger] == ["charge", "refund"]
        assert call("GET", f"{base}/_mock/health")["now"] == 1767225630.0


def test_a_broken_state_file_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 99}')
    result = CliRunner().invoke(main, ["serve", "--state-file", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: state file {bad} refused: state must be an export with version 1" in result.output
