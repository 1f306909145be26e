"""The /_mock/ control API (SPEC section 4)."""

from __future__ import annotations

from .conftest import AUTH, JSON, KEY, Client


def test_health(client: Client) -> None:
    h = client.get("/_mock/health").json()
    assert h["status"] == "ok" and h["scenario"] == "default" and h["clock"] == "manual"
    assert isinstance(h["now"], float)


def test_accounts_create_list_get_and_topup(client: Client) -> None:
    r = client.post("/_mock/accounts", json={"credits": 40})
    assert r.status_code == 201
    key = r.json()["key"]
    assert key.startswith("sk-") and len(key) == 35 and r.json()["credits"] == 40
    chosen = "sk-" + "c" * 32
    assert client.post("/_mock/accounts", json={"credits": 5, "key": chosen}).json()["key"] == chosen
    assert client.post("/_mock/accounts", json={"credits": 5, "key": chosen}).status_code == 409
    assert client.post("/_mock/accounts", json={"key": "nope"}).status_code == 400
    listed = {a["key"]: a["credits"] for a in client.get("/_mock/accounts").json()}
    assert listed == {key: 40, chosen: 5}
    r = client.post(f"/_mock/accounts/{key}/credits", json={"delta": 60})
    assert r.json()["credits"] == 100
    r = client.post(f"/_mock/accounts/{key}/credits", json={"delta": -1000})
    assert r.json()["credits"] == 0  # never below zero
    ledger = client.get(f"/_mock/accounts/{key}").json()["ledger"]
    assert [(e["kind"], e["amount"]) for e in ledger] == [("topup", 40), ("topup", 60), ("topup", -100)]
    assert client.get("/_mock/accounts/sk-unknown").status_code == 404
    assert client.post(f"/_mock/accounts/{key}/credits", json={"delta": 1.5}).status_code == 400


def test_tasks_list_and_detail_show_key_request_timeline_and_plan(client: Client) -> None:
    task_id = client.submit(prompt="a cat [fail]", aspect_ratio="3:4")["data"]["task_id"]
    tasks = client.get("/_mock/tasks").json()
    assert [t["task_id"] for t in tasks] == [task_id]
    t = client.get(f"/_mock/tasks/{task_id}").json()
    assert t["key"] == KEY
    assert t["request"] == {
        "model_id": "gpt-image-2",
        "prompt": "a cat [fail]",
        "aspect_ratio": "3:4",
        "image_urls": [],
    }
    assert t["planned_outcome"] == "failed" and t["rule"] == "fail-marker"
    assert t["timeline"]["running_at"] == t["timeline"]["created_at"] + 0.5
    assert t["timeline"]["finish_at"] == t["timeline"]["created_at"] + 2.0
    assert t["status"] == 1
    assert client.get("/_mock/tasks/nope").status_code == 404


def test_resolve_success_now(client: Client) -> None:
    task_id = client.submit(prompt="[slow]")["data"]["task_id"]
    r = client.post(f"/_mock/tasks/{task_id}/resolve", json={"outcome": "success"})
    assert r.json()["status"] == 3
    assert client.poll(task_id)["data"]["task_status"] == 3
    assert client.post(f"/_mock/tasks/{task_id}/resolve", json={"outcome": "maybe"}).status_code == 400


def test_journal_records_requests_masks_keys_and_filters(client: Client) -> None:
    task_id = client.submit()["data"]["task_id"]
    client.poll(task_id)
    client.get("/api/v1/tasks/xxx")
    journal = client.get("/_mock/requests").json()
    assert [e["path"] for e in journal] == ["/api/v1/tasks/create", f"/api/v1/tasks/{task_id}", "/api/v1/tasks/xxx"]
    first = journal[0]
    assert first["method"] == "POST" and first["status"] == 200 and first["task_id"] == task_id
    assert KEY not in str(journal)
    assert first["headers"]["authorization"].startswith("Bearer sk-aaaa")
    assert '"prompt"' in first["body"]
    assert journal[2]["status"] == 401 and "Missing Authorization" in journal[2]["error"]
    only_create = client.get("/_mock/requests", params={"path": "/api/v1/tasks/create"}).json()
    assert len(only_create) == 1
    by_key = client.get("/_mock/requests", params={"key": KEY}).json()
    assert len(by_key) == 2
    assert client.delete("/_mock/requests", headers=JSON).status_code == 204
    assert client.get("/_mock/requests").json() == []


def test_requests_wait_returns_when_enough_arrived_or_times_out(client: Client) -> None:
    client.submit()
    r = client.get("/_mock/requests/wait", params={"path": "/api/v1/tasks/create", "count": 1, "timeout": 1})
    assert r.status_code == 200 and r.json()["arrived"] is True and r.json()["count"] == 1
    r = client.get("/_mock/requests/wait", params={"path": "/api/v1/tasks/create", "count": 2, "timeout": 0.05})
    assert r.status_code == 408 and r.json()["arrived"] is False


def test_scenario_get_put_keeps_old_on_error(client: Client) -> None:
    assert client.get("/_mock/scenario").json()["name"] == "default"
    bad = "name: broken\nauth:\n  mode: sometimes\n"
    r = client.put("/_mock/scenario", content=bad, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 422
    issue = r.json()["issues"][0]
    assert issue["line"] == 3 and issue["path"] == "auth.mode"
    assert client.get("/_mock/scenario").json()["name"] == "default"
    r = client.put("/_mock/scenario", json={"name": "ci"})
    assert r.status_code == 200
    assert client.get("/_mock/health").json()["scenario"] == "ci"
    assert client.put("/_mock/scenario", json={"name": "nope"}).status_code == 422


def test_reset_goes_back_to_the_starting_state(client: Client) -> None:
    client.submit()
    client.advance(100)
    r = client.post("/_mock/reset", headers=JSON)
    assert r.status_code == 200
    assert client.get("/_mock/tasks").json() == []
    assert client.get("/_mock/accounts").json() == []


def test_next_outcomes_are_consumed_by_matching_submits(client: Client) -> None:
    r = client.post("/_mock/next", json={"outcome": "failed", "count": 2, "model_id": "nano-banana-2"})
    assert r.status_code == 201
    image = client.submit()["data"]["task_id"]  # gpt-image-2: not matched
    fails = [client.submit(model_id="nano-banana-2")["data"]["task_id"] for _ in range(3)]
    client.advance(100)
    statuses = [client.poll(t)["data"]["task_status"] for t in [image, *fails]]
    assert statuses == [3, 4, 4, 3]
    assert client.get("/_mock/next").json() == {"queued": []}
    assert client.post("/_mock/next", json={"outcome": "failed", "model_id": "nope"}).status_code == 400


def test_state_export_and_restore(client: Client) -> None:
    done = client.submit()["data"]["task_id"]
    client.advance(100)
    waiting = client.submit(prompt="[slow]")["data"]["task_id"]
    state = client.get("/_mock/state").json()
    client.post("/_mock/reset", headers=JSON)
    assert client.get("/_mock/tasks").json() == []
    assert client.put("/_mock/state", json=state).status_code == 200
    assert client.poll(done)["data"]["task_status"] == 3
    assert client.poll(waiting)["data"]["task_status"] == 1
    assert client.balance() == 1000 - 30
    client.advance(1)
    assert client.poll(waiting)["data"]["task_status"] == 2
    assert client.put("/_mock/state", json={"version": 99}).status_code == 400
    assert client.put("/_mock/state", json={"version": 1, "accounts": "x"}).status_code == 400


def test_admin_token_guards_the_control_api_only(make_client) -> None:
    client = make_client(admin_token="s3cret")
    assert client.get("/_mock/health").status_code == 401
    assert client.get("/_mock/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/_mock/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    r = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers=AUTH)
    assert r.json()["code"] == 200


def test_control_errors_are_json(client: Client) -> None:
    r = client.post("/_mock/clock/advance", content=b"{oops", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.get("/_mock/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_looking_at_an_unseen_key_in_open_mode_creates_nothing(client: Client) -> None:
    unseen = "sk-" + "u" * 32
    view = client.get(f"/_mock/accounts/{unseen}").json()
    assert view == {"key": unseen, "name": None, "credits": 1000, "ledger": []}
    assert client.get("/_mock/accounts").json() == []
    assert client.post(f"/_mock/accounts/{unseen}/credits", json={"delta": 5}).json()["credits"] == 1005
    assert [a["key"] for a in client.get("/_mock/accounts").json()] == [unseen]
