"""Per-request cost of the app alone, without sockets: ASGI calls in a loop, mockgen vs the bare app.

Steadier than wrk on a busy machine, so it is what guided the optimisation; `run` reports it too.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KEY = "sk-" + "b" * 32
BODY = b'{"model_id": "gpt-image-2", "prompt": "a serene zen garden at sunrise", "aspect_ratio": "16:9"}'


def scope(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"authorization", f"Bearer {KEY}".encode()),
        (b"user-agent", b"wrk"),
    ]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "root_path": "",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


async def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(method, path, body), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def per_request_us(app: Any, method: str, path: str, body: bytes, n: int) -> float:
    s = scope(method, path, body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    for _ in range(200):
        await app(dict(s), receive, send)
    start = time.perf_counter()
    for _ in range(n):
        await app(dict(s), receive, send)
    return (time.perf_counter() - start) / n * 1e6


def make_mockgen() -> tuple[Any, str, bytes, bytes]:
    from mockgen import create_app
    from mockgen.store import run_now

    app = create_app("default", clock="manual")
    backend = app.state.backend
    run_now(backend.create_account(10**15, KEY))

    async def prepare() -> tuple[str, bytes, bytes]:
        status, created = await call(app, "POST", "/api/v1/tasks/create", BODY)
        import json

        task_id = json.loads(created)["data"]["task_id"]
        run_now(backend.advance(60))
        status, polled = await call(app, "GET", f"/api/v1/tasks/{task_id}")
        assert status == 200 and b'"task_status":3' in polled, polled
        return task_id, polled, created

    task_id, polled, created = asyncio.run(prepare())
    return app, task_id, polled, created


def main() -> None:
    rounds = int(os.environ.get("ROUNDS", "5"))
    n = int(os.environ.get("N", "5000"))
    app, task_id, polled, created = make_mockgen()
    os.environ["BENCH_GET_BODY"] = polled.decode()
    os.environ["BENCH_POST_BODY"] = created.decode()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bare

    results: dict[str, list[float]] = {k: [] for k in ("bare GET", "mockgen GET", "bare POST", "mockgen POST")}

    async def measure() -> None:
        path = f"/api/v1/tasks/{task_id}"
        for _ in range(rounds):
            results["bare GET"].append(await per_request_us(bare.app, "GET", path, b"", n))
            results["mockgen GET"].append(await per_request_us(app, "GET", path, b"", n))
            results["bare POST"].append(await per_request_us(bare.app, "POST", "/api/v1/tasks/create", BODY, n))
            results["mockgen POST"].append(await per_request_us(app, "POST", "/api/v1/tasks/create", BODY, n))

    asyncio.run(measure())
    for name, values in results.items():
        print(f"{name:<14} {statistics.median(values):7.1f} us/request")
    for route in ("GET", "POST"):
        ratio = statistics.median(results[f"mockgen {route}"]) / statistics.median(results[f"bare {route}"])
        print(f"{route}: mockgen costs {ratio:.2f}x the bare app")


if __name__ == "__main__":
    main()
