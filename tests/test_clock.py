"""Status follows the clock: the manual clock moves only when told, the real one by itself."""

from __future__ import annotations

import struct
import zlib

from .conftest import Client


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return struct.unpack(">II", data[16:24])


def test_manual_clock_task_waits_until_advanced_then_gives_a_png_of_the_right_shape(make_client) -> None:
    client: Client = make_client("ci")
    key = "sk-ci000000000000000000000000000001"
    task_id = client.submit(key=key, aspect_ratio="16:9")["data"]["task_id"]
    for _ in range(5):
        assert client.poll(task_id, key)["data"]["task_status"] == 1
    assert client.get("/_mock/health").json()["clock"] == "manual"
    client.advance(1)
    assert client.poll(task_id, key)["data"]["task_status"] == 2
    client.advance(4)
    data = client.poll(task_id, key)["data"]
    assert data["task_status"] == 3
    png = client.get(data["image_url"])
    assert png.headers["content-type"] == "image/png"
    width, height = png_size(png.content)
    assert width * 9 == height * 16


def test_advance_returns_the_new_time_and_refuses_going_back(client: Client) -> None:
    now = client.get("/_mock/health").json()["now"]
    assert client.advance(2.5) == now + 2.5
    assert client.post("/_mock/clock/advance", json={"seconds": -1}).status_code == 400
    assert client.post("/_mock/clock/advance", json={"seconds": "x"}).status_code == 400


def test_real_clock_cannot_be_advanced(make_client) -> None:
    client = make_client(clock="real")
    r = client.post("/_mock/clock/advance", json={"seconds": 1})
    assert r.status_code == 409 and "manual" in r.json()["error"]
    assert client.get("/_mock/health").json()["clock"] == "real"


def test_ten_thousand_tasks_finish_in_one_advance(client: Client) -> None:
    backend = client.app.state.backend
    account = backend.topup(client.key, 10_000 * 15)  # (stores the open key's account)
    for i in range(10_000):
        backend.submit(account, {"model_id": "gpt-image-2", "prompt": f"p{i} [fail]" if i % 2 else f"p{i}"})
    client.advance(10)
    statuses = [t.final_status for t in backend.store.tasks()]
    assert statuses.count(3) == 5_000 and statuses.count(4) == 5_000
    assert client.balance() == 1000 + 10_000 * 15 - 5_000 * 15
