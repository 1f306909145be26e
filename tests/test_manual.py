"""The README is a user's manual that stays true: its walk-through runs, its command line is whole."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import click
import httpx
import pytest

from mockgen.cli import main
from mockgen.testing import MockServer

from .serving import Serve

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The README's text under a heading, up to the next heading of the same or a higher level."""
    level = len(title.split(" ", 1)[0])
    lines = README.splitlines(keepends=True)
    start = lines.index(title + "\n") + 1
    fenced = False
    for number in range(start, len(lines)):
        line = lines[number]
        fenced ^= line.startswith("```")
        heading = re.match(r"(#+) ", line)
        if not fenced and heading and len(heading.group(1)) <= level:
            return "".join(lines[start:number])
    return "".join(lines[start:])


def test_the_curl_walk_through_runs_as_written(tmp_path: Path) -> None:
    script = re.search(r"```sh\n(.*?)```", section("## A walk-through with curl"), re.S)
    assert script is not None
    commands = script.group(1)
    assert commands.count("sleep 2\n") == 2
    assert not [line for line in commands.splitlines() if "k3m9x0a1b2c3" in line and not line.startswith("#")]
    with Serve("--port", "0", "--clock", "manual") as served:
        # On the manual clock the waits are the clock's, not the test's: the same 2 s, at once.
        advance = (
            f"curl -s -X POST {served.base}/_mock/clock/advance -H 'Content-Type: application/json' "
            "-d '{\"seconds\": 2}' >/dev/null\n"
        )
        runnable = commands.replace("http://127.0.0.1:8000", served.base).replace("sleep 2\n", advance)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", runnable], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout
    task_id = re.search(r'"task_id":"([a-z0-9]{12})"', out)
    assert task_id is not None and '"task_status":1' in out and '"task_status":3' in out
    assert f'"image_url":"{served.base}/files/{task_id.group(1)}.png"' in out
    png = (tmp_path / "result.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 720)
    assert '"credits":985' in out and out.count('"kind":"charge"') == 2 and out.count('"kind":"refund"') == 1


def test_every_environment_variable_is_in_the_command_line_section() -> None:
    text = section("## Command line")
    for name, command in main.commands.items():
        assert f"mockgen {name}" in text, f"mockgen {name} is not in the README's command line"
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                assert f"`{param.envvar}`" in text, f"{param.envvar} ({name} {param.opts[0]}) is not in the README"
                assert param.opts[0] in text, f"{name} {param.opts[0]} is not in the README"


def test_the_near_miss_example_is_the_real_text() -> None:
    shown = re.search(
        r"```\n(expected exactly 1 request.*?)```",
        section("### Verification, in the style of WireMock's `verify`"),
        re.S,
    )
    assert shown is not None
    with MockServer("ci") as mock:
        httpx.get(mock.url("/api/v1/task/abc"), headers=mock.headers())  # the typo of the README
        with pytest.raises(AssertionError) as raised:
            mock.verify("GET /api/v1/tasks/abc", count=1)
    assert str(raised.value) + "\n" == shown.group(1)


def test_the_license_is_the_mit_license_the_package_declares() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the mockgen authors\n")
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_the_performance_section_is_a_summary_that_links_the_details() -> None:
    text = section("## Performance")
    assert "[benchmarks/README.md](benchmarks/README.md)" in text and "`benchmarks/run`" in text
    assert len(text.splitlines()) < 30 and "round 1/7" not in text
    assert "round 1/7" in (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
