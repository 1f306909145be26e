"""The README's examples stay true: its scenario example validates, its two commands are what CI runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mockgen.scenario import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"


def test_the_scenario_format_example_validates() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Scenario format") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None
    scenario = parse_scenario(example.group(1), "README.md")
    assert scenario.name == "my-scenario"
    assert [r.name for r in scenario.rules] == ["nsfw", "vip-cheap", "every-third-fails"]
    assert len(scenario.faults) == 6 and "veo-9" in scenario.models and "nano-banana-2" not in scenario.models


def test_the_lost_answers_example_catches_the_naive_client_paying_twice() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Testing a client's retries against lost answers") :]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    with pytest.raises(
        AssertionError, match=r"paid twice: Counter\(\{'request 2': 2, 'request 0': 1, 'request 1': 1\}\)"
    ):
        exec(compile(example.group(1), "README.md", "exec"), {"__name__": "readme_example"})


def two_commands() -> tuple[str, str]:
    """The README's install-and-run command and its test command, from "## Two commands"."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Two commands") : text.index("\n## ", text.index("## Two commands") + 1)]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(blocks) >= 2, blocks
    return blocks[0], blocks[1]


def ci_test_command(latest: bool) -> str:
    """The test command .ci/run runs, as bash itself expands it from the script's own lines."""
    script = CI_RUN.read_text(encoding="utf-8")
    assignment = re.search(r"^TEST_COMMAND=.*$", script, re.M)
    latest_edit = re.search(r"^\s*(TEST_COMMAND=\"\$\{TEST_COMMAND/.*)$", script, re.M)
    assert assignment is not None and latest_edit is not None
    lines = [assignment.group(0), latest_edit.group(1) if latest else "", 'printf %s "$TEST_COMMAND"']
    return subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True, check=True).stdout


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    _, test_command = two_commands()
    assert ci_test_command(latest=False) == test_command
    script = CI_RUN.read_text(encoding="utf-8")
    assert re.search(r'^bash -c "\$TEST_COMMAND"$', script, re.M), "CI must run the command as it stands"


def test_both_readme_commands_install_from_the_lock() -> None:
    run, test = two_commands()
    assert run.startswith("pip install -c requirements/lock.txt . && ")
    assert test.startswith("pip install -c requirements/lock.txt -e '.[test]' && ")
    assert (ROOT / "requirements" / "lock.txt").is_file()


def test_ci_latest_mode_drops_the_lock_and_upgrades() -> None:
    latest = ci_test_command(latest=True)
    assert "lock.txt" not in latest and latest.startswith("pip install --upgrade")
    _, test_command = two_commands()
    assert latest.partition(" && ")[2] == test_command.partition(" && ")[2]  # the same checks, only unpinned
