"""Store steps per second, MemoryStore vs RedisStore: N submits, then N get_task and N count_poll.

Each step is timed one at a time (one in flight: a request's latency) and then with ``--concurrency``
in flight (how a busy server's event loop issues them). Without ``--url`` it starts a
``redis-server`` of its own on a free loopback port (``--save '' --appendonly no``) and stops it after.

    python benchmarks/store_ops.py [--n 20000] [--concurrency 64] [--url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mockgen.models import Account, Plan, Task  # noqa: E402
from mockgen.redis_store import RedisStore  # noqa: E402
from mockgen.store import MemoryStore, Store  # noqa: E402

PLAN = Plan("gpt-image-2", "image", 15, "success", "")
KEY = "sk-" + "b" * 32


def make_task(i: int) -> Task:
    now = 1_700_000_000.0 + i / 1000
    return Task(PLAN, f"t{i:011}", KEY, "a serene zen garden at sunrise", "16:9", (), now, f"kie_{i:012}",
                now + 1, now + 6)  # fmt: skip


def pinned_core() -> str | None:
    """The last core, where redis-server goes on two cores or more (None: no taskset, or one core)."""
    return str(os.cpu_count() - 1) if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else None


@contextmanager
def redis_server(core: str | None = None) -> Iterator[tuple[str, int]]:
    """A redis-server of our own on a free loopback port, nothing saved, pinned to ``core`` (if any):
    its URL and pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install -y redis-server), or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="mockgen-bench-redis-")
    pin = ["taskset", "-c", core] if core is not None else []
    process = subprocess.Popen(
        [
            *pin,
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


Figures = tuple[float, float, float, float, float]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """The user and system CPU a process has used (/proc), 0 for none."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def timed(n: int, step: Callable[[int], Awaitable[Any]], concurrency: int, server: int | None) -> Figures:
    """(steps per second, p50 us, p99 us, this process's CPU us a step, redis-server's) of ``step(0..n-1)``,
    ``concurrency`` in flight. The CPU figures are the steadier ones on a busy machine: they do not count
    waiting (redis-server's only when this script started it: ``server`` is its pid)."""
    latencies: list[float] = []
    clock = time.perf_counter

    async def worker(start: int) -> None:
        for i in range(start, n, concurrency):
            t0 = clock()
            await step(i)
            latencies.append(clock() - t0)

    t0, cpu, server_cpu = clock(), time.process_time(), cpu_seconds(server)
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed, cpu, server_cpu = clock() - t0, time.process_time() - cpu, cpu_seconds(server) - server_cpu
    q = statistics.quantiles(latencies, n=100)
    return n / elapsed, q[49] * 1e6, q[98] * 1e6, cpu / n * 1e6, server_cpu / n * 1e6


async def measure(store: Store, n: int, concurrency: int, server: int | None = None) -> dict[str, Figures]:
    await store.clear()
    await store.add_account(Account(KEY, 15 * 4 * n))
    tasks = [make_task(i) for i in range(2 * n)]
    ids = [t.task_id for t in tasks]
    figures = {}
    for label, c, offset in (("1 in flight", 1, 0), (f"{concurrency} in flight", concurrency, n)):
        figures[f"submit, {label}"] = await timed(n, lambda i, o=offset: store.submit(tasks[o + i]), c, server)
        figures[f"get_task, {label}"] = await timed(n, lambda i: store.get_task(ids[i]), c, server)
        figures[f"count_poll, {label}"] = await timed(n, lambda i: store.count_poll(ids[i]), c, server)
    await store.clear()
    return figures


async def main(n: int, concurrency: int, url: str, server: int | None = None) -> None:
    memory = await measure(MemoryStore(), n, concurrency)
    store = RedisStore(url, "mockgen-bench")
    try:
        shared = await measure(store, n, concurrency, server)
    finally:
        await store.close()
    load = os.getloadavg()[0]
    print(f"{n:,} steps each; Python {sys.version.split()[0]}, {os.cpu_count()} cores, load {load:.1f}; Redis at {url}")
    print(
        f"{'step':<22} {'memory ops/s':>12} {'redis ops/s':>11} {'ratio':>6} {'redis p50':>9} {'redis p99':>9}"
        f" {'CPU/step: memory':>16} {'client':>7} {'redis-server':>12}"
    )
    for name, (ops, _, _, cpu, _) in memory.items():
        rops, p50, p99, rcpu, scpu = shared[name]
        print(
            f"{name:<22} {ops:>12,.0f} {rops:>11,.0f} {rops / ops:>6.3f} {p50:>7.0f}us {p99:>7.0f}us"
            f" {cpu:>14.1f}us {rcpu:>5.0f}us {scpu if server else float('nan'):>10.0f}us"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="steps of each kind (default 20,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="steps in flight in the second pass (64)")
    parser.add_argument("--url", help="a Redis to use (default: start one of our own)")
    args = parser.parse_args()
    if args.url:
        asyncio.run(main(args.n, args.concurrency, args.url))
    else:
        core = pinned_core()
        if core is not None:  # redis-server on the last core, this process on the first (as benchmarks/run pins)
            os.sched_setaffinity(0, {0})
        with redis_server(core) as (url, pid):
            asyncio.run(main(args.n, args.concurrency, url, pid))
