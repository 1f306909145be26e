"""The manual clock at scale: 10,000 tasks submitted through the API, then one advance finishes them all.

Prints one JSON line. In-process ASGI calls; half the tasks fail, so the advance also refunds.
"""

from __future__ import annotations

import asyncio
import json
import time

from inproc import KEY, call

from mockgen import create_app
from mockgen.store import run_now

TASKS = 10_000


async def main() -> dict[str, float]:
    app = create_app("default", clock="manual")
    backend = app.state.backend
    run_now(backend.create_account(TASKS * 15, KEY))
    start = time.perf_counter()
    for i in range(TASKS):
        prompt = f"task {i} [fail]" if i % 2 else f"task {i}"
        body = json.dumps({"model_id": "gpt-image-2", "prompt": prompt}).encode()
        status, answer = await call(app, "POST", "/api/v1/tasks/create", body)
        assert status == 200 and b'"code":200' in answer, answer
    submitted = time.perf_counter()
    status, answer = await call(app, "POST", "/_mock/clock/advance", b'{"seconds": 60}')
    advanced = time.perf_counter()
    assert status == 200, answer
    statuses = [t.final_status for t in run_now(backend.store.tasks())]
    assert statuses.count(3) == TASKS // 2 and statuses.count(4) == TASKS // 2
    assert run_now(backend.store.get_account(KEY)).credits == TASKS // 2 * 15
    return {"tasks": TASKS, "submit_s": submitted - start, "advance_s": advanced - submitted}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
