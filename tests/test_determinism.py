"""With a seed, the same scenario and the same requests give the same world, run after run."""

from __future__ import annotations

from typing import Any

from mockgen import create_app
from mockgen.scenario import parse_scenario
from mockgen.store import run_now

from .conftest import JSON, Client

SCENARIO = """
seed: 42
clock: manual
start_time: 2026-03-01T12:00:00Z
defaults:
  queued: 0.5..3
  running: 1..10
  outcome: {success: 70, failed: 30}
  results: cdn
rules:
  - {name: sometimes, match: {probability: 0.3, model_id: seedance-2}, outcome: failed}
"""


def run() -> list[Any]:
    client = Client(create_app(parse_scenario(SCENARIO, "seeded.yaml")), base_url="http://mock.test")
    seen: list[Any] = []
    for i in range(30):
        model = ["gpt-image-2", "seedance-2", "nano-banana-2"][i % 3]
        seen.append(client.submit(model_id=model, prompt=f"prompt {i}")["data"])
    client.advance(5)
    for created in seen[:]:
        seen.append(client.poll(created["task_id"])["data"])
    seen.append(client.get("/_mock/tasks").json())
    seen.append(client.get(f"/_mock/accounts/{client.key}").json())
    client.close()
    return seen


def test_same_seed_same_requests_same_world() -> None:
    first, second = run(), run()
    assert first == second
    tasks = first[-2]
    assert len({t["planned_outcome"] for t in tasks}) == 2  # it really is random, just repeatable
    assert len({t["timeline"]["finish_at"] for t in tasks}) > 10
    urls = [d["image_url"] or d["video_url"] for d in first[30:60] if d["task_status"] == 3]
    assert urls and all(u.startswith("https://cdn.") for u in urls)  # fake CDN host from the seeded Faker


def test_different_seed_different_ids() -> None:
    a = Client(create_app(parse_scenario(SCENARIO, "a.yaml")), base_url="http://mock.test")
    b = Client(create_app(parse_scenario(SCENARIO.replace("seed: 42", "seed: 43"), "b.yaml")), base_url="http://m")
    assert a.submit()["data"]["task_id"] != b.submit()["data"]["task_id"]
    a.close()
    b.close()


def test_reset_replays_the_same_sequence(client: Client) -> None:
    run_now(client.app.state.backend.load(parse_scenario(SCENARIO, "seeded.yaml")))
    first = [client.submit()["data"]["task_id"] for _ in range(3)]
    client.post("/_mock/reset", headers=JSON)
    assert [client.submit()["data"]["task_id"] for _ in range(3)] == first
