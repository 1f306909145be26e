"""Instructions per request, counted by callgrind: a repeatable stand-in for the throughput ratio.

    python benchmarks/instructions.py [--requests N] [--warmup W]

Why: on a small shared VM wall-clock throughput is noisy (the same server's req/s moves by a
third between runs), and hardware counters (perf) may not be available. Valgrind's callgrind
counts the instructions a process executes, which hardly depends on what else the machine does.

What it counts: the user-space instructions (Ir) of the server process -- interpreter, C
extensions (uvloop, httptools), libc -- while it answers N requests sent one after another over
ONE keep-alive connection, after W warm-up requests on that same connection (so imports, first
calls and caches are out of the figure). The counters are zeroed (callgrind_control -z) just
before the N requests and dumped (callgrind_control -d) just after; per-request cost is the total
over N. The requests are wrk's (poll.lua, submit.lua): the same path, headers and body. Every
answer must be a 200 with code 200 in its JSON, so an error path is never measured.
mockgen is compared with the bare Starlette app (bare.py) answering the same JSON bytes.

What it leaves out: kernel time (the socket reads and writes, which both servers pay alike: on
that count alone the ratio bare/mockgen would be a conservative stand-in for wrk's), cache misses,
branch mispredictions and memory stalls (an instruction is an instruction), and what 32 concurrent
connections change. So it is a repeatable figure to compare commits by, not a prediction of req/s
(it has come out above wrk's ratios here: benchmarks/README.md), and it repeats (each figure within
0.4% between runs) where wrk's moves by a fifth. What it keeps: garbage
collection runs are instructions too, so their cost is spread over the N requests; so is the
event loop's own idle work in that time (uvicorn ticks ten times a second of wall time: ~0.2 M
instructions a second under callgrind, under 1% of a figure, paid by both servers; uvloop's four
libuv worker threads sit idle).

Each server runs under valgrind with PYTHONHASHSEED=0, pinned to one core; starting one takes
~20 s, and the whole run about 1.5 minutes with the defaults. The last line of output is JSON
(for bench.py); the human-readable lines go to stderr.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import KEY, PYTHON, SUBMIT_BODY, Server, cores, prepare_mockgen  # noqa: E402

UP_TIMEOUT = 180.0  # seconds from start to the first 200, under valgrind
TASK_TIMEOUT = 120.0  # seconds for prepare_mockgen's task to finish, under valgrind
# A dump's "summary:" line is its total (what callgrind_annotate calls PROGRAM TOTALS). Its "totals:"
# line, the sum of the cost lines, can run higher in the first dump after a zeroing (3.5 M extra
# seen here), so it is the fallback only, for a dump with no summary.
SUMMARY = re.compile(rb"^summary:\s+(\d+)", re.MULTILINE)
TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def total_ir(outdir: Path, kind: str, pid: int, before: set[Path]) -> int:
    """The Ir total of the dump callgrind_control -d just wrote (waiting for it to be complete)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = [p for p in outdir.glob(f"{kind}.{pid}.*") if p not in before and not p.name.endswith(".log")]
        if new:
            newest = max(new, key=lambda p: int(p.name.rsplit(".", 1)[1]))
            dump = newest.read_bytes()
            if TOTALS.search(dump):  # written last: the dump is complete
                return int((SUMMARY.search(dump) or TOTALS.search(dump)).group(1))  # type: ignore[union-attr]
        time.sleep(0.1)
    raise RuntimeError(f"no callgrind dump with a totals line appeared in {outdir} for pid {pid}")


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def measure(server: Server, outdir: Path, route: str, path: str, warmup: int, requests: int) -> float:
    """Instructions per request for ``requests`` requests on one keep-alive connection."""
    body = json.dumps(SUBMIT_BODY).encode() if route == "POST" else None
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)

    def send() -> None:
        # wrk's headers: Host, Authorization and, for the submit, Content-Type and Content-Length
        # (http.client's own Accept-Encoding is left out).
        conn.putrequest(route, path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {KEY}")
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200 or json.loads(data).get("code") != 200:
            raise RuntimeError(f"{server.kind} {route} {path} answered {response.status}: {data[:300]!r}")
        if response.will_close:
            raise RuntimeError(f"{server.kind} {route} {path} closed the keep-alive connection")

    try:
        for _ in range(warmup):
            send()
        pid = server.proc.pid  # valgrind's: taskset and valgrind both exec in place
        before = set(outdir.glob(f"{server.kind}.{pid}.*"))
        callgrind_control("-z", str(pid))
        for _ in range(requests):
            send()
        callgrind_control("-d", str(pid))
        return total_ir(outdir, server.kind, pid, before) / requests
    finally:
        conn.close()


def run(requests: int, warmup: int) -> dict[str, Any]:
    with open(PYTHON, "rb") as f:  # valgrind must start the interpreter, not a shim script (pyenv's)
        if f.read(4) != b"\x7fELF":
            sys.exit(f"{PYTHON} is not an ELF binary: run this with the real interpreter")
    server_core, _ = cores()
    outdir = Path(tempfile.mkdtemp(prefix="mockgen-callgrind-"))
    env = {"PYTHONHASHSEED": "0"}
    figures: dict[str, dict[str, float]] = {"GET": {}, "POST": {}}
    try:
        for kind in ("mockgen", "bare"):
            wrapper = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={outdir}/{kind}.%p",
                f"--log-file={outdir}/{kind}.%p.log",
            ]
            started = time.perf_counter()
            server = Server(kind, server_core, env=env, wrapper=wrapper, up_timeout=UP_TIMEOUT)
            try:
                say(f"  {kind}: up under valgrind in {server.startup:.0f} s")
                if kind == "mockgen":
                    env = {**env, **prepare_mockgen(server, timeout=TASK_TIMEOUT)}
                for route in ("GET", "POST"):
                    path = f"/api/v1/tasks/{env['BENCH_TASK_ID']}" if route == "GET" else "/api/v1/tasks/create"
                    t0 = time.perf_counter()
                    figures[route][kind] = measure(server, outdir, route, path, warmup, requests)
                    say(
                        f"  {kind} {route}: {figures[route][kind]:,.0f} instructions/request "
                        f"({requests} requests in {time.perf_counter() - t0:.0f} s)"
                    )
            finally:
                server.stop()
            say(f"  {kind}: {time.perf_counter() - started:.0f} s in all")
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    for route, row in figures.items():
        row["ratio"] = row["bare"] / row["mockgen"]
        say(
            f"  {route}: mockgen {row['mockgen']:,.0f}, bare Starlette {row['bare']:,.0f} instructions/request; "
            f"bare/mockgen {row['ratio']:.1%}"
        )
    return {**figures, "n": requests, "warmup": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server and route")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the counters are zeroed")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install valgrind util-linux)")
    started = time.perf_counter()
    result = run(args.requests, args.warmup)
    result["seconds"] = round(time.perf_counter() - started, 1)
    say(f"  {result['seconds']:.0f} s wall time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
