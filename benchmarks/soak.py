"""Soak: keep a steady mix of submits and polls on one server for a few minutes; report requests
served, errors (must be 0) and RSS at the start and end (must stay within the retention footprint).

    benchmarks/soak                      # 3 minutes, --max-tasks 20000
    benchmarks/soak --minutes 10 --max-tasks 100000

The server runs with a small --max-tasks so that retention is reached early: from then on the
oldest finished tasks are dropped as new ones arrive, and memory must stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from bench import HERE, KEY, Server, cores, http

BYTES_PER_TASK = 1024  # the budget per retained task, ledger entry included (measured: about 600)
JOURNAL_BYTES = 10_000 * 2048  # the journal's 10,000 newest requests
MIB = 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--max-tasks", type=int, default=20_000)
    parser.add_argument("--step", type=int, default=15, help="seconds between RSS samples")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    server_core, load_core = cores()
    server = Server("mockgen", server_core, extra=["--max-tasks", str(args.max_tasks)])
    try:
        http("POST", f"{server.base}/_mock/accounts", {"credits": 10**15, "key": KEY})
        idle = server.rss_kib() * 1024
        steps = max(2, int(args.minutes * 60 / args.step))
        served = errors = 0
        samples = []
        print(f"soak: {steps * args.step} s of mixed load (1 submit : 4 polls), --max-tasks {args.max_tasks:,}")
        for i in range(steps):
            cmd = ["taskset", "-c", load_core, "wrk", "-t1", f"-c{args.connections}", f"-d{args.step}s"]
            out = subprocess.run(
                [*cmd, "-s", str(HERE / "mixed.lua"), server.base],
                capture_output=True, text=True, check=True, env={**os.environ, "BENCH_KEY": KEY},
            ).stdout  # fmt: skip
            requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
            bad = int(re.search(r"bad answers: (\d+)", out).group(1))  # type: ignore[union-attr]
            socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            bad += sum(int(g) for g in socket.groups()) if socket else 0
            served += requests
            errors += bad
            rss = server.rss_kib() * 1024
            samples.append(rss)
            rate = requests / args.step
            print(f"  {(i + 1) * args.step:>4} s  {rate:>7,.0f} req/s  errors {bad}  RSS {rss / MIB:6.1f} MiB")
        tasks = len(json.loads(http("GET", f"{server.base}/_mock/tasks")[1]))
    finally:
        server.stop()

    start, end = samples[0], samples[-1]
    budget = args.max_tasks * BYTES_PER_TASK + JOURNAL_BYTES
    half = samples[len(samples) // 2]
    flat = end <= half * 1.05
    ok = errors == 0 and end - start <= budget and flat and tasks <= args.max_tasks
    print()
    print(f"requests served   {served:,} ({served / (steps * args.step):,.0f}/s), on {os.cpu_count()} cores")
    print(f"errors            {errors}  (must be 0)")
    print(f"tasks kept        {tasks:,}  (--max-tasks {args.max_tasks:,})")
    print(f"RSS idle          {idle / MIB:.1f} MiB (before any load)")
    print(f"RSS start / end   {start / MIB:.1f} MiB / {end / MIB:.1f} MiB  (growth {(end - start) / MIB:+.1f} MiB)")
    print(f"  allowed growth  {budget / MIB:.1f} MiB (retention footprint); second half {(end - half) / MIB:+.1f} MiB")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
