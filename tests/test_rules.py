"""The scenario engine's rules, as plain domain code: no HTTP, a manual clock, a seeded source."""

from __future__ import annotations

import pytest

from mockgen.api import task_data
from mockgen.backend import Backend, Steering
from mockgen.errors import ApiError
from mockgen.models import Account, Task
from mockgen.scenario import parse_scenario
from mockgen.store import run_now

KEY = "sk-" + "r" * 32
OTHER = "sk-" + "o" * 32


def world(yaml_text: str) -> tuple[Backend, Account]:
    backend = Backend(parse_scenario("clock: manual\nseed: 5\n" + yaml_text, "rules.yaml"))
    return backend, run_now(backend.authenticate(f"Bearer {KEY}"))


def submit(backend: Backend, account: Account, steering: Steering | None = None, **body: object) -> Task:
    body.setdefault("model_id", "gpt-image-2")
    body.setdefault("prompt", "a lighthouse")
    return run_now(backend.submit(account, body, steering or Steering()))


def rule_of(backend: Backend, account: Account, **body: object) -> str | None:
    return submit(backend, account, **body).rule


def test_first_matching_rule_wins() -> None:
    b, a = world(
        "rules:\n"
        "  - {name: first, match: {prompt_contains: cat}, outcome: failed}\n"
        "  - {name: second, match: {prompt_contains: [cat, dog]}, outcome: success}\n"
    )
    assert rule_of(b, a, prompt="a cat") == "first"
    assert rule_of(b, a, prompt="a dog") == "second"
    assert rule_of(b, a, prompt="a cow") is None


@pytest.mark.parametrize(
    ("match", "hits", "misses"),
    [
        ("{model_id: seedance-2}", {"model_id": "seedance-2"}, {"model_id": "gpt-image-2"}),
        ("{model_id: [seedance-2, nano-banana-2]}", {"model_id": "nano-banana-2"}, {}),
        ("{prompt_regex: '^draw \\d+ cats$'}", {"prompt": "draw 3 cats"}, {"prompt": "draw many cats"}),
        ("{aspect_ratio: '9:16'}", {"aspect_ratio": "9:16"}, {"aspect_ratio": "16:9"}),
        ("{has_images: true}", {"image_urls": ["https://x.org/a.png"]}, {}),
        ("{has_images: false}", {}, {"image_urls": ["https://x.org/a.png"]}),
    ],
)
def test_request_matchers(match: str, hits: dict, misses: dict) -> None:
    b, a = world(f"rules:\n  - name: r\n    match: {match}\n    cost: 1\n")
    assert rule_of(b, a, **hits) == "r"
    assert rule_of(b, a, **misses) is None


def test_key_and_account_matchers() -> None:
    b, a = world(
        f"accounts:\n  - {{key: {OTHER}, name: vip, credits: 50}}\n"
        f"rules:\n  - {{name: by-key, match: {{key: {KEY}}}, cost: 1}}\n"
        "  - {name: by-account, match: {account: vip}, cost: 2}\n"
    )
    vip = run_now(b.authenticate(f"Bearer {OTHER}"))
    assert submit(b, a).credits == 1
    assert submit(b, vip).credits == 2


def test_counters_every_nth_first_n_after_n() -> None:
    b, a = world(
        "rules:\n"
        "  - {name: third, match: {every_nth: 3}, cost: 3}\n"
        "  - {name: first-two, match: {first_n: 2}, cost: 2}\n"
        "  - {name: after-five, match: {after_n: 5}, cost: 5}\n"
    )
    costs = [submit(b, a).credits for _ in range(10)]
    # Later rules only count the requests that reach them (first match wins).
    assert costs == [2, 2, 3, 15, 15, 3, 15, 15, 3, 15]
    assert [submit(b, a).credits for _ in range(2)] == [5, 3]  # after-five's 6th request; the 12th


def test_counters_per_key() -> None:
    b, a = world("rules:\n  - {name: first, match: {first_n: 1, count_per: key}, outcome: failed}\n")
    other = run_now(b.authenticate(f"Bearer {OTHER}"))
    assert [submit(b, a).outcome, submit(b, a).outcome] == ["failed", "success"]
    assert submit(b, other).outcome == "failed"


def test_rule_effects_durations_outcome_message_cost_extra_results() -> None:
    b, a = world(
        "results: {cdn_base: 'https://cdn.example.net'}\n"
        "rules:\n"
        "  - name: all\n"
        "    match: {prompt_contains: x}\n"
        "    queued: 2\n"
        "    running: 3..4\n"
        "    outcome: failed\n"
        "    failure_message: out of GPUs\n"
        "    cost: 7\n"
        "    extra: {progress: 50}\n"
        "    results: cdn\n"
        "  - {name: cdn, match: {prompt_contains: y}, results: cdn}\n"
    )
    t = submit(b, a, prompt="x")
    assert t.running_at - t.created_at == 2 and 5 <= t.finish_at - t.created_at <= 6
    assert (t.outcome, t.failure_message, t.credits) == ("failed", "out of GPUs", 7)
    assert task_data(b, t, "http://h")["progress"] == 50
    run_now(b.advance(10))
    assert t.final_status == 4 and t.message == "out of GPUs"
    y = submit(b, a, prompt="y")
    run_now(b.advance(10))
    assert task_data(b, y, "http://h")["image_url"] == f"https://cdn.example.net/images/{y.task_id}.png"


def test_reject_is_refused_before_any_charge() -> None:
    b, a = world("rules:\n  - {match: {model_id: seedance-2}, reject: 'video is off today'}\n")
    with pytest.raises(ApiError, match="video is off today"):
        submit(b, a, model_id="seedance-2")
    assert a.credits == 1000 and a.ledger == [] and run_now(b.store.task_count()) == 0


def test_weighted_outcomes_follow_the_weights() -> None:
    b, a = world("defaults: {outcome: {success: 90, failed: 10}}\nauth: {default_credits: 100000}\n")
    outcomes = [submit(b, a, model_id="nano-banana-2").outcome for _ in range(2000)]
    assert 0.86 < outcomes.count("success") / 2000 < 0.94


def test_progress_by_polls() -> None:
    b, a = world("defaults: {progress: polls, polls: {queued: 2, running: 1}}\n")
    t = submit(b, a)
    seen = [task_data(b, run_now(b.query(a, t.task_id)), "http://h")["task_status"] for _ in range(5)]
    assert seen == [1, 1, 2, 3, 3]
    run_now(b.advance(3600))
    assert t.polls == 5 and t.final_status == 3


def test_progress_manual_waits_for_resolve_and_refunds_on_failure() -> None:
    b, a = world("defaults: {progress: manual, queued: 1}\n")
    t = submit(b, a)
    run_now(b.advance(3600))
    assert t.status_at(b.now()) == 2 and a.credits == 985
    run_now(b.resolve(t.task_id, "failed", "no"))
    assert t.final_status == 4 and a.credits == 1000


def test_model_timing_sits_between_defaults_and_rules() -> None:
    b, a = world(
        "models:\n  seedance-2: {queued: 10, running: 20}\nrules:\n  - {match: {prompt_contains: quick}, running: 1}\n"
    )
    v = submit(b, a, model_id="seedance-2")
    assert (v.running_at - v.created_at, v.finish_at - v.running_at) == (10, 20)
    q = submit(b, a, model_id="seedance-2", prompt="quick")
    assert (q.running_at - q.created_at, q.finish_at - q.running_at) == (10, 1)


def test_steering_overrides_outcome_and_delay() -> None:
    b, a = world("rules:\n  - {match: {prompt_contains: x}, outcome: failed}\n")
    t = submit(b, a, Steering(outcome="success", delay=42), prompt="x")
    assert t.outcome == "success" and t.finish_at - t.created_at == 42


def test_probability_uses_the_scenarios_own_source() -> None:
    text = "rules:\n  - {name: coin, match: {probability: 0.5}, outcome: failed}\n"
    runs = []
    for _ in range(2):
        b, a = world(text)
        runs.append([submit(b, a, model_id="nano-banana-2").outcome for _ in range(40)])
    assert runs[0] == runs[1] and 5 < runs[0].count("failed") < 35
