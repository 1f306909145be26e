"""The public contract, field by field, as a client sees it (SPEC section 1, the seed)."""

from __future__ import annotations

import re

import pytest

from .conftest import AUTH, KEY, OTHER_KEY, Client

MODELS = [("gpt-image-2", "image", 15), ("nano-banana-2", "image", 8), ("seedance-2", "video", 60)]
QUERY_KEYS = {
    "task_id", "task_status", "task_type", "model_id", "image_url", "video_url", "audio_url", "credits", "created_at",
}  # fmt: skip


@pytest.mark.parametrize(("model_id", "task_type", "cost"), MODELS)
def test_create_and_query_every_model_field_by_field(client: Client, model_id: str, task_type: str, cost: int) -> None:
    created = client.submit(model_id=model_id, prompt="a serene zen garden", aspect_ratio="16:9")
    assert created["code"] == 200
    assert created["msg"] == "提交成功,等待生成"
    assert set(created["data"]) == {"task_id", "request_id", "credits"}
    task_id = created["data"]["task_id"]
    assert re.fullmatch(r"[a-z0-9]{12}", task_id)
    assert re.fullmatch(r"kie_[a-z0-9]{12}", created["data"]["request_id"])
    assert created["data"]["credits"] == cost

    first = client.poll(task_id)
    assert first["code"] == 200 and first["msg"] == "ok"
    data = first["data"]
    assert set(data) == QUERY_KEYS
    assert data["task_id"] == task_id
    assert data["task_status"] == 1
    assert data["task_type"] == task_type
    assert data["model_id"] == model_id
    assert data["image_url"] is None and data["video_url"] is None and data["audio_url"] is None
    assert data["credits"] == cost
    assert isinstance(data["created_at"], int)

    client.advance(1.0)
    assert client.poll(task_id)["data"]["task_status"] == 2
    client.advance(10.0)
    done = client.poll(task_id)["data"]
    assert done["task_status"] == 3
    url_field, other = ("image_url", "video_url") if task_type == "image" else ("video_url", "image_url")
    assert done[url_field] == f"http://mock.test/files/{task_id}.{'png' if task_type == 'image' else 'mp4'}"
    assert done[other] is None and done["audio_url"] is None
    download = client.get(done[url_field])
    assert download.status_code == 200
    assert download.headers["content-type"] == ("image/png" if task_type == "image" else "video/mp4")


def test_created_at_is_the_submit_time_in_whole_seconds(make_client) -> None:
    client = make_client("ci")
    created = client.submit(key="sk-ci000000000000000000000000000001")
    data = client.poll(created["data"]["task_id"], key="sk-ci000000000000000000000000000001")["data"]
    assert data["created_at"] == 1767225600  # the ci scenario's start_time, 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "Missing Authorization"),
        ({"Authorization": f"Basic {KEY}"}, "Bearer scheme"),
        ({"Authorization": "Bearer"}, "Malformed"),
        ({"Authorization": "Bearer sk-short"}, "Malformed"),
        ({"Authorization": "Bearer " + "sk-" + "a" * 33}, "Malformed"),
        ({"Authorization": "Bearer pk-" + "a" * 32}, "Malformed"),
        ({"Authorization": "Bearer sk-" + "!" * 32}, "Malformed"),
    ],
)
@pytest.mark.parametrize("route", ["create", "query"])
def test_401_before_anything_else(client: Client, headers: dict[str, str], fragment: str, route: str) -> None:
    if route == "create":
        r = client.post("/api/v1/tasks/create", content=b"not even json", headers=headers)
    else:
        r = client.get("/api/v1/tasks/doesnotexist", headers=headers)
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == 401 and body["data"] is None
    assert fragment in body["msg"]
    assert client.get("/_mock/tasks").json() == []


def test_unknown_key_is_401_in_strict_mode(make_client) -> None:
    client = make_client("ci")
    r = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers=AUTH)
    assert r.status_code == 401 and r.json()["code"] == 401 and "Unknown API key" in r.json()["msg"]


BAD_BODIES = [
    (b"{", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b'{"prompt": "x"}', "model_id is required"),
    (b'{"model_id": "dall-e-3", "prompt": "x"}', "Unknown model_id 'dall-e-3'"),
    (b'{"model_id": 5, "prompt": "x"}', "Unknown model_id 5"),
    (b'{"model_id": "gpt-image-2"}', "prompt is required"),
    (b'{"model_id": "gpt-image-2", "prompt": ""}', "prompt is required"),
    (b'{"model_id": "gpt-image-2", "prompt": "   "}', "prompt is required"),
    (b'{"model_id": "gpt-image-2", "prompt": 7}', "prompt is required"),
    (b'{"model_id": "gpt-image-2", "prompt": "' + b"x" * 4001 + b'"}', "prompt is too long"),
    (b'{"model_id": "gpt-image-2", "prompt": "x", "aspect_ratio": "5:7"}', "aspect_ratio '5:7' is not supported"),
    (b'{"model_id": "gpt-image-2", "prompt": "x", "aspect_ratio": 1.5}', "aspect_ratio 1.5 is not supported"),
    (b'{"model_id": "gpt-image-2", "prompt": "x", "image_urls": "http://a/b.png"}', "image_urls must be a list"),
    (b'{"model_id": "gpt-image-2", "prompt": "x", "image_urls": ["ftp://a/b"]}', "item 0"),
    (b'{"model_id": "gpt-image-2", "prompt": "x", "image_urls": [3]}', "item 0"),
    (b'{"model_id": "gpt-image-2", "prompt": "x", "prompt": "y"}', "duplicate key 'prompt'"),
    (b'{"model_id": "gpt-image-2", "prompt": NaN}', "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "fragment"), BAD_BODIES, ids=[f"body{i}" for i in range(len(BAD_BODIES))])
def test_business_failures_are_code_0_and_charge_nothing(client: Client, raw: bytes, fragment: str) -> None:
    before = client.balance()
    r = client.post("/api/v1/tasks/create", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 200
    body = r.json()
    assert body["code"] == 0 and body["data"] is None
    assert fragment in body["msg"], body["msg"]
    assert client.balance() == before
    assert client.get("/_mock/tasks").json() == []


def test_unknown_task_and_another_accounts_task_are_not_found(client: Client) -> None:
    task_id = client.submit()["data"]["task_id"]
    for key, tid in [(KEY, "zzzzzzzzzzzz"), (OTHER_KEY, task_id)]:
        r = client.get(f"/api/v1/tasks/{tid}", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert r.json() == {"code": 0, "msg": r.json()["msg"], "data": None}
        assert "Task not found" in r.json()["msg"]


def test_oversized_body_is_413_and_charges_nothing(client: Client) -> None:
    big = b'{"model_id": "gpt-image-2", "prompt": "' + b"x" * (1024 * 1024) + b'"}'
    r = client.post("/api/v1/tasks/create", content=big, headers=AUTH)
    assert r.status_code == 413
    assert r.json()["code"] == 413
    assert client.balance() == 1000


def test_oversized_chunked_body_is_413(client: Client) -> None:
    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    r = client.post("/api/v1/tasks/create", content=chunks(), headers=AUTH)
    assert r.status_code == 413


def test_unknown_route_and_method_are_json(client: Client) -> None:
    r = client.get("/api/v2/whatever", headers=AUTH)
    assert r.status_code == 404 and r.json()["code"] == 404 and r.json()["data"] is None
    r = client.delete("/api/v1/tasks/create", headers=AUTH)
    assert r.status_code == 405 and r.json()["code"] == 405


def test_default_aspect_ratios_and_image_urls(client: Client) -> None:
    image = client.submit(image_urls=["https://example.com/a.png"])["data"]["task_id"]
    video = client.submit(model_id="seedance-2")["data"]["task_id"]
    views = {t["task_id"]: t for t in client.get("/_mock/tasks").json()}
    assert views[image]["request"]["aspect_ratio"] == "1:1"
    assert views[image]["request"]["image_urls"] == ["https://example.com/a.png"]
    assert views[video]["request"]["aspect_ratio"] == "16:9"


def test_public_url_is_used_for_results(make_client) -> None:
    client = make_client(public_url="https://mock.example.org/")
    task_id = client.submit()["data"]["task_id"]
    client.advance(60)
    assert client.poll(task_id)["data"]["image_url"] == f"https://mock.example.org/files/{task_id}.png"
