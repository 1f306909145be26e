"""The command line: validate, scenarios, healthcheck, and serve on a real port."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
from click.testing import CliRunner

from mockgen.cli import main
from mockgen.testing import MockServer

from .conftest import free_port
from .serving import Serve, serve_once

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
    served = Serve("--scenario", "default", env={"MOCKGEN_PORT": str(port), "MOCKGEN_CLOCK": "manual"})
    try:
        assert f"http://127.0.0.1:{port}/api/v1/tasks/create" in "".join(served.banner)
        served.wait_ready()
        with urllib.request.urlopen(f"{served.base}/_mock/health", timeout=1) as r:
            assert json.loads(r.read())["clock"] == "manual"
        req = urllib.request.Request(
            f"{served.base}/api/v1/tasks/create",
            data=json.dumps({"model_id": "gpt-image-2", "prompt": "hello"}).encode(),
            headers={"Authorization": f"Bearer {served.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["code"] == 200
    finally:
        errors = served.stop()
    # uvicorn shuts down gracefully, then re-raises the signal, as a well-behaved server does
    assert served.proc.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in errors and "ERROR" not in errors, errors


def test_serve_warns_when_the_control_api_is_open_to_the_network() -> None:
    from mockgen.conformance import is_loopback_host

    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("192.0.2.1")


def test_python_dash_m_mockgen_help() -> None:
    out = subprocess.run([sys.executable, "-m", "mockgen", "--help"], capture_output=True, text=True, check=True)
    for command in ("serve", "validate", "scenarios", "healthcheck"):
        assert command in out.stdout


# --- what a new user meets first: the port, the banner, the access log, --help ---------------------


def test_a_port_out_of_range_is_refused() -> None:
    for port in ("99999", "-1", "65536"):
        done = serve_once("--port", port)
        assert done.returncode == 2 and "0<=x<=65535" in done.stderr, done.stderr
        assert done.stdout == ""


def test_port_0_listens_on_a_free_port_and_the_banner_names_it() -> None:
    with Serve("--port", "0", "--clock", "manual") as served:
        port = int(served.base.rsplit(":", 1)[1])
        assert port > 0 and served.base == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{served.base}/_mock/health", timeout=5) as r:
            assert json.loads(r.read())["clock"] == "manual"
    assert "Traceback" not in served.errors


def test_an_address_in_use_is_one_error_line_with_no_banner() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve_once("--port", str(port))
    assert done.returncode == 1
    assert done.stdout == ""  # no URLs, no key: nothing was listening for them
    assert done.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_a_public_url_with_a_trailing_slash_gives_clean_links() -> None:
    port = free_port()
    with Serve("--port", str(port), "--public-url", f"http://127.0.0.1:{port}/") as served:
        text = "".join(served.banner)
        assert f"http://127.0.0.1:{port}/api/v1/tasks/create" in text and "//api" not in text
        assert f"http://127.0.0.1:{port}/_mock/health" in text and "//_mock" not in text


def test_access_log_prints_uvicorns_lines_and_is_off_by_default() -> None:
    for flags, expected in ((["--access-log"], True), ([], False)):
        served = Serve("--port", "0", *flags).wait_ready()
        try:
            urllib.request.urlopen(f"{served.base}/_mock/health?probe=1", timeout=5).close()
        finally:
            served.stop()
        logged = served.output + served.errors
        assert ('"GET /_mock/health?probe=1 HTTP/1.1" 200' in logged) is expected, logged


def test_shutdown_with_a_parked_long_poll_is_prompt() -> None:
    served = Serve("--port", "0", "--clock", "manual").wait_ready()
    answers: list[int] = []

    def park() -> None:
        url = f"{served.base}/_mock/requests/wait?path=/nothing&timeout=30"
        try:
            urllib.request.urlopen(url, timeout=40).close()
        except urllib.error.HTTPError as exc:
            answers.append(exc.code)

    waiter = threading.Thread(target=park)
    waiter.start()
    time.sleep(0.3)  # for the real request to reach the real server and park
    started = time.monotonic()
    served.stop()
    took = time.monotonic() - started
    waiter.join(timeout=10)
    assert took < 2.0, f"shutdown took {took:.1f} s"
    assert answers == [503] and "Traceback" not in served.errors


def test_every_option_has_help_and_shows_its_environment_variable() -> None:
    for name, command in main.commands.items():
        helped = CliRunner().invoke(main, [name, "--help"], terminal_width=200)
        assert helped.exit_code == 0
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            assert param.help, f"mockgen {name} {param.opts[0]} has no help text"
            if param.envvar:
                assert param.show_envvar and f"env var: {param.envvar}" in helped.output, (name, param.opts)


def test_serve_returns_the_gc_settings_it_tuned() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    port = free_port()
    serving = threading.Event()

    def interrupt_when_up() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and serving.is_set():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_mock/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)  # waiting for a real server to listen
        if serving.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: uvicorn stops, then re-raises it

    serving.set()
    stopper = threading.Thread(target=interrupt_when_up)
    stopper.start()
    try:
        result = CliRunner().invoke(main, ["serve", "--port", str(port), "--clock", "manual"])
    finally:
        serving.clear()
        stopper.join(timeout=15)
    assert "API" in result.output and "Traceback" not in result.output
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_contract_against_a_port_with_nothing_listening_says_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["contract", "--base-url", url, "--key", "sk-" + "a" * 32])
    assert result.exit_code == 3, result.output
    assert f"Error: {url} is unreachable" in result.output and "Connection refused" in result.output
    assert "drift" not in result.output and "FAIL" not in result.output
