"""Scenario files: parsing, defaults, and errors that name file, line and key path."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mockgen.errors import ScenarioError
from mockgen.scenario import (
    Duration,
    bundled_dir,
    bundled_names,
    load_scenario,
    parse_duration,
    parse_outcome,
    parse_scenario,
)


def issues_of(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.yaml")
    return [(i.line, i.path, i.message) for i in info.value.issues]


def test_every_bundled_scenario_loads() -> None:
    names = bundled_names()
    assert {"default", "ci"} <= set(names)
    for name in names:
        s = load_scenario(name)
        assert s.name == name and s.description


def test_empty_file_is_the_defaults() -> None:
    s = parse_scenario("", "empty.yaml")
    assert s.name == "empty" and s.auth_mode == "open" and s.clock == "real"
    assert s.models["gpt-image-2"].cost == 15


def test_models_can_be_added_changed_and_removed() -> None:
    s = parse_scenario(
        "models:\n  gpt-image-2: {cost: 20}\n  nano-banana-2: false\n  veo-9: {task_type: video, cost: 99}\n"
    )
    assert s.models["gpt-image-2"].cost == 20 and s.models["gpt-image-2"].task_type == "image"
    assert "nano-banana-2" not in s.models
    assert s.models["veo-9"].task_type == "video"


BROKEN = [
    ("name: x\nclok: real\n", [(2, "clok", "unknown key 'clok'")]),
    ("clock: sideways\n", [(1, "clock", "'sideways' is not one of")]),
    ("auth:\n  mode: sometimes\n", [(2, "auth.mode", "is not one of")]),
    ("defaults:\n  queued: soon\n", [(2, "defaults.queued", "is not a duration")]),
    ("defaults:\n  running: 5..2\n", [(2, "defaults.running", "minimum above its maximum")]),
    ("defaults:\n  outcome: {success: 80, failed: 10}\n", [(2, "defaults.outcome", "add up to 100")]),
    ("accounts:\n  - key: sk-123\n    credits: 5\n", [(2, "accounts[0].key", "is not an API key")]),
    ("accounts:\n  - key: sk-" + "a" * 32 + "\n    credits: -5\n", [(3, "accounts[0].credits", "from 0 to")]),
    (
        "rules:\n  - match: {model_id: dall-e}\n    outcome: failed\n",
        [(2, "rules[0].match.model_id", "unknown model 'dall-e'")],
    ),
    ("rules:\n  - match:\n      prompt_regex: '(['\n", [(3, "rules[0].match.prompt_regex", "RE2")]),
    ("models:\n  veo: {cost: 3}\n", [(2, "models.veo", "needs task_type")]),
    ("seed: 1\nseed: 2\n", [(2, "seed", "duplicate key")]),
    ("faults:\n  - status: 418\n", [(2, "faults[0].status", "not a fault status")]),
    ("name: [unclosed\n", [(2, "", "not valid YAML")]),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN, ids=[b[1][0][1] or "yaml" for b in BROKEN])
def test_validation_names_line_and_key_path(text: str, expected: list[tuple[int, str, str]]) -> None:
    found = issues_of(text)
    assert len(found) == len(expected), found
    for (line, path, message), (want_line, want_path, fragment) in zip(found, expected, strict=True):
        assert line == want_line and path == want_path and fragment in message, found


def test_all_errors_at_once_and_the_file_is_named() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario("clock: x\nauth: {mode: y}\ndefaults: {queued: z}\n", "many.yaml")
    assert len(info.value.issues) == 3
    assert all(str(i).startswith("many.yaml:") for i in info.value.issues)


def test_load_unknown_bundled_name_lists_the_known_ones() -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario("nope")
    assert "default" in str(info.value)


def test_bundled_dir_is_the_repo_scenarios_folder_in_development() -> None:
    assert bundled_dir() == Path(__file__).resolve().parent.parent / "scenarios"


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.floats(min_value=0, max_value=1e6))
def test_duration_ranges_sample_within_bounds(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    d = parse_duration(f"{lo!r}..{hi!r}") if "e" not in f"{lo!r}{hi!r}" else Duration(lo, hi)
    x = d.sample(random.Random(0))
    assert lo <= x <= hi


@given(st.integers(min_value=0, max_value=100))
def test_outcome_weights_adding_to_100_are_accepted(success: int) -> None:
    outcome = parse_outcome({"success": success, "failed": 100 - success})
    picks = {outcome.pick(random.Random(i)) for i in range(50)}
    if success == 100:
        assert picks == {"success"}
    if success == 0:
        assert picks == {"failed"}


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=200))
def test_outcome_weights_not_adding_to_100_are_refused(a: int, b: int) -> None:
    if a + b == 100:
        return
    with pytest.raises(ValueError, match="add up to 100"):
        parse_outcome({"success": a, "failed": b})


@pytest.mark.parametrize(
    ("text", "seconds"), [("2", 2.0), ("500ms", 0.5), ("1.5m", 90.0), ("1h", 3600.0), (3, 3.0), ("0", 0.0)]
)
def test_duration_units(text: object, seconds: float) -> None:
    assert parse_duration(text) == Duration(seconds, seconds)


@pytest.mark.parametrize("text", ["-1", "soon", "", "1..", "..2", True, None, -3, float("nan")])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
