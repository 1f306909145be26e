"""Every input at a bounded cost: scenario YAML, numbers and regexes, each at and past its bound (README "Limits")."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockgen import create_app
from mockgen.cli import main
from mockgen.errors import ScenarioError, ScenarioIssue
from mockgen.scenario import (
    MAX_INT,
    MAX_SCENARIO_BYTES,
    MAX_SECONDS,
    MAX_TIME,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    load_scenario,
    parse_scenario,
)

from .conftest import AUTH, JSON, KEY, Client


def refused(text: str) -> ScenarioIssue:
    """The one issue a scenario is refused for."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "limits.yaml")
    [issue] = info.value.issues
    assert issue.file == "limits.yaml"
    return issue


def bomb(levels: int) -> str:
    """The classic alias bomb: each level holds nine of the one before (9**levels values)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# --- the document: size, nesting, values once aliases are expanded ------------------------------------


def test_a_document_at_the_size_limit_loads_and_one_byte_more_is_refused() -> None:
    head = "description: "
    text = head + "x" * (MAX_SCENARIO_BYTES - len(head) - 1) + "\n"
    assert len(text.encode()) == MAX_SCENARIO_BYTES
    assert len(parse_scenario(text).description) == MAX_SCENARIO_BYTES - len(head) - 1
    issue = refused(text + "\n")
    assert issue.line is None and f"over the limit of {MAX_SCENARIO_BYTES:,}" in issue.message
    # counted in bytes, not characters
    wide = head + "é" * ((MAX_SCENARIO_BYTES - len(head)) // 2 + 1)
    assert "over the limit" in refused(wide).message


def test_a_file_past_the_size_limit_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (10 * MAX_SCENARIO_BYTES))
    with pytest.raises(ScenarioError) as info:
        load_scenario(big)
    assert str(info.value).startswith(f"{big}: (top): the file is over the limit of {MAX_SCENARIO_BYTES:,} bytes")


def test_nesting_at_the_limit_loads_and_one_level_more_is_refused_at_its_line() -> None:
    # the document is one level; description's value the others
    ok = "name: deep\ndescription: " + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1) + "\n"
    assert parse_scenario(ok).name == "deep"
    issue = refused("name: deep\ndescription: " + "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH + "\n")
    assert issue.line == 2 and issue.path == "description" + "[0]" * (MAX_YAML_DEPTH - 1)
    assert f"nested deeper than {MAX_YAML_DEPTH} levels" in issue.message


def test_very_deep_nesting_is_refused_not_a_recursion_error() -> None:
    for text in ("x: " + "[" * 100_000, "x: " + "{a: " * 50_000, "- " * 50_000 + "1"):
        assert "nested deeper" in refused(text).message


def _expanding_to(values: int) -> str:
    """A document whose values number exactly ``values`` once its aliases are expanded."""
    anchored = "[" + ",".join(["0"] * 100) + "]"  # 101 values
    uses = 400
    # the document, 'description' and its list: 3; the anchored list; the list of uses; the padding list
    padding = values - (3 + 101 + 1 + uses * 101 + 1)
    return f"description:\n  - &a {anchored}\n  - [{', '.join(['*a'] * uses)}]\n  - [{', '.join(['1'] * padding)}]\n"


def test_values_at_the_expansion_limit_load_and_one_more_is_refused() -> None:
    parse_scenario(_expanding_to(MAX_YAML_NODES))
    issue = refused(_expanding_to(MAX_YAML_NODES + 1))
    assert issue.line == 1 and issue.path == ""  # the whole document is one value too many
    assert f"expands to more than {MAX_YAML_NODES} values" in issue.message and "aliases" in issue.message


def test_an_alias_bomb_is_refused_in_milliseconds_and_a_few_megabytes() -> None:
    text = bomb(9)  # 9**9 = 387 million strings if expanded; 432 bytes
    tracemalloc.start()
    started = time.perf_counter()
    try:
        issue = refused(text)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert issue.line == 5 and issue.path == "a4" and "expands to more than" in issue.message
    assert elapsed < 0.1, elapsed
    assert peak < 4 * 1024 * 1024, peak


def test_a_recursive_alias_is_refused() -> None:
    issue = refused("description: &a [1, *a]\n")
    assert issue.line == 1 and issue.path == "description[1]" and "recursive" in issue.message


def test_an_alias_bomb_is_refused_by_every_entry_point(tmp_path: Path, client: Client) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(9))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and f"{path}:5: a4: this value expands" in result.output
    r = client.put("/_mock/scenario", content=bomb(9), headers={"content-type": "application/yaml"})
    assert r.status_code == 422
    [issue] = r.json()["issues"]
    assert issue["line"] == 5 and issue["path"] == "a4" and "expands to more than" in issue["message"]


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "path", "fragment"),
    [
        (f"seed: {MAX_INT + 1}\n", 1, "seed", "out of range"),
        (f"seed: {-MAX_INT - 1}\n", 1, "seed", "out of range"),
        ("seed: " + "9" * 5000 + "\n", 1, "seed", "out of range"),
        ("seed: " + "1:" * 20_000 + "1\n", 1, "seed", "out of range"),  # YAML 1.1 base 60
        ("clock: manual\nstart_time: .inf\n", 2, "start_time", "not a finite number"),
        ("defaults:\n  queued: 1.0e+400\n", 2, "defaults.queued", "not a finite number"),
        ("defaults:\n  running: '" + "9" * 400 + "s'\n", 2, "defaults.running", "from 0 to ten years"),
        (f"defaults:\n  running: {MAX_SECONDS + 1}\n", 2, "defaults.running", "from 0 to ten years"),
        (f"start_time: {MAX_TIME + 1}\n", 1, "start_time", "to the end of 9999"),
        ("rules:\n  - extra: {score: .nan}\n", 2, "rules[0].extra.score", "not a finite number"),
        ("faults:\n  - status: 500\n    body: {x: -.inf}\n", 3, "faults[0].body.x", "not a finite number"),
        (f"accounts:\n  - key: {KEY}\n    credits: {MAX_INT + 1}\n", 3, "accounts[0].credits", "out of range"),
        ("defaults:\n  outcome: {success: 100, failed: .nan}\n", 2, "defaults.outcome.failed", "finite"),
    ],
)
def test_numbers_past_their_bounds_are_refused_naming_line_and_key(
    text: str, line: int, path: str, fragment: str
) -> None:
    issue = refused(text)
    assert (issue.line, issue.path) == (line, path) and fragment in issue.message, issue


def test_numbers_at_their_bounds_load() -> None:
    s = parse_scenario(
        f"seed: {MAX_INT}\nclock: manual\nstart_time: {MAX_TIME}\n"
        f"accounts:\n  - key: {KEY}\n    credits: {MAX_INT}\n"
        f"defaults:\n  running: {MAX_SECONDS}\n"
        "rules:\n  - extra: {big: 1.0e+308, small: -9007199254740991}\n"
    )
    assert s.seed == MAX_INT and s.start_time == MAX_TIME and s.accounts[0].credits == MAX_INT
    assert s.defaults.running is not None and s.defaults.running.hi == MAX_SECONDS
    assert s.rules[0].behaviour.extra == {"big": 1e308, "small": -MAX_INT}


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ("2020-01-01", ["is a date"]),
        ("2020-01-01T10:00:00Z", ["is a date"]),
        ("!!binary aGVsbG8=", ["binary values are not supported"]),
        ("!!set {a, b}", ["set values are not supported"]),
        ("!!omap [a: 1]", ["omap values are not supported"]),
        ("{1: one}", ["keys must be strings"]),
        # libyaml refuses the escape; PyYAML's pure-Python parser builds the surrogate and we refuse it
        ('"\\ud800"', ["invalid Unicode character escape", "lone surrogate"]),
    ],
)
def test_values_with_no_json_form_are_refused_in_extra_and_in_a_fault_body(value: str, fragments: list[str]) -> None:
    for text, path in (
        (f"rules:\n  - extra: {{x: {value}}}\n", "rules[0].extra"),
        (f"faults:\n  - status: 503\n    body: {{x: {value}}}\n", "faults[0].body"),
    ):
        issue = refused(text)
        assert issue.line == text.count("\n") and any(f in issue.message for f in fragments), issue
        assert issue.path.startswith(path) or "not valid YAML" in issue.message, issue


def test_a_date_stays_a_good_start_time() -> None:
    s = parse_scenario("clock: manual\nstart_time: 2030-01-02\n")
    assert s.start_time == dt.datetime(2030, 1, 2, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("name", ["café ☕", "line\r\nX-Evil: 1", "tab\there", "x" * 129, ""])
def test_fault_names_that_cannot_be_a_header_value_are_refused(name: str) -> None:
    issue = refused(f"faults:\n  - name: {json.dumps(name)}\n    status: 503\n")
    assert issue.path == "faults[0].name" and "printable ASCII" in issue.message


def test_a_fault_name_at_the_length_limit_is_sent_in_its_header(make_client: Callable[..., Client]) -> None:
    name = "n" * 127 + "~"
    client = make_client(parse_scenario(f"faults:\n  - name: '{name}'\n    status: 503\n"))
    r = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers=AUTH)
    assert r.status_code == 503 and r.headers["x-mockgen-fault"] == name


# --- control API numbers and query parameters: a 400 naming the field ------------------------------

BIG = 10**4000  # within Python's 4,300 digits, so JSON reads it; far past what the API keeps


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("POST", "/_mock/accounts", {"credits": MAX_INT + 1}, "'credits' must be an integer from 0 to"),
        ("POST", "/_mock/accounts", {"credits": BIG}, "not an integer of 4001 digits"),
        ("POST", "/_mock/accounts", {"credits": -1}, "'credits' must be an integer from 0"),
        ("POST", "/_mock/accounts", {"credits": 7.2e94}, "'credits' must be an integer from 0 to"),  # a whole float
        ("POST", f"/_mock/accounts/{KEY}/credits", {"delta": MAX_INT + 1}, "'delta' must be an integer"),
        ("POST", "/_mock/clock/advance", {"seconds": MAX_SECONDS + 1}, "from 0 to ten years"),
        ("POST", "/_mock/next", {"outcome": "failed", "count": MAX_INT + 1}, "'count' must be an integer from 1"),
        ("POST", "/_mock/next", {"outcome": "failed", "count": 0}, "'count' must be an integer from 1"),
    ],
)
def test_control_numbers_past_their_bounds_are_a_400_naming_the_field(
    client: Client, method: str, path: str, body: dict[str, Any], fragment: str
) -> None:
    before = client.get("/_mock/state").json()
    r = client.request(method, path, content=json.dumps(body), headers=JSON)
    assert r.status_code == 400 and fragment in r.json()["error"], r.text
    assert len(r.json()["error"]) < 300
    assert client.get("/_mock/state").json() == before


def test_a_top_up_past_the_balance_bound_is_a_409_and_changes_nothing(client: Client) -> None:
    before = client.get("/_mock/state").json()
    r = client.post(f"/_mock/accounts/{KEY}/credits", json={"delta": MAX_INT})  # 1000 + MAX_INT
    assert r.status_code == 409 and "past the limit of" in r.json()["error"], r.text
    assert client.get("/_mock/state").json() == before


@pytest.mark.parametrize(
    "raw",
    [b'{"seconds": 1e400}', b'{"seconds": -1e400}', b'{"seconds": NaN}', b'{"seconds": Infinity}'],
)
def test_json_infinities_and_nan_are_a_400(client: Client, raw: bytes) -> None:
    r = client.post("/_mock/clock/advance", content=raw, headers=JSON)
    assert r.status_code == 400 and "seconds" in r.json()["error"] or "not allowed" in r.json()["error"]


def test_control_numbers_at_their_bounds_are_taken(client: Client) -> None:
    r = client.post("/_mock/accounts", json={"credits": MAX_INT})
    assert r.status_code == 201 and r.json()["credits"] == MAX_INT
    key = r.json()["key"]
    assert client.post(f"/_mock/accounts/{key}/credits", json={"delta": 0}).status_code == 200
    assert client.post(f"/_mock/accounts/{key}/credits", json={"delta": 1}).status_code == 409
    assert client.post(f"/_mock/accounts/{key}/credits", json={"delta": -MAX_INT}).json()["credits"] == 0
    assert client.post("/_mock/clock/advance", json={"seconds": MAX_SECONDS}).status_code == 200
    state = client.get("/_mock/state").json()
    assert client.put("/_mock/state", json=state).status_code == 200  # a world at its bounds round-trips


def test_the_clock_cannot_be_advanced_past_year_9999(client: Client) -> None:
    state = client.get("/_mock/state").json()
    state["clock"]["now"] = MAX_TIME - 10
    assert client.put("/_mock/state", json=state).status_code == 200
    assert client.post("/_mock/clock/advance", json={"seconds": 10}).status_code == 200
    r = client.post("/_mock/clock/advance", json={"seconds": 1})
    assert r.status_code == 409 and "past the end of year 9999" in r.json()["error"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("credits", MAX_INT + 1), ("credits", BIG), ("credits", 1e400), ("ledger.0.amount", -MAX_INT - 1)],
)
def test_a_state_with_numbers_past_their_bounds_is_refused_naming_the_field(
    client: Client, field: str, value: Any
) -> None:
    client.submit(prompt="x")
    state = client.get("/_mock/state").json()
    target: Any = state["accounts"][0]
    *steps, last = field.split(".")
    for step in steps:
        target = target[int(step)] if step.isdigit() else target[step]
    target[last] = value
    raw = json.dumps(state).replace("Infinity", "1e400").encode()
    r = client.put("/_mock/state", content=raw, headers=JSON)
    where = "accounts[0]." + field.replace(".0.", "[0].")
    assert r.status_code == 400 and r.json()["error"].startswith(f"state is malformed: {where} must be"), r.text


def test_a_rules_extra_with_infinity_in_a_state_is_refused(client: Client) -> None:
    client.submit(prompt="x")
    state = client.get("/_mock/state").json()
    state["tasks"][0]["extra"] = {"deep": [{"x": 1}, {"y": "INF"}]}
    raw = json.dumps(state).replace('"INF"', "1e400").encode()
    r = client.put("/_mock/state", content=raw, headers=JSON)
    assert r.status_code == 400 and "tasks[0].extra must be an object (of finite numbers)" in r.json()["error"]


@pytest.mark.parametrize("limit", ["²", "١٢", "-1", "1.5", "9" * 16, "9" * 5000])
def test_a_limit_that_is_not_a_small_ascii_number_is_a_400(client: Client, limit: str) -> None:
    for path in ("/_mock/tasks", f"/_mock/accounts/{KEY}"):
        r = client.get(path, params={"limit": limit})
        assert r.status_code == 400 and "'limit' must be a whole number" in r.json()["error"], r.text


@pytest.mark.parametrize("value", [b"\xb2", b"5\xb9\xb3"])  # '²', '5¹³': str.isdigit() says yes, int() no
def test_a_fault_header_of_non_ascii_digits_is_code_0_not_a_500(value: bytes) -> None:
    app = create_app("default", clock="manual")
    sent: list[dict[str, Any]] = []
    body = [{"type": "http.request", "body": b'{"model_id": "gpt-image-2", "prompt": "x"}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        return body.pop(0) if body else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"mock.test"), (b"authorization", f"Bearer {KEY}".encode()), (b"x-mockgen-fault", value)]
    scope = {"type": "http", "method": "POST", "path": "/api/v1/tasks/create", "headers": headers}
    scope |= {"query_string": b"", "root_path": "", "scheme": "http", "server": ("mock.test", 80)}
    asyncio.run(app(scope, receive, send))
    answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert sent[0]["status"] == 200 and answer["code"] == 0 and "X-Mockgen-Fault" in answer["msg"]


# --- regexes: RE2, linear in the prompt -------------------------------------------------------------


def test_a_catastrophic_pattern_matches_in_linear_time(make_client: Callable[..., Client]) -> None:
    client = make_client(parse_scenario("rules:\n  - match: {prompt_regex: '(a+)+$'}\n    outcome: failed\n"))
    started = time.perf_counter()
    for n in (27, 1000, 4000):  # the backtracking engine took seconds at 27 characters, doubling with each one more
        client.submit(prompt="a" * (n - 1) + "!")
    assert time.perf_counter() - started < 1.0
    task_id = client.submit(prompt="aaaa")["data"]["task_id"]
    assert client.get(f"/_mock/tasks/{task_id}").json()["rule"] == "rule-0"


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)b", r"(?<!x)y", r"(?P<n>a)(?P=n)", "a{1001}"])
def test_patterns_re2_cannot_compile_are_refused_saying_re2_syntax_is_used(pattern: str) -> None:
    issue = refused(f"rules:\n  - match:\n      prompt_regex: {json.dumps(pattern)}\n")
    assert (issue.line, issue.path) == (3, "rules[0].match.prompt_regex")
    assert "RE2 syntax" in issue.message


def test_re2_keeps_the_usual_syntax() -> None:
    s = parse_scenario(r"rules: [{match: {prompt_regex: '(?i)\bnsfw\b|^\d{3}-[a-z]+$'}}]" + "\n")
    regex = s.rules[0].match.prompt_regex
    assert regex is not None
    assert regex.search("some NSFW words") and regex.search("123-abc") and not regex.search("nsfwx")
    assert regex.search("é ünïcode nsfw")


# --- whatever the text, the loader raises ScenarioError and nothing else ----------------------------

_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.dates() | st.sampled_from(["1e400", ".inf", ".nan", "2024-02-30", "*a", "&a", "!!binary x", "9" * 5000])
)  # fmt: skip
_KEYS = st.sampled_from(
    ["name", "seed", "clock", "start_time", "auth", "accounts", "models", "defaults", "rules", "faults", "limits",
     "match", "extra", "body", "status", "key", "credits", "queued", "running", "outcome", "prompt_regex", "x"]
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=20
)
_YAMLISH = st.text(st.sampled_from(list("[]{}:,-&*!|>'\"#\n ?%@`\\0123456789.eE+-_absk")), max_size=120)


def _dumped(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=None, allow_unicode=True)


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.dictionaries(_KEYS, _VALUES, max_size=6).map(_dumped),
        _VALUES.map(_dumped),
        _YAMLISH,
        st.tuples(st.dictionaries(_KEYS, _VALUES, max_size=6).map(_dumped), _YAMLISH).map("".join),
        st.integers(1, 12).map(bomb),
    )
)
def test_random_documents_raise_only_scenario_errors(text: str) -> None:
    try:
        parse_scenario(text, "random.yaml")
    except ScenarioError as exc:
        assert exc.issues and all(i.file == "random.yaml" and i.message for i in exc.issues)
