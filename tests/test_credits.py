"""Credits: charged on submit, refunded once when a task fails, never below zero."""

from __future__ import annotations

import asyncio

import httpx

from mockgen.testing import MockServer

from .conftest import AUTH, KEY, Client


def test_charge_on_submit_and_refund_once_at_failure(client: Client) -> None:
    task_id = client.submit(prompt="draw [fail]")["data"]["task_id"]
    assert client.balance() == 1000 - 15
    client.advance(1.0)  # running, not failed yet
    assert client.balance() == 985
    client.advance(10.0)  # failed: refunded without anyone polling
    assert client.balance() == 1000
    kinds = [(e["kind"], e["amount"], e.get("task_id")) for e in client.ledger()]
    assert kinds == [("charge", 15, task_id), ("refund", 15, task_id)]
    assert client.poll(task_id)["data"]["task_status"] == 4
    client.poll(task_id)
    client.advance(100)
    assert client.balance() == 1000
    assert len(client.ledger()) == 2  # no double refund


def test_refund_is_dated_when_the_task_failed_not_when_seen(client: Client) -> None:
    start = client.get("/_mock/health").json()["now"]
    client.submit(prompt="[fail]")
    client.advance(500)
    refund = client.ledger()[-1]
    assert refund["kind"] == "refund"
    assert refund["at"] == start + 0.5 + 1.5  # queued 0.5 s + running 1.5 s in the default scenario


def test_success_is_not_refunded(client: Client) -> None:
    task_id = client.submit()["data"]["task_id"]
    client.advance(60)
    assert client.poll(task_id)["data"]["task_status"] == 3
    assert client.balance() == 985
    assert [e["kind"] for e in client.ledger()] == ["charge"]


def test_rejected_submit_charges_nothing(client: Client) -> None:
    r = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x [reject]"}, headers=AUTH)
    assert r.json()["code"] == 0 and "Nothing was charged" in r.json()["msg"]
    assert client.balance() == 1000 and client.ledger() == []


def test_insufficient_credits_is_code_0_and_balance_stays(client: Client) -> None:
    client.post(f"/_mock/accounts/{KEY}/credits", json={"delta": -990})
    assert client.balance() == 10
    r = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers=AUTH)
    body = r.json()
    assert body["code"] == 0 and "Insufficient credits" in body["msg"] and "costs 15" in body["msg"]
    assert client.balance() == 10
    client.submit(model_id="nano-banana-2")  # costs 8: still fits
    assert client.balance() == 2


def test_resolve_failed_refunds_and_cannot_refund_twice(client: Client) -> None:
    task_id = client.submit()["data"]["task_id"]
    r = client.post(f"/_mock/tasks/{task_id}/resolve", json={"outcome": "failed", "msg": "GPU on fire"})
    assert r.status_code == 200 and r.json()["status"] == 4 and r.json()["message"] == "GPU on fire"
    assert client.balance() == 1000
    again = client.post(f"/_mock/tasks/{task_id}/resolve", json={"outcome": "failed"})
    assert again.status_code == 409
    client.advance(100)
    assert client.balance() == 1000


def test_concurrent_submits_never_overdraw_on_a_real_server() -> None:
    """60 clients race for a balance that covers 10 tasks: exactly 10 win, the balance ends at 0."""
    with MockServer("default", clock="manual") as mock:
        key = mock.control("POST", "accounts", {"credits": 150})["key"]

        async def race() -> list[dict]:
            limits = httpx.Limits(max_connections=60)
            async with httpx.AsyncClient(base_url=mock.base_url, limits=limits, timeout=30) as http:

                async def one(i: int) -> dict:
                    r = await http.post(
                        "/api/v1/tasks/create",
                        json={"model_id": "gpt-image-2", "prompt": f"race {i}"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    return r.json()

                return await asyncio.gather(*(one(i) for i in range(60)))

        answers = asyncio.run(race())
        won = [a for a in answers if a["code"] == 200]
        lost = [a for a in answers if a["code"] == 0]
        assert len(won) == 10 and len(lost) == 50
        assert all("Insufficient credits" in a["msg"] for a in lost)
        assert mock.balance(key) == 0
        assert len(mock.ledger(key)) == 1 + 10  # the starting top-up and ten charges
        assert len([t for t in mock.tasks() if t["key"] == key]) == 10
