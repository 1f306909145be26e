"""One world on Redis against the memory store: requests/s, latency, server CPU and round trips a request.

    python benchmarks/redis_scale.py            # 3 rounds of 4 s a route and server (about 2 minutes)
    python benchmarks/redis_scale.py --quick    # 1 round of 1 s (a smoke run, about 30 s)

Three servers wait side by side, each one `mockgen serve` answering wrk's poll.lua and submit.lua (the
scripts of benchmarks/run, 32 keep-alive connections): the memory store with one worker; Redis with one
worker; Redis with `--workers 2` (a world of its own in the same Redis, under another prefix). wrk loads
one server at a time, in rotating order, for each route in each round; each ratio is taken within a round
and the medians over rounds are reported, as benchmarks/run does.

Pinning (2 cores): a one-worker server on the first core, redis-server and wrk on the second, so the
worker has a core to itself as in benchmarks/run; the two workers may use both cores (and share them
with redis-server and wrk: on two cores that is all there is).

Server-side CPU a request: utime + stime (/proc/PID/stat) of every process of the server (the
supervisor and its workers) plus redis-server's own, used during the run, over the requests wrk counted.
Round trips a request: for each route, a probe of sequential requests to the one-worker Redis server
with Redis's MONITOR on, counting the commands that clients sent (not those that scripts ran), named
by script; the table's column counts those the request waits for (not the journal's batch, written
after the answer).

Needs Linux (taskset, /proc), wrk and redis-server (apt-get install wrk redis-server). Not a test.
The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import resource
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from bench import KEY, SUBMIT_BODY, Server, cores, prepare_mockgen, verdict, wrk  # noqa: E402
from store_ops import cpu_seconds, redis_server  # noqa: E402

from mockgen.redis_journal import _APPEND  # noqa: E402
from mockgen.redis_store import _OWN_ARGV, _PRELUDE, _SCRIPTS  # noqa: E402

TARGETS = {"poll_ratio": 0.35, "submit_ratio": 0.30, "cpu_ratio": 3.0, "workers_ratio": 1.0}
CONFIGS = ("memory", "redis", "redis x2")  # the memory store, 1 worker; Redis, 1 worker; Redis, 2 workers
ROUTES = {"poll": "poll.lua", "submit": "submit.lua"}
SCRIPT_NAMES = {hashlib.sha1((_PRELUDE + source).encode()).hexdigest(): name for name, source in _SCRIPTS.items()} | {
    hashlib.sha1(source.encode()).hexdigest(): name for name, source in _OWN_ARGV.items()
}
# The journal's batch: written after the answer, off the request's way (one a request only when requests
# come one at a time, as in this probe; under load a batch carries many).
JOURNAL_BATCH = "journal batch (after the answer)"
SCRIPT_NAMES[hashlib.sha1(_APPEND.encode()).hexdigest()] = JOURNAL_BATCH


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (by the parent pid in /proc/*/stat)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """The CPU seconds each process has used so far (a process gone: 0)."""
    used = {}
    for name, pid in pids.items():
        try:
            used[name] = cpu_seconds(pid)
        except OSError:
            used[name] = 0.0
    return used


def server_processes(server: Server, redis_pid: int | None) -> dict[str, int]:
    """The processes whose CPU is the server's: its own (the supervisor, with workers), each worker, redis-server."""
    tree = process_tree(server.proc.pid)
    names = {"server": tree[0]} if len(tree) == 1 else {"supervisor": tree[0]}
    workers = 0
    for pid in tree[1:]:
        try:
            helper = b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if helper:  # multiprocessing's, beside spawned workers
            names["resource tracker"] = pid
        else:
            workers += 1
            names[f"worker {workers}"] = pid
    if redis_pid is not None:
        names["redis-server"] = redis_pid
    return names


def load(
    server: Server, redis_pid: int | None, core: str, script: str, seconds: int, connections: int, env: dict[str, str]
) -> dict[str, Any]:
    """One wrk run: its figures, with the server's CPU a request (us) and each process's share of a core."""
    pids = server_processes(server, redis_pid)
    before, wrk_before, t0 = cpu_of(pids), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    got: dict[str, Any] = wrk(core, server.base, script, seconds, connections, env, latency=True)
    after, wrk_after, elapsed = cpu_of(pids), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    used = {name: after[name] - before[name] for name in pids}
    used["wrk"] = wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime
    got["cpu_us"] = sum(v for k, v in used.items() if k != "wrk") / max(got["requests"], 1) * 1e6
    got["cores"] = {name: v / elapsed for name, v in used.items()}
    return got


class Monitor:
    """Redis's MONITOR on a connection of its own: the commands clients send while it runs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        self.file = self.sock.makefile("rb")
        if not self.file.readline().startswith(b"+OK"):
            raise RuntimeError("MONITOR was refused")
        self.lines: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.file:
                self.lines.append(line)
        except (OSError, ValueError):
            pass

    def stop(self) -> list[str]:
        """The commands seen (EVALSHA as the script's name), after a moment for the last to arrive."""
        time.sleep(0.2)
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
        names = []
        for line in self.lines:
            m = re.match(rb'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"(?: "([^"]+)")?', line)
            if m is None or m.group(1) == b"lua":  # (a command a script ran: no round trip)
                continue
            command = m.group(2).decode().lower()
            if command == "evalsha" and m.group(3):
                command = SCRIPT_NAMES.get(m.group(3).decode(), "evalsha ?")
            names.append(command)
        return names


def round_trips(server: Server, redis_port: int, env: dict[str, str], route: str, n: int) -> dict[str, float]:
    """The commands sent to Redis a request of ``route``, by name, over ``n`` sequential requests."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    body = json.dumps(SUBMIT_BODY)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    # The warm-up's tasks fall due 2 s after their submit: settled first (by a poll). (A request settles
    # what is due in its own first step, so tasks falling due would cost no round trip more anyway.)
    time.sleep(2.5)
    connection.request("GET", f"/api/v1/tasks/{env['BENCH_TASK_ID']}", headers=headers)
    connection.getresponse().read()
    monitor = Monitor(redis_port)
    try:
        for _ in range(n):
            if route == "poll":
                connection.request("GET", f"/api/v1/tasks/{env['BENCH_TASK_ID']}", headers=headers)
            else:
                connection.request("POST", "/api/v1/tasks/create", body=body, headers=headers)
            if json.loads(connection.getresponse().read())["code"] != 200:
                raise RuntimeError(f"the {route} probe was not answered with code 200")
    finally:
        names = monitor.stop()
        connection.close()
    return {name: count / n for name, count in sorted(Counter(names).items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds of wrk load per route, server and round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--probe", type=int, default=200, help="requests per route counted under MONITOR")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, a probe of 50: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.probe = 1, 1, 50
    server_core, load_core = cores()
    started = time.monotonic()
    print(
        f"redis_scale: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.rounds} round(s) of"
        f" {args.duration} s, {args.connections} connections; servers on core {server_core} (2 workers: both),"
        f" redis-server and wrk on core {load_core}",
        flush=True,
    )
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(c, r): [] for c in CONFIGS for r in ROUTES}
    ratios: dict[str, list[float]] = {}
    with redis_server(load_core) as (url, redis_pid):
        redis_port = int(url.rsplit(":", 1)[1].split("/")[0])
        servers: dict[str, Server] = {}
        envs: dict[str, dict[str, str]] = {}
        try:
            servers["memory"] = Server("mockgen", server_core)
            store = ["--store", url, "--store-prefix"]
            servers["redis"] = Server("mockgen", server_core, extra=[*store, "bench-1"])
            servers["redis x2"] = Server(
                "mockgen", f"{server_core},{load_core}", extra=[*store, "bench-2", "--workers", "2"]
            )
            for config, server in servers.items():
                envs[config] = prepare_mockgen(server)
            trips = {}
            # All the polls first: no task falls due during them (every submit's task settles by the
            # clock 2 s later, in whichever request comes then), so they measure a poll alone.
            for route, script in ROUTES.items():
                for config, server in servers.items():  # warm up (with two workers, both of them)
                    wrk(load_core, server.base, script, 1, args.connections, envs[config])
                trips[route] = round_trips(servers["redis"], redis_port, envs["redis"], route, args.probe)
                for r in range(args.rounds):
                    order = list(CONFIGS[r % 3 :] + CONFIGS[: r % 3])  # rotate, so no server always goes first
                    row = {}
                    for config in order:
                        pid = None if config == "memory" else redis_pid
                        row[config] = load(
                            servers[config], pid, load_core, script, args.duration, args.connections, envs[config]
                        )
                        runs[(config, route)].append(row[config])
                    ratios.setdefault(f"{route} redis/memory", []).append(row["redis"]["rps"] / row["memory"]["rps"])
                    ratios.setdefault(f"{route} cpu redis/memory", []).append(
                        row["redis"]["cpu_us"] / row["memory"]["cpu_us"]
                    )
                    ratios.setdefault(f"{route} workers 2/1", []).append(row["redis x2"]["rps"] / row["redis"]["rps"])
                    print(
                        f"  round {r + 1}/{args.rounds} {route}: "
                        + ", ".join(f"{c} {row[c]['rps']:,.0f}/s {row[c]['cpu_us']:.0f} us CPU" for c in CONFIGS),
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()

    def median(config: str, route: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[(config, route)])

    medians = {
        f"{config} {route}": {
            key: median(config, route, key) for key in ("rps", "p50_ms", "p99_ms", "cpu_us", "errors")
        }
        | {
            "cores": {
                name: statistics.median(run["cores"].get(name, 0.0) for run in runs[(config, route)])
                for name in runs[(config, route)][-1]["cores"]
            }
        }
        for config in CONFIGS
        for route in ROUTES
    }
    m = {name: statistics.median(values) for name, values in ratios.items()}

    print()
    print(
        f"{'server':<28} {'route':<7} {'req/s':>8} {'p50':>8} {'p99':>8} {'CPU/req':>9}  {'round trips':>11}  "
        "CPU of each process (share of a core)"
    )
    labels = {"memory": "memory store, 1 worker", "redis": "Redis, 1 worker", "redis x2": "Redis, --workers 2"}
    for route in ROUTES:
        for config in CONFIGS:
            row = medians[f"{config} {route}"]
            own = sum(n for name, n in trips[route].items() if name != JOURNAL_BATCH)  # (the request waits for these)
            trip = f"{own:.2f}" if config == "redis" else ""
            shares = ", ".join(f"{name} {share:.0%}" for name, share in row["cores"].items())
            print(
                f"{labels[config]:<28} {route:<7} {row['rps']:>8,.0f} {row['p50_ms']:>6.2f}ms {row['p99_ms']:>6.2f}ms"
                f" {row['cpu_us']:>7.0f}us  {trip:>11}  {shares}"
            )
    checks = [
        ("poll: Redis 1 worker / memory", m["poll redis/memory"], f">= {TARGETS['poll_ratio']:.2f}x",
         m["poll redis/memory"] >= TARGETS["poll_ratio"]),
        ("submit: Redis 1 worker / memory", m["submit redis/memory"], f">= {TARGETS['submit_ratio']:.2f}x",
         m["submit redis/memory"] >= TARGETS["submit_ratio"]),
        ("poll: CPU/request Redis / memory", m["poll cpu redis/memory"], f"<= {TARGETS['cpu_ratio']:.1f}x",
         m["poll cpu redis/memory"] <= TARGETS["cpu_ratio"]),
        ("submit: CPU/request Redis / memory", m["submit cpu redis/memory"], f"<= {TARGETS['cpu_ratio']:.1f}x",
         m["submit cpu redis/memory"] <= TARGETS["cpu_ratio"]),
        ("poll: Redis 2 workers / 1 worker", m["poll workers 2/1"], f"> {TARGETS['workers_ratio']:.1f}x",
         m["poll workers 2/1"] > TARGETS["workers_ratio"]),
        ("submit: Redis 2 workers / 1 worker", m["submit workers 2/1"], f"> {TARGETS['workers_ratio']:.1f}x",
         m["submit workers 2/1"] > TARGETS["workers_ratio"]),
    ]  # fmt: skip
    errors = sum(int(row["errors"]) for row in medians.values())
    print()
    print(f"{'ratio (median of rounds)':<36} {'value':>6}  {'target':<8} result")
    for name, value, target, ok in checks:
        print(f"{name:<36} {value:>5.2f}x  {target:<8} {verdict(ok)}")
    print(f"{'errors under load (non-2xx, socket)':<36} {errors:>6}  {'0':<8} {verdict(errors == 0)}")
    print()
    for route, names in trips.items():
        detail = ", ".join(f"{name} {count:.2f}" for name, count in names.items())
        print(f"round trips to Redis a {route} (1 worker, {args.probe} sequential requests): {detail}")
    passed = all(ok for *_, ok in checks) and errors == 0
    elapsed = time.monotonic() - started
    print(f"\n{'all targets met' if passed else 'SOME TARGETS MISSED'} ({os.cpu_count()} cores, {elapsed:.0f} s)")
    print(json.dumps({"medians": medians, "ratios": m, "round_trips": trips, "targets": TARGETS, "passed": passed}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
