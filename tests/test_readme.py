"""The README's examples stay true: its scenario example validates."""

from __future__ import annotations

import re
from pathlib import Path

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
    assert len(scenario.faults) == 5 and "veo-9" in scenario.models and "nano-banana-2" not in scenario.models
