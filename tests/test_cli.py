"""The command line: validate, scenarios, healthcheck, and serve on a real port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from mockgen.cli import main
from mockgen.testing import MockServer

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_validate_bundled_scenarios_passes() -> None:
    paths = [str(p) for p in sorted((ROOT / "scenarios").glob("*.yaml"))]
    result = CliRunner().invoke(main, ["validate", *paths])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok") == len(paths)


def test_validate_a_broken_file_prints_line_and_key_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndefaults:\n  queued: forever\n")
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: defaults.queued:" in result.output
    assert "Traceback" not in result.output


def test_scenarios_lists_names_with_descriptions() -> None:
    result = CliRunner().invoke(main, ["scenarios"])
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) for line in result.output.strip().splitlines())
    assert "default" in lines and "ci" in lines and "Manual clock" in lines["ci"]


def test_serve_refuses_a_bad_scenario_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("clock: sideways\n")
    result = CliRunner().invoke(main, ["serve", "--scenario", str(bad)])
    assert result.exit_code == 1 and "bad.yaml:1: clock" in result.output


def test_healthcheck_against_a_running_server_and_a_dead_port() -> None:
    with MockServer() as mock:
        ok = CliRunner().invoke(main, ["healthcheck", "--url", mock.base_url])
        assert ok.exit_code == 0 and "healthy" in ok.output
    dead = free_port()
    bad = CliRunner().invoke(main, ["healthcheck", "--url", f"http://127.0.0.1:{dead}", "--timeout", "1"])
    assert bad.exit_code == 1 and "unhealthy" in bad.output


def test_serve_starts_a_real_server_prints_what_to_use_and_stops_on_sigterm() -> None:
    port = free_port()
    env = {**os.environ, "MOCKGEN_PORT": str(port), "MOCKGEN_CLOCK": "manual"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mockgen", "serve", "--scenario", "default"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        banner = [proc.stdout.readline() for _ in range(5)]  # type: ignore[union-attr]
        text = "".join(banner)
        assert f"http://127.0.0.1:{port}/api/v1/tasks/create" in text
        key = next(line.split()[1] for line in banner if line.strip().startswith("key"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_mock/health", timeout=1) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline, proc.stderr.read()  # type: ignore[union-attr]
                time.sleep(0.05)
        assert health["clock"] == "manual"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/tasks/create",
            data=json.dumps({"model_id": "gpt-image-2", "prompt": "hello"}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["code"] == 200
    finally:
        proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal, as a well-behaved server does
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        errors = proc.stderr.read()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        assert "Traceback" not in errors and "ERROR" not in errors, errors


def test_serve_warns_when_the_control_api_is_open_to_the_network() -> None:
    from mockgen.contract import is_loopback_host

    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("192.0.2.1")


def test_python_dash_m_mockgen_help() -> None:
    out = subprocess.run([sys.executable, "-m", "mockgen", "--help"], capture_output=True, text=True, check=True)
    for command in ("serve", "validate", "scenarios", "healthcheck"):
        assert command in out.stdout
