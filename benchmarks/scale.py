"""Poll latency with few and with many tasks in memory, and the memory each stored task costs.

Prints one JSON line. In-process (ASGI calls, no sockets), so the figures are the app's own cost:
the part that could grow with the number of tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from inproc import KEY, scope

from mockgen import create_app
from mockgen.http import parse_json
from mockgen.store import run_now

PROMPT = "a serene zen garden at sunrise, seen from a wooden bridge"  # 56 characters, a typical prompt


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def fill(app: Any, count: int) -> None:
    """``count`` tasks submitted as the API does: parsed from JSON (so every string is the client's
    own), validated, charged (a ledger entry each), scheduled; the clock moves on every thousand,
    as time does on a real server, so they finish while others arrive."""
    backend = app.state.backend
    account = run_now(backend.authenticate(f"Bearer {KEY}"))
    for i in range(count):
        raw = b'{"model_id": "gpt-image-2", "prompt": "%s %d"}' % (PROMPT.encode(), i)
        run_now(backend.submit(account, backend.validate(parse_json(raw))))
        if i % 1000 == 999:
            run_now(backend.advance(10))
    run_now(backend.advance(3600))  # every task finished: the steady state of a long-running server


def new_app(max_tasks: int) -> Any:
    app = create_app("default", clock="manual", max_tasks=max_tasks)
    run_now(app.state.backend.create_account(10**15, KEY))
    return app


async def latencies(apps: list[tuple[Any, list[str]]], samples: int, rng: random.Random) -> list[list[float]]:
    """Poll latencies of each app, sample by sample in turn, so a busy machine slows them alike."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    out: list[list[float]] = [[] for _ in apps]
    clock = time.perf_counter_ns
    for _ in range(samples):
        for (app, ids), values in zip(apps, out, strict=True):
            s = scope("GET", f"/api/v1/tasks/{ids[rng.randrange(len(ids))]}")  # random tasks: cold caches too
            start = clock()
            await app(s, receive, send)
            values.append((clock() - start) / 1000)
    return out


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    small = new_app(args.small)
    fill(small, args.small)
    small_ids = [t.task_id for t in run_now(small.state.backend.store.tasks())]

    big = new_app(args.tasks)
    fill(big, 1_000)  # warm every lazy path before the baseline
    gc.collect()
    before = rss_bytes()
    fill(big, args.tasks - 1_000)
    gc.collect()
    after = rss_bytes()
    big_ids = [t.task_id for t in run_now(big.state.backend.store.tasks())]
    assert len(big_ids) == args.tasks

    rng = random.Random(1)
    figures: dict[str, list[float]] = {"small_p50": [], "small_p99": [], "big_p50": [], "big_p99": []}

    async def measure() -> None:
        apps = [(small, small_ids), (big, big_ids)]
        await latencies(apps, 2_000, rng)
        for _ in range(args.rounds):
            for name, values in zip(("small", "big"), await latencies(apps, args.samples, rng), strict=True):
                figures[f"{name}_p50"].append(quantile(values, 0.50))
                figures[f"{name}_p99"].append(quantile(values, 0.99))

    asyncio.run(measure())
    result = {f"{k}_us": statistics.median(v) for k, v in figures.items()}
    result.update(
        small_tasks=args.small,
        big_tasks=args.tasks,
        bytes_per_task=(after - before) / (args.tasks - 1_000),
        rss_mib=after / 2**20,
        prompt_chars=len(PROMPT) + 7,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
