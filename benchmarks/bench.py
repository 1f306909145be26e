"""Run mockgen's benchmarks and print each figure, its reference from the same run, and pass/fail.

    benchmarks/run                       # everything, 5 rounds (about 6 minutes; 1.5 more for instructions)
    benchmarks/run --only throughput --rounds 3 --duration 5
    benchmarks/run --only scale,startup,clock
    benchmarks/run --only instructions   # callgrind: needs valgrind

Throughput: one uvicorn worker (uvloop, httptools, no access log) pinned to one core with
taskset, wrk (keep-alive, loopback) pinned to another. Each round serves the same requests from
mockgen, from a bare Starlette app answering the same JSON bytes (the reference) and from a raw
ASGI callable (for scale); the ratio is taken within the round and the median over rounds is
reported, so a busy machine moves both sides together.

Instructions (if valgrind is installed): the same two routes, one server at a time under
callgrind, counting the server's instructions per request (see instructions.py): repeatable
where req/s is not, and leaving out kernel time.

Needs Linux (taskset, /proc) and wrk (`apt-get install wrk`). Not a test: run it by hand or in
CI's optional step (MOCKGEN_BENCH=1 .ci/run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
KEY = "sk-" + "B" * 32
SUBMIT_BODY = {"model_id": "gpt-image-2", "prompt": "a serene zen garden at sunrise", "aspect_ratio": "16:9"}

TARGETS = {
    "poll_ratio": 0.75,
    "submit_ratio": 0.60,
    "scale_latency": 1.20,
    "bytes_per_task": 600,
    "startup_s": 0.5,
    "advance_s": 1.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cores() -> tuple[str, str]:
    """The server's core and the load generator's core (the first two this process may use)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        sys.exit("benchmarks/run needs at least two cores (server and wrk on separate cores)")
    return str(allowed[0]), str(allowed[1])


def http(method: str, url: str, body: Any = None, key: str | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> float:
    """Seconds until ``url`` first answers 200 (polling every millisecond)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.001)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


class Server:
    """One server process pinned to a core; ``kind`` is mockgen, bare (Starlette) or raw (ASGI)."""

    def __init__(
        self,
        kind: str,
        core: str,
        env: dict[str, str] | None = None,
        extra: list[str] | None = None,
        wrapper: list[str] | None = None,
        up_timeout: float = 20.0,
    ):
        """``wrapper`` goes between taskset and the interpreter (valgrind, say: it must exec the
        interpreter itself, so ``self.proc.pid`` stays the process that serves); ``up_timeout`` is
        how long to wait for the first 200."""
        self.kind = kind
        self.stop_timeout = 10.0 if not wrapper else 120.0
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        uvicorn_flags = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        if kind == "mockgen":
            cmd = [PYTHON, "-m", "mockgen", "serve", "--port", str(self.port), *(extra or [])]
            self.health = f"{self.base}/_mock/health"
        else:
            app = "bare:app" if kind == "bare" else "bare:raw"
            cmd = [PYTHON, "-m", "uvicorn", app, "--app-dir", str(HERE), "--port", str(self.port), *uvicorn_flags]
            self.health = f"{self.base}/api/v1/tasks/up"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            ["taskset", "-c", core, *(wrapper or []), *cmd],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            self.startup = wait_until_up(self.health, self.proc, up_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss_kib(self) -> int:
        """RSS of the server (the python process under taskset, which execs in place)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}  # wrk's latency units, in milliseconds


def wrk(
    core: str, base: str, script: str, seconds: int, connections: int, env: dict[str, str], latency: bool = False
) -> dict[str, float]:
    """wrk's requests/s and errors (non-2xx and socket errors); with ``latency``, also the requests
    it counted and its p50 and p99 latency in milliseconds (``--latency``)."""
    cmd = ["taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(HERE / script), base]
    if latency:
        cmd.insert(-1, "--latency")
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    bad += sum(int(g) for g in errors.groups()) if errors else 0
    got = {"rps": rps, "errors": bad}
    if latency:
        got["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        for q in ("50", "99"):
            value, unit = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
            got[f"p{q}_ms"] = float(value) * WRK_UNITS[unit]
    return got


def prepare_mockgen(server: Server, timeout: float = 10.0) -> dict[str, str]:
    """A rich account and one finished task to poll: wrk's environment, and the answers' bytes.
    ``timeout``: seconds to wait for the task to finish (longer for a server under valgrind)."""
    http("POST", f"{server.base}/_mock/accounts", {"credits": 10**15, "key": KEY})
    status, created = http("POST", f"{server.base}/api/v1/tasks/create", SUBMIT_BODY, KEY)
    task_id = json.loads(created)["data"]["task_id"]
    deadline = time.monotonic() + timeout
    while True:  # real clock: the default scenario finishes an image in 2 s
        status, polled = http("GET", f"{server.base}/api/v1/tasks/{task_id}", key=KEY)
        if json.loads(polled)["data"]["task_status"] == 3:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark task did not finish")
        time.sleep(0.1)
    return {
        "BENCH_KEY": KEY,
        "BENCH_TASK_ID": task_id,
        "BENCH_GET_BODY": polled.decode(),
        "BENCH_POST_BODY": created.decode(),
    }


def throughput(rounds: int, seconds: int, connections: int) -> dict[str, Any]:
    """All three servers wait on the same core; wrk loads one at a time, in short turns, so each
    ratio compares figures taken seconds apart (the machine's other load changes slower than that)."""
    server_core, load_core = cores()
    servers: dict[str, Server] = {}
    try:
        servers["mockgen"] = Server("mockgen", server_core)
        env = prepare_mockgen(servers["mockgen"])
        servers["bare"] = Server("bare", server_core, env=env)
        servers["raw"] = Server("raw", server_core, env=env)
        for server in servers.values():  # warm up every route
            for script in ("poll.lua", "submit.lua"):
                wrk(load_core, server.base, script, 1, connections, env)
        results: dict[str, list[float]] = {}
        errors = 0
        kinds = ["bare", "mockgen", "raw"]
        for r in range(rounds):
            order = kinds[r % 3 :] + kinds[: r % 3]  # rotate, so no server always goes first
            row: dict[str, float] = {}
            for route, script in (("GET", "poll.lua"), ("POST", "submit.lua")):
                for kind in order:
                    got = wrk(load_core, servers[kind].base, script, seconds, connections, env)
                    row[f"{kind} {route}"] = got["rps"]
                    errors += int(got["errors"])
            for name, value in row.items():
                results.setdefault(name, []).append(value)
            results.setdefault("poll ratio", []).append(row["mockgen GET"] / row["bare GET"])
            results.setdefault("submit ratio", []).append(row["mockgen POST"] / row["bare POST"])
            print(
                f"  round {r + 1}/{rounds}: "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in sorted(row.items()))
                + f"; poll {results['poll ratio'][-1]:.0%}, submit {results['submit ratio'][-1]:.0%}",
                flush=True,
            )
        rss = servers["mockgen"].rss_kib()
    finally:
        for server in servers.values():
            server.stop()
    medians = {k: statistics.median(v) for k, v in results.items()}
    return {"medians": medians, "runs": results, "errors": errors, "mockgen_rss_kib": rss}


def startup(rounds: int) -> dict[str, Any]:
    server_core, _ = cores()
    times: dict[str, list[float]] = {"mockgen": [], "bare": []}
    for _ in range(rounds):
        for kind in times:
            server = Server(kind, server_core)
            times[kind].append(server.startup)
            server.stop()
    return {"medians": {k: statistics.median(v) for k, v in times.items()}, "runs": times}


def in_process(script: str, *args: str) -> dict[str, Any]:
    """Run a benchmark script; its last line of stdout is its JSON (its stderr, progress, shows)."""
    out = subprocess.run(
        [PYTHON, str(HERE / script), *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=int, default=3, help="seconds of wrk load per route and round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks in memory for the scale figures")
    parser.add_argument("--ir-requests", type=int, default=2000, help="measured requests per route (instructions)")
    parser.add_argument("--ir-warmup", type=int, default=200, help="warm-up requests per route (instructions)")
    # The instructions section runs the servers under valgrind's callgrind: by default only where it is installed.
    have_valgrind = bool(shutil.which("valgrind") and shutil.which("callgrind_control"))
    default_only = "throughput,scale,startup,clock" + (",instructions" if have_valgrind else "")
    parser.add_argument("--only", default=default_only)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    rows: list[tuple[str, str, str, str]] = []  # figure, value, reference / target, verdict
    failed = False

    print(f"mockgen benchmarks: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.rounds} rounds")
    if not have_valgrind and ("instructions" in parts or args.only == default_only):
        print("instructions: skipped (needs valgrind and callgrind_control: apt-get install valgrind)")
        parts.discard("instructions")
    if "throughput" in parts:
        print("throughput (wrk):", flush=True)
        t = throughput(args.rounds, args.duration, args.connections)
        m = t["medians"]
        for route, key, target in (("GET", "poll_ratio", "poll ratio"), ("POST", "submit_ratio", "submit ratio")):
            ok = m[target] >= TARGETS[key]
            failed |= not ok
            name = "poll  GET /api/v1/tasks/{id}" if route == "GET" else "submit POST /api/v1/tasks/create"
            rows.append(
                (f"{name} req/s", f"{m[f'mockgen {route}']:,.0f}", f"bare Starlette {m[f'bare {route}']:,.0f}", "")
            )
            rows.append(("  ratio to bare Starlette", f"{m[target]:.0%}", f">= {TARGETS[key]:.0%}", verdict(ok)))
            rows.append(("  raw ASGI, for scale", f"{m[f'raw {route}']:,.0f}", "", ""))
        ok = t["errors"] == 0
        failed |= not ok
        rows.append(("errors under load (non-2xx, socket)", str(t["errors"]), "0", verdict(ok)))
    if "scale" in parts:
        print(f"scale ({args.tasks:,} tasks in memory, in-process):", flush=True)
        s = in_process("scale.py", "--tasks", str(args.tasks))
        for q in ("p50", "p99"):
            ratio = s[f"big_{q}_us"] / s[f"small_{q}_us"]
            ok = ratio <= TARGETS["scale_latency"]
            failed |= not ok
            rows.append(
                (
                    f"poll {q} with {s['big_tasks']:,} tasks",
                    f"{s[f'big_{q}_us']:.1f} us",
                    f"{s[f'small_{q}_us']:.1f} us with {s['small_tasks']:,}",
                    "",
                )
            )
            rows.append(("  ratio", f"{ratio:.2f}x", f"<= {TARGETS['scale_latency']:.2f}x", verdict(ok)))
        ok = s["bytes_per_task"] < TARGETS["bytes_per_task"]
        failed |= not ok
        rows.append(
            (
                "RSS growth per stored task",
                f"{s['bytes_per_task']:.0f} B",
                f"< {TARGETS['bytes_per_task']} B",
                verdict(ok),
            )
        )
    if "startup" in parts:
        print("startup:", flush=True)
        st = startup(args.rounds)["medians"]
        ok = st["mockgen"] < TARGETS["startup_s"]
        failed |= not ok
        rows.append(
            (
                "start to first 200 on /_mock/health",
                f"{st['mockgen']:.2f} s",
                f"< {TARGETS['startup_s']} s",
                verdict(ok),
            )
        )
        rows.append(
            ("  bare uvicorn app, same measure", f"{st['bare']:.2f} s", f"ratio {st['mockgen'] / st['bare']:.2f}x", "")
        )
    if "clock" in parts:
        print("manual clock:", flush=True)
        c = in_process("clock.py")
        ok = c["advance_s"] < TARGETS["advance_s"]
        failed |= not ok
        rows.append(
            (
                f"advance finishing {c['tasks']:,} tasks",
                f"{c['advance_s']:.3f} s",
                f"< {TARGETS['advance_s']} s",
                verdict(ok),
            )
        )
        rows.append(("  submitting them (in-process ASGI)", f"{c['submit_s']:.3f} s", "", ""))

    if "instructions" in parts:
        print(f"instructions (callgrind, {args.ir_requests} requests per route after {args.ir_warmup}):", flush=True)
        ir = in_process("instructions.py", "--requests", str(args.ir_requests), "--warmup", str(args.ir_warmup))
        for route, key in (("GET", "poll_ratio"), ("POST", "submit_ratio")):
            ok = ir[route]["ratio"] >= TARGETS[key]
            failed |= not ok
            name = "poll  GET instructions/request" if route == "GET" else "submit POST instructions/request"
            rows.append((name, f"{ir[route]['mockgen']:,.0f}", f"bare Starlette {ir[route]['bare']:,.0f}", ""))
            rows.append(("  ratio bare/mockgen", f"{ir[route]['ratio']:.0%}", f">= {TARGETS[key]:.0%}", verdict(ok)))

    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    print()
    print(f"{'figure':<{widths[0]}}  {'value':>{widths[1]}}  {'reference / target':<{widths[2]}}  result")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    print(f"\n{'all targets met' if not failed else 'SOME TARGETS MISSED'} ({os.cpu_count()} cores)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
