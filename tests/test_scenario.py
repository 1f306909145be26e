"""Scenario files: parsing, defaults, and errors that name file, line and key path."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

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


# --- one reader per section: each section's own errors --------------------------------------------

K1, K2 = "sk-" + "1" * 32, "sk-" + "2" * 32
SECTION_ERRORS = [
    ("auth: strict\n", [(1, "auth", "must be a mapping, not str")]),
    ("auth:\n  default_credits: -1\n", [(2, "auth.default_credits", "from 0 to")]),
    ("auth:\n  modes: open\n", [(2, "auth.modes", "unknown key 'modes' (allowed: default_credits, mode)")]),
    ("models: [gpt-image-2]\n", [(1, "models", "must be a mapping, not list")]),
    (
        "models:\n  seedance-2: false\n  gpt-image-2: false\n  nano-banana-2: false\n",
        [(1, "models", "at least one model must stay enabled")],
    ),
    ("models:\n  gpt-image-2: {cost: 1, speed: 2}\n", [(2, "models.gpt-image-2.speed", "unknown key 'speed'")]),
    (
        "models:\n  veo: {task_type: audio}\n",
        [(2, "models.veo.task_type", "'audio' is not one of: image, video"), (2, "models.veo", "needs task_type")],
    ),
    ("models:\n  veo: {task_type: video, running: later}\n", [(2, "models.veo.running", "is not a duration")]),
    ("accounts: {key: x}\n", [(1, "accounts", "must be a list of {key, credits, name}")]),
    ("accounts:\n  - credits: 5\n", [(2, "accounts[0]", "an account needs a key")]),
    (f"accounts:\n  - key: {K1}\n  - key: {K1}\n", [(3, "accounts[1].key", "is listed twice")]),
    (f"accounts:\n  - key: {K1}\n    name: 7\n", [(3, "accounts[0].name", "must be a string, not 7")]),
    ("defaults:\n  cost: 3\n", [(2, "defaults.cost", "unknown key 'cost'")]),
    ("defaults:\n  polls: {queued: -1}\n", [(2, "defaults.polls", "poll counts must be integers >= 0")]),
    ("defaults:\n  progress: by-hand\n", [(2, "defaults.progress", "'by-hand' is not one of: time, polls, manual")]),
    ("rules: {name: x}\n", [(1, "rules", "must be a list of rules")]),
    (
        "rules:\n  - match: {route: query}\n    outcome: failed\n",
        [(2, "rules[0].match.route", "rules apply to submits; use faults for other routes")],
    ),
    ("rules:\n  - match: {key: 5}\n", [(2, "rules[0].match.key", "must be an API key or a non-empty list of them")]),
    ("rules:\n  - match: {key: []}\n", [(2, "rules[0].match.key", "must be an API key or a non-empty list of them")]),
    (f"rules:\n  - match: {{key: [{K1}, sk-2]}}\n", [(2, "rules[0].match.key", "'sk-2' is not an API key")]),
    ("rules:\n  - extra: [1]\n", [(2, "rules[0].extra", "must be a mapping of field names to values")]),
    ("rules:\n  - cost: -2\n", [(2, "rules[0].cost", "from 0 to")]),
    ("faults: {status: 503}\n", [(1, "faults", "must be a list of faults")]),
    ("faults:\n  - match: {route: create}\n", [(2, "faults[0]", "a fault needs latency, status, truncate")]),
    ("faults:\n  - {status: 503, close: true}\n", [(2, "faults[0]", "a fault does one of")]),
    ("faults:\n  - {name: '', status: 503}\n", [(2, "faults[0].name", "is not a fault name")]),
    ("faults:\n  - rate_limit: {per_second: 1, per_minute: 60}\n", [(2, "faults[0].rate_limit", "exactly one of")]),
    ("faults:\n  - lose_answer: 418\n", [(2, "faults[0].lose_answer", "must be close or one of [500, 502, 503, 504]")]),
    ("faults:\n  - {status: 503, match: {every_nth: 0}}\n", [(2, "faults[0].match.every_nth", "from 1 to")]),
    ("results:\n  cdn: x\n", [(2, "results.cdn", "unknown key 'cdn' (allowed: cdn_base)")]),
    ("results:\n  cdn_base: 5\n", [(2, "results.cdn_base", "must be a string, not 5")]),
    ("limits:\n  max_prompt_length: 0\n", [(2, "limits.max_prompt_length", "from 1 to")]),
    ("limits:\n  max_image_urls: many\n", [(2, "limits.max_image_urls", "must be an integer")]),
    ("seed: lucky\n", [(1, "seed", "must be an integer, not 'lucky'")]),
    ("seed: true\n", [(1, "seed", "must be an integer, not True")]),
    ("start_time: yesterday\n", [(1, "start_time", "is not a time (use Unix seconds or ISO 8601)")]),
    ("start_time: -5\n", [(1, "start_time", "is not a time from 1970")]),
    ("envelope: flat\n", [(1, "envelope", "'flat' is not one of: documented, compat")]),
    ("name: [a]\n", [(1, "name", "must be a string")]),
    ("- just\n- a list\n", [(1, "", "must be a mapping, not list")]),
]


@pytest.mark.parametrize(
    ("text", "expected"), SECTION_ERRORS, ids=[f"{e[1][0][1] or 'top'}:{e[1][0][2][:24]}" for e in SECTION_ERRORS]
)
def test_each_section_names_its_errors(text: str, expected: list[tuple[int, str, str]]) -> None:
    test_validation_names_line_and_key_path(text, expected)


def test_issues_come_section_by_section_whatever_the_file_order() -> None:
    text = (
        "envelope: flat\nclock: sideways\nseed: x\nlimits: {max_image_urls: -1}\nresults: {cdn_base: 1}\n"
        "faults: [{status: 1}]\nrules: [{outcome: maybe}]\ndefaults: {queued: soon}\n"
        "accounts: [{credits: 1}]\nmodels: {veo: {}}\nauth: {mode: sometimes}\n"
    )
    paths = [path for _, path, _ in issues_of(text)]
    assert paths == [
        "auth.mode", "models.veo", "accounts[0]", "defaults.queued", "rules[0].outcome", "faults[0].status",
        "results.cdn_base", "limits.max_image_urls", "seed", "clock", "envelope",
    ]  # fmt: skip


def test_every_section_is_read_into_the_scenario() -> None:
    s = parse_scenario(
        f"""name: full
description: "  every section  "
seed: 7
clock: manual
start_time: 2026-01-01T00:00:00Z
envelope: compat
auth: {{mode: strict, default_credits: 5}}
accounts:
  - {{key: {K1}, credits: 300, name: alice}}
  - {{key: {K2}}}
models:
  gpt-image-2: {{cost: 20}}
  veo-9: {{task_type: video, cost: 99, queued: 1..2}}
  nano-banana-2: false
defaults: {{queued: 1, outcome: failed, progress: polls, polls: {{queued: 2}}}}
rules:
  - {{name: cheap, match: {{account: alice, model_id: [gpt-image-2, veo-9]}}, cost: 1, extra: {{a: 1}}}}
  - {{match: {{key: {K2}, every_nth: 3}}, reject: nope}}
faults:
  - {{match: {{route: query}}, status: 503, retry_after: 2}}
  - {{name: slow, latency: 100ms..2s}}
results: {{cdn_base: "https://cdn.test"}}
limits: {{max_prompt_length: 10, max_image_urls: 0}}
""",
        "full.yaml",
    )
    assert (s.name, s.description, s.seed, s.clock, s.start_time, s.envelope) == (
        "full", "every section", 7, "manual", 1767225600.0, "compat",
    )  # fmt: skip
    assert (s.auth_mode, s.default_credits, s.path) == ("strict", 5, "full.yaml")
    assert [(a.key, a.credits, a.name) for a in s.accounts] == [(K1, 300, "alice"), (K2, 0, None)]
    assert sorted(s.models) == ["gpt-image-2", "seedance-2", "veo-9"]
    assert s.models["gpt-image-2"].cost == 20 and s.models["gpt-image-2"].task_type == "image"
    assert s.models["veo-9"].queued == Duration(1, 2)
    d = s.defaults
    assert (d.queued, d.running, str(d.outcome), d.progress, d.polls) == (
        Duration(1, 1),
        Duration(2, 2),
        "failed",
        "polls",
        (2, 1),
    )
    assert [r.name for r in s.rules] == ["cheap", "rule-1"]
    cheap, other = s.rules
    assert cheap.match.accounts == {"alice"} and cheap.behaviour.cost == 1 and cheap.behaviour.extra == {"a": 1}
    assert other.match.keys == {K2} and other.match.every_nth == 3 and other.behaviour.reject == "nope"
    assert [(f.name, f.status, f.retry_after, f.latency) for f in s.faults] == [
        ("fault-0", 503, 2, None), ("slow", None, None, Duration(0.1, 2.0)),
    ]  # fmt: skip
    assert s.cdn_base == "https://cdn.test"
    assert (s.limits.max_prompt_length, s.limits.max_image_urls) == (10, 0)


def test_a_refused_section_is_a_422_from_the_control_api_never_a_500(client: Any) -> None:
    # match.key of another type once escaped the reader as a TypeError: a 500 from PUT /_mock/scenario.
    r = client.put(
        "/_mock/scenario", content="rules:\n  - match: {key: 5}\n", headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 422
    assert [(i["line"], i["path"]) for i in r.json()["issues"]] == [(2, "rules[0].match.key")]
    assert client.get("/_mock/scenario").json()["name"] == "default"
