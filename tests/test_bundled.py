"""Each bundled scenario driven end to end through the HTTP API, on the manual clock."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from mockgen import create_app
from mockgen.store import run_now

from .conftest import Client

CI_KEY = "sk-ci000000000000000000000000000001"
CI_POOR = "sk-ci000000000000000000000000000002"


def test_default_magic_prompts(client: Client) -> None:
    ok = client.submit(prompt="fine")["data"]["task_id"]
    fail = client.submit(prompt="x [fail]")["data"]["task_id"]
    slow = client.submit(prompt="x [slow]")["data"]["task_id"]
    r = client.post(
        "/api/v1/tasks/create",
        json={"model_id": "gpt-image-2", "prompt": "[reject]"},
        headers={"Authorization": f"Bearer {client.key}"},
    )
    assert r.json()["code"] == 0
    client.advance(5)
    assert [client.poll(t)["data"]["task_status"] for t in (ok, fail, slow)] == [3, 4, 2]
    client.advance(30)
    assert client.poll(slow)["data"]["task_status"] == 3
    assert client.balance() == 1000 - 15 * 2


def test_ci_is_strict_fixed_and_still(make_client) -> None:
    client = make_client("ci", clock=None)
    assert client.get("/_mock/health").json()["clock"] == "manual"
    t = client.submit(key=CI_KEY)["data"]["task_id"]
    assert client.poll(t, CI_KEY)["data"]["task_status"] == 1
    client.advance(5)
    assert client.poll(t, CI_KEY)["data"]["task_status"] == 3
    client.submit(key=CI_POOR)
    r = client.post(
        "/api/v1/tasks/create",
        json={"model_id": "gpt-image-2", "prompt": "x"},
        headers={"Authorization": f"Bearer {CI_POOR}"},
    )
    assert "Insufficient credits" in r.json()["msg"]


def run_refund_demo() -> list[tuple[str, str, int]]:
    client = Client(create_app("refund-demo", clock="manual"), base_url="http://mock.test")
    alice = "sk-alice000000000000000000000000001"
    ids = [client.submit(key=alice, prompt=f"picture {i}")["data"]["task_id"] for i in range(12)]
    client.advance(60)
    seen = [
        (t, client.get(f"/_mock/tasks/{t}").json()["planned_outcome"], client.poll(t, alice)["data"]["task_status"])
        for t in ids
    ]
    client.close()
    return seen


def test_refund_demo_is_identical_run_after_run_and_refunds_failures() -> None:
    first, second = run_refund_demo(), run_refund_demo()
    assert first == second
    statuses = Counter(status for _, _, status in first)
    assert statuses[3] > 0 and statuses[4] > 0


def test_refund_demo_balance_shows_refunds(make_client) -> None:
    client = make_client("refund-demo")
    alice = "sk-alice000000000000000000000000001"
    ids = [client.submit(key=alice, prompt=f"p{i}")["data"]["task_id"] for i in range(10)]
    client.advance(60)
    failed = sum(client.poll(t, alice)["data"]["task_status"] == 4 for t in ids)
    assert client.balance(alice) == 300 - 15 * (10 - failed)
    refunds = [e for e in client.ledger(alice) if e["kind"] == "refund"]
    assert len(refunds) == failed


def test_low_balance_runs_out(make_client) -> None:
    client = make_client("low-balance")
    broke = "sk-broke000000000000000000000000001"
    client.submit(key=broke)
    client.submit(key=broke)
    r = client.post(
        "/api/v1/tasks/create",
        json={"model_id": "gpt-image-2", "prompt": "third"},
        headers={"Authorization": f"Bearer {broke}"},
    )
    assert r.json()["code"] == 0 and "balance is 10" in r.json()["msg"]
    assert client.balance(broke) == 10


def test_video_slow_keeps_videos_waiting(make_client) -> None:
    client = make_client("video-slow")
    video = client.submit(model_id="seedance-2")["data"]["task_id"]
    image = client.submit()["data"]["task_id"]
    client.advance(30)
    assert client.poll(image)["data"]["task_status"] == 3
    assert client.poll(video)["data"]["task_status"] == 2
    client.advance(200)
    assert client.poll(video)["data"]["task_status"] == 3


def test_flaky_100_submits_see_429_and_5xx_and_never_charge_without_a_task() -> None:
    app = create_app("flaky", clock="manual")
    backend = app.state.backend
    key = "sk-" + "f" * 32

    async def hammer() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mock.test") as http:
            answers: list[httpx.Response] = []
            for batch in range(10):  # ten at a time, so the injected latency overlaps
                answers += await asyncio.gather(
                    *(
                        http.post(
                            "/api/v1/tasks/create",
                            json={"model_id": "nano-banana-2", "prompt": f"try {batch}-{i}"},
                            headers={"Authorization": f"Bearer {key}"},
                        )
                        for i in range(10)
                    )
                )
                backend.clock.advance(0.5)  # refills half the per-key bucket between batches
            return answers

    answers = asyncio.run(hammer())
    codes = Counter(r.status_code for r in answers)
    assert codes[429] > 0 and codes[200] > 0
    assert sum(n for status, n in codes.items() if status >= 500) > 0
    assert all(r.headers.get("x-mockgen-fault") for r in answers if r.status_code != 200)
    created = {r.json()["data"]["task_id"] for r in answers if r.status_code == 200}
    account = run_now(backend.store.get_account(key))
    charges = {e.task_id for e in account.ledger if e.kind == "charge"}
    assert charges == created == {t.task_id for t in run_now(backend.store.tasks())}
    refunds = [e.task_id for e in account.ledger if e.kind == "refund"]
    assert set(refunds) <= created and len(refunds) == len(set(refunds))
    assert account.credits == 100_000 - 8 * len(created) + 8 * len(refunds)


def test_lost_answers_charges_every_create_and_marks_the_lost_ones(make_client) -> None:
    client = make_client("lost-answers")
    key = "sk-" + "l" * 32
    auth = {"Authorization": f"Bearer {key}"}
    statuses = []
    for i in range(15):
        r = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": f"p{i}"}, headers=auth)
        statuses.append(r.status_code)
    # 3, 6, 9, 12, 15 get a 502; of the rest, the 5th and 10th (creates 7 and 14) are cut (a 200 that
    # promises a body it never finishes: the test client sees part of it).
    assert [n + 1 for n, s in enumerate(statuses) if s == 502] == [3, 6, 9, 12, 15]
    tasks = client.get("/_mock/tasks").json()
    assert len(tasks) == 15 and client.balance(key) == 1000 - 15 * 15
    lost = {int(t["request"]["prompt"][1:]) + 1: t["lost_answer"] for t in tasks if t["lost_answer"]}
    assert lost == {
        3: "lost-502",
        6: "lost-502",
        7: "lost-cut",
        9: "lost-502",
        12: "lost-502",
        14: "lost-cut",
        15: "lost-502",
    }
