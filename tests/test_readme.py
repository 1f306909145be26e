"""The README's examples stay true: its scenario example validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mockgen.scenario import parse_scenario

README = Path(__file__).resolve().parent.parent / "README.md"


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
