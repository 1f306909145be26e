"""Abuse: each kind of attack of issue 11 against a fresh `mockgen serve`, and what the server does.

    benchmarks/abuse                          # every attack, about 2 to 3 minutes
    benchmarks/abuse --only yaml-bomb,regex   # some of them (the names are in the table's first column)
    benchmarks/abuse --quick                  # every count cut about 20 times: a smoke run

Each attack starts its own server (127.0.0.1, a free port, pinned to one core with taskset when
there are two), runs bounded in count and time from a raw asyncio HTTP/1.1 client (keep-alive, on
the other core), while another process polls GET /_mock/health over its own connection every
20 ms and keeps the worst latency; then the server's RSS is read from /proc/PID/status. One row
per attack: the server's answer, health's worst latency, RSS after, the bound, PASS or FAIL.
A traceback in the server's log fails its row, as a 500 does. Exit status 1 if any row fails.

Bounds: the README's "Limits" table where it states one; otherwise health answers within 250 ms
(1 s around a big state export or import), RSS stays under 300 MiB, nothing answers 500, and
what issue 11 says must be refused is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bench import PYTHON, ROOT, free_port, wait_until_up

HEALTH_MS = 250.0  # health's worst latency during an attack
HEALTH_BIG_MS = 1000.0  # ... during a big state export or import
RSS_MIB = 300.0  # the server's RSS after an attack
# ... after importing a 100,000-task state (a 69 MiB body): its text, the parsed JSON and the new world
# are alive at once beside the old world, about 5x the body at the peak, which RSS keeps (README, Limits).
IMPORT_RSS_MIB = 512.0
JOURNAL_FULL_MIB = 96.0  # a journal at its 64 MiB byte bound (README, Limits), with room for the allocator
JOURNAL_GROWTH_MIB = 64.0  # the journal's share of RSS: soak.py's budget for it (20 MiB), with room for the allocator
HEALTH_TIMEOUT = 30.0  # one health poll that takes longer is given up (and counts as that long)
SERVER_MEMORY = 4 * 2**30  # address space a server may take: a runaway attack fails there, not the machine
MIB = 2**20
KEY = "sk-" + "A" * 32  # a rich account, made by each attack that needs one
OTHER = "sk-" + "Z" * 32  # a key that never submits
SUBMIT = b'{"model_id": "gpt-image-2", "prompt": "a serene zen garden at sunrise"}'


# --- the server under attack, and health meanwhile ---------------------------------------------------


def _cores() -> tuple[str | None, str | None]:
    """The server's core and the attacker's (None, None when there are not two to keep apart)."""
    allowed = sorted(os.sched_getaffinity(0))
    return (str(allowed[0]), str(allowed[1])) if len(allowed) >= 2 else (None, None)


def _limit_memory() -> None:  # in the server's process, before it starts
    resource.setrlimit(resource.RLIMIT_AS, (SERVER_MEMORY, SERVER_MEMORY))


class Target:
    """A fresh `mockgen serve` on 127.0.0.1 and a free port; its log kept in a temporary file."""

    def __init__(self, extra: list[str], core: str | None) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        cmd = [PYTHON, "-m", "mockgen", "serve", "--host", "127.0.0.1", "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(
            (["taskset", "-c", core] if core else []) + cmd,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=self.log, preexec_fn=_limit_memory,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{self.port}/_mock/health", self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n{self.log_text()}") from None

    def rss_mib(self) -> float:
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def tracebacks(self) -> int:
        return self.log_text().count("Traceback (most recent call last)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def poll_health(port: int, interval: float = 0.02) -> None:
    """The health poller's process: poll until stdin closes, then print the worst latency as JSON."""
    stop = threading.Event()

    def until_stdin_closes() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    worst, polls, bad = 0.0, 0, Counter[str]()
    conn: http.client.HTTPConnection | None = None
    print("ready", flush=True)
    while not stop.is_set():
        start = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HEALTH_TIMEOUT)
            conn.request("GET", "/_mock/health")
            response = conn.getresponse()
            response.read()
            status = str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            status = type(exc).__name__
            if conn is not None:
                conn.close()
            conn = None
        worst = max(worst, time.perf_counter() - start)
        polls += 1
        if status != "200":
            bad[status] += 1
        stop.wait(interval)
    print(json.dumps({"worst_ms": worst * 1000, "polls": polls, "bad": bad}), flush=True)


class Health:
    """``with Health(port) as h:`` polls health from its own process during the block; then ``h.worst_ms``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.worst_ms = 0.0
        self.bad: dict[str, int] = {}

    def __enter__(self) -> Health:
        self.proc = subprocess.Popen(
            [PYTHON, __file__, "--health-poller", str(self.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            out, _ = self.proc.communicate(timeout=HEALTH_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.worst_ms = HEALTH_TIMEOUT * 1000
            return
        result = json.loads(out.decode().strip().splitlines()[-1])
        self.worst_ms, self.bad = result["worst_ms"], result["bad"]


# --- a raw HTTP/1.1 client over keep-alive connections ---------------------------------------------


def request(
    method: str,
    path: str,
    port: int,
    headers: Iterable[str] = (),
    body: bytes | None = None,
    host: str | None = None,
) -> bytes:
    """One request's bytes (``host``: the Host header, by default the server's loopback address)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", *headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def json_request(method: str, path: str, port: int, obj: Any, headers: Iterable[str] = ()) -> bytes:
    """A control request as a tool sends it: a JSON body, Content-Type application/json."""
    return request(method, path, port, ["Content-Type: application/json", *headers], json.dumps(obj).encode())


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)")


@dataclass
class Answer:
    status: int  # 0: the connection was dropped, no answer
    head: bytes
    body: bytes
    seconds: float

    def header(self, name: str) -> str | None:
        m = re.search(rb"\r\n" + name.lower().encode() + rb":\s*([^\r]*)", self.head.lower())
        return m.group(1).decode() if m else None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Conn:
    """One keep-alive connection, reopened after the server closes it. ``split_body``: send a body a
    millisecond after its head, as a client that writes them apart does (the server has begun by then)."""

    def __init__(self, port: int, split_body: bool = False) -> None:
        self.port = port
        self.split_body = split_body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, data: bytes, timeout: float = 30.0) -> Answer:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                if self.writer is None or self.writer.is_closing() or (self.reader and self.reader.at_eof()):
                    self.close()  # (closed by the server since the last answer)
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=2**20)
                if self.split_body and (end := data.find(b"\r\n\r\n") + 4) < len(data):
                    self.writer.write(data[:end])
                    await self.writer.drain()
                    await asyncio.sleep(0.001)
                    data = data[end:]
                self.writer.write(data)  # buffered whole: the answer may come before the body is read
                status, head, body = await self._read()
        except (
            OSError,
            RuntimeError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ):
            self.close()
            return Answer(0, b"", b"", time.perf_counter() - start)
        return Answer(status, head, body, time.perf_counter() - start)

    async def _read(self) -> tuple[int, bytes, bytes]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, lower = int(head[9:12]), head.lower()
        if status in (204, 304):
            body = b""
        elif m := _CONTENT_LENGTH.search(lower):
            body = await self.reader.readexactly(int(m.group(1)))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")  # no trailers
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            self.close()
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, head, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def one(port: int, data: bytes, timeout: float = 30.0) -> Answer:
    """One request on a connection of its own."""
    conn = Conn(port)
    try:
        return await conn.send(data, timeout)
    finally:
        conn.close()


def label(answer: Answer) -> str:
    """'200/code 0' for the contract's envelope, else the status ('dropped' for no answer)."""
    if answer.status == 0:
        return "dropped"
    body = answer.body
    if answer.status == 200 and body.startswith(b'{"code":'):
        return f"200/code {body[8 : body.find(b',', 8)].decode()}"
    return str(answer.status)


async def flood(
    port: int,
    requests: Iterable[bytes],
    connections: int,
    seconds: float,
    on_answer: Callable[[Answer], None] | None = None,
    split_body: bool = False,
) -> Counter[str]:
    """Send ``requests`` over ``connections`` keep-alive connections, one at a time on each, for at
    most ``seconds``: how many answers of each ``label`` (and how many were left 'unsent')."""
    answers: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    queue: Iterator[bytes] = iter(requests)

    async def worker() -> None:
        conn = Conn(port, split_body)
        try:
            for data in queue:  # one iterator shared: each request goes once
                if time.monotonic() > deadline:
                    answers["unsent"] += 1
                    break
                answer = await conn.send(data, max(0.1, deadline - time.monotonic()))
                answers[label(answer)] += 1
                if on_answer is not None:
                    on_answer(answer)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    answers["unsent"] += sum(1 for _ in queue)
    if not answers["unsent"]:
        del answers["unsent"]
    return answers


def num(value: int | None) -> str:
    """A count as shown, '?' when the server did not say."""
    return "?" if value is None else f"{value:,}"


def tally(answers: Counter[str]) -> str:
    return ", ".join(f"{name} x{count:,}" for name, count in answers.most_common())


def server_errors(answers: Counter[str]) -> int:
    """500s (and other 5xx but 503, which a bound may answer) and connections dropped without an answer."""
    return sum(n for name, n in answers.items() if name == "dropped" or (name.startswith("5") and name != "503"))


async def make_rich(port: int, key: str = KEY) -> None:
    answer = await one(port, json_request("POST", "/_mock/accounts", port, {"credits": 10**12, "key": key}))
    if answer.status != 201:
        raise RuntimeError(f"cannot make the rich account: {answer.status} {answer.body[:200]!r}")


async def total_tasks(port: int) -> int | None:
    answer = await one(port, request("GET", "/_mock/tasks?limit=1", port))
    total = answer.header("x-total-count")
    return int(total) if total and total.isdigit() else None


def submits(port: int, count: int, keys: Callable[[int], str], headers: Iterable[str] = ()) -> Iterator[bytes]:
    extra = ["Content-Type: application/json", *headers]
    for i in range(count):
        yield request("POST", "/api/v1/tasks/create", port, [f"Authorization: Bearer {keys(i)}", *extra], SUBMIT)


def rich_key(i: int) -> str:
    """The rich account's key, for every submit."""
    return KEY


def distinct_key(prefix: str) -> Callable[[int], str]:
    """Well-formed keys, a new one for each i: 'sk-' and 32 letters or digits."""
    return lambda i: f"sk-{prefix}{i:0{32 - len(prefix)}d}"


# --- rows ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    attack: str
    answer: str
    health_ms: float
    rss_mib: float
    bound: str
    ok: bool


class Run:
    """What an attack has: its server, health polling, the sizes for --quick, and the rows it makes."""

    def __init__(self, target: Target, quick: bool) -> None:
        self.target = target
        self.port = target.port
        self.quick = quick
        self.rows: list[Row] = []
        self.traces = 0  # tracebacks in the server's log that earlier rows have counted

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def health(self) -> Health:
        return Health(self.port)

    def row(
        self,
        attack: str,
        answer: str,
        health: Health,
        check: bool | None = None,
        answers: Counter[str] | None = None,
        health_bound: float = HEALTH_MS,
        bound: str = "",
        rss_bound: float = RSS_MIB,
    ) -> None:
        """A row: within the bounds if health and RSS are, no 500 came, and the attack's own ``check``
        (None: none) holds."""
        rss = self.target.rss_mib()
        traces = self.target.tracebacks() - self.traces
        self.traces += traces
        ok = health.worst_ms < health_bound and rss < rss_bound and check is not False
        if answers is not None and server_errors(answers):
            ok = False
        if traces:
            answer += f"; {traces} traceback(s) in the log"
            ok = False
        if health.bad:
            answer += f"; health answered {dict(health.bad)}"
            ok = False
        if health_bound != HEALTH_MS:
            bound = f"{bound}; health < {health_bound / 1000:g} s" if bound else f"health < {health_bound / 1000:g} s"
        self.rows.append(Row(attack, answer, health.worst_ms, rss, bound or "-", ok))


def refused(status: int) -> bool:
    return 400 <= status < 500


def first_issue(answer: Answer) -> str:
    """The first reason a refusal gives, cut short."""
    body = answer.json()
    if isinstance(body, dict):
        issues = body.get("issues")
        text = issues[0].get("message", issues[0]) if isinstance(issues, list) and issues else body.get("error", "")
        text = str(text)
    else:
        text = answer.body.decode("utf-8", "replace")
    return text if len(text) <= 48 else text[:47] + "…"


# --- the attacks ----------------------------------------------------------------------------------------


def alias_bomb(levels: int, size: int) -> str:
    """A rule's ``extra`` with ``levels`` lists of nine aliases each (9**levels values once expanded),
    padded with a comment to ``size`` bytes (the sizes issue 11 measured)."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = ["rules:", "  - name: bomb", "    extra:", "      a: &a [" + ",".join("x" * 9) + "]"]
    for prev, name in zip(names, names[1:levels], strict=False):
        lines.append(f"      {name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = "\n".join(lines) + "\n"
    return text + ("#" + "-" * (size - len(text) - 2) + "\n" if size - len(text) >= 2 else "")


def yaml_attack(name: str, text: str) -> Callable[[Run], Coroutine[Any, Any, None]]:
    async def attack(run: Run) -> None:
        body = text.encode()
        with run.health() as health:
            answer = await one(
                run.port, request("PUT", "/_mock/scenario", run.port, ["Content-Type: application/yaml"], body)
            )
        what = f"{len(body):,} B: {answer.status} in {answer.seconds * 1000:.0f} ms: {first_issue(answer)}"
        run.row(name, what, health, refused(answer.status), Counter([label(answer)]), bound="refused (4xx)")

    return attack


async def json_digits(run: Run) -> None:
    body = b'{"credits": ' + b"7" * 5000 + b"}"
    data = request("POST", "/_mock/accounts", run.port, ["Content-Type: application/json"], body)
    with run.health() as health:
        answer = await one(run.port, data)
    what = f"{answer.status} in {answer.seconds * 1000:.0f} ms: {first_issue(answer)}"
    run.row("json-5000-digits", what, health, refused(answer.status), Counter([label(answer)]), bound="refused (4xx)")


REDOS = "name: redos\nrules:\n  - name: redos\n    match: {prompt_regex: '(a+)+$'}\n    outcome: failed\n"


async def regex(run: Run) -> None:
    prompt = "a" * 26 + "!"  # 27 characters: (a+)+$ backtracks 2**26 ways before it fails, in Python's re
    body = json.dumps({"model_id": "gpt-image-2", "prompt": prompt}).encode()
    headers = [f"Authorization: Bearer {KEY}", "Content-Type: application/json"]
    with run.health() as health:
        scenario = await one(
            run.port, request("PUT", "/_mock/scenario", run.port, ["Content-Type: application/yaml"], REDOS.encode())
        )
        submit = await one(run.port, request("POST", "/api/v1/tasks/create", run.port, headers, body))
    what = (
        f"scenario {scenario.status}; submit {label(submit)} in {submit.seconds * 1000:.0f} ms"
        if scenario.status == 200
        else f"scenario {scenario.status}: {first_issue(scenario)}"
    )
    answers = Counter([label(scenario), label(submit)])
    run.row("regex-(a+)+$", what, health, None, answers, bound="linear or refused")


def polls(port: int, count: int, key: str = KEY) -> Iterator[bytes]:
    for i in range(count):
        yield request("GET", f"/api/v1/tasks/nosuchtask{i}", port, [f"Authorization: Bearer {key}"])


def waiters_attack(name: str, full: int, quick: int, past_cap: bool) -> Callable[[Run], Coroutine[Any, Any, None]]:
    async def attack(run: Run) -> None:
        count, entries = run.n(full, quick), run.n(500, 50)
        await flood(run.port, polls(run.port, entries), 4, 30)  # a journal for every waiter to look through
        # count=9999 never arrives: each waiter waits its 2 s and then answers 408 with what matched.
        wait = request("GET", "/_mock/requests/wait?path=/api/v1/tasks/*&count=9999&timeout=2", run.port)
        with run.health() as health:
            parked = asyncio.gather(*(one(run.port, wait, 60) for _ in range(count)))
            await asyncio.sleep(0.5)
            await flood(run.port, polls(run.port, run.n(200, 20)), 1, 10)  # new entries while they wait
            answers = Counter(label(a) for a in await parked)
        capped = sum(n for status, n in answers.items() if status in ("429", "503"))
        what = f"{count:,} waiters over {entries:,} entries: {tally(answers)}"
        if past_cap and run.quick:
            run.row(name, what, health, None, answers, bound="(the cap: not checked with --quick)")
        elif past_cap:
            parked = answers.get("408", 0)
            run.row(name, what, health, capped > 0 and parked <= 64, answers, bound="64 wait, the rest refused")
        else:
            run.row(name, what, health, None, answers)

    return attack


def journal_attack(
    name: str, full: int, quick: int, headers: int, size: int, growth: float
) -> Callable[[Run], Coroutine[Any, Any, None]]:
    """Polls that each carry ``headers`` distinct headers of ``size`` bytes, then DELETE /_mock/requests."""

    async def attack(run: Run) -> None:
        count = run.n(full, quick)
        pad = "x" * (size - 16)
        auth = f"Authorization: Bearer {KEY}"

        def requests() -> Iterator[bytes]:
            for i in range(count):  # distinct headers on each: nothing to share between them
                pads = [f"X-Pad-{h}: {i:08d}{pad}" for h in range(headers)]
                yield request("GET", "/api/v1/tasks/nosuchtask", run.port, [auth, *pads])

        idle = run.target.rss_mib()
        with run.health() as health:
            answers = await flood(run.port, requests(), 4, 60)
        grown = run.target.rss_mib() - idle
        bound = f"RSS growth < {growth:.0f} MiB"
        what = f"{tally(answers)}; RSS {grown:+,.0f} MiB"
        run.row(name, what, health, grown < growth, answers, bound=bound)
        with run.health() as health:
            cleared = await one(
                run.port, request("DELETE", "/_mock/requests", run.port, ["Content-Type: application/json"])
            )
        grown = run.target.rss_mib() - idle
        what = f"DELETE /_mock/requests: {cleared.status}; RSS {grown:+,.0f} MiB"
        ok = cleared.status == 204 and grown < growth
        run.row(f"{name}-then-DELETE", what, health, ok, Counter([label(cleared)]), bound=f"204; {bound}")

    return attack


async def accounts(port: int) -> int | None:
    listed = (await one(port, request("GET", "/_mock/accounts", port), 60)).json()
    return len(listed) if isinstance(listed, list) else None


async def accounts_poll(run: Run) -> None:
    count = run.n(100_000, 2_000)
    keys = distinct_key("poll")
    data = (
        request("GET", "/api/v1/tasks/nosuchtask", run.port, [f"Authorization: Bearer {keys(i)}"]) for i in range(count)
    )
    before = await accounts(run.port)
    with run.health() as health:
        answers = await flood(run.port, data, 32, 60)
    after = await accounts(run.port)
    made = after - before if after is not None and before is not None else None
    what = f"{count:,} keys: {tally(answers)}; accounts made: {num(made)}"
    run.row("accounts-poll-missing", what, health, made == 0, answers, bound="a poll of no task makes no account")


async def accounts_submit(run: Run) -> None:
    count = run.n(100_000, 2_000)
    with run.health() as health:
        answers = await flood(run.port, submits(run.port, count, distinct_key("new")), 32, 90)
    kept = await accounts(run.port)
    what = f"{count:,} keys: {tally(answers)}; accounts kept: {num(kept)}"
    run.row("accounts-submit", what, health, None, answers)


MAX_TASKS, MAX_TASKS_QUICK = 5_000, 500
# More waiters than the cap on them (keep it above the README's "Limits"): issue 11 found that 1,000
# parked waiters already delay health by 15 s, so the cap is taken to be below this.
# Under --max-connections (1,000, health's connection included): past it uvicorn refuses every request
# with 503, health too, which is the connection limit's answer, not the long-poll cap's.
WAITERS = 990


async def max_tasks(run: Run) -> None:
    bound = run.n(MAX_TASKS, MAX_TASKS_QUICK)
    await make_rich(run.port)
    delayed = ["X-Mockgen-Delay: 86400"]  # unfinished for a day: nothing may be evicted to make room
    with run.health() as health:
        start = time.perf_counter()
        first = await flood(run.port, submits(run.port, bound, rich_key, delayed), 16, 60)
        middle = time.perf_counter()
        past = await flood(run.port, submits(run.port, bound, rich_key, delayed), 16, 60)
        end = time.perf_counter()
    kept = await total_tasks(run.port)
    early, late = bound / (middle - start), bound / (end - middle)
    what = (
        f"first {bound:,}: {tally(first)} ({early:,.0f}/s); next {bound:,}: {tally(past)} ({late:,.0f}/s);"
        f" tasks kept {num(kept)}"
    )
    ok = kept is not None and kept <= bound and past["200/code 200"] == 0
    run.row("max-tasks-delayed", what, health, ok, first + past, bound=f"tasks <= --max-tasks {bound:,}, then refused")


async def next_queue(run: Run) -> None:
    count, timed = run.n(5_000, 500), run.n(2_000, 200)
    await make_rich(run.port)
    start = time.perf_counter()
    await flood(run.port, submits(run.port, timed, rich_key), 8, 30)
    before = timed / (time.perf_counter() - start)
    sizes: list[int] = []
    entry = {"outcome": "failed", "count": 1, "key": OTHER}  # for a key that never submits: never used up
    with run.health() as health:
        queued = await flood(
            run.port, (json_request("POST", "/_mock/next", run.port, entry) for _ in range(count)), 1, 60,
            on_answer=lambda a: sizes.append(len(a.body)),
        )  # fmt: skip
        start = time.perf_counter()
        answers = await flood(run.port, submits(run.port, timed, rich_key), 8, 30)
        after = timed / (time.perf_counter() - start)
    ratio = after / before
    what = (
        f"{count:,} entries: {tally(queued)}, last answer {sizes[-1] / 1024 if sizes else 0:,.0f} KiB;"
        f" submits {before:,.0f}/s before, {after:,.0f}/s after ({ratio:.0%})"
    )
    run.row("next-queue", what, health, ratio >= 0.5, queued + answers, bound="submits >= 50% as fast")


async def state(run: Run) -> None:
    count = run.n(100_000, 5_000)
    await make_rich(run.port)
    await flood(run.port, submits(run.port, count, rich_key), 32, 90)
    made = await total_tasks(run.port)
    with run.health() as health:
        export = await one(run.port, request("GET", "/_mock/state", run.port), 120)
    what = f"{made or 0:,} tasks: {export.status}, {len(export.body) / MIB:,.1f} MiB in {export.seconds:.2f} s"
    ok = export.status == 200
    run.row("state-get", what, health, ok, Counter([label(export)]), HEALTH_BIG_MS, "200 (a whole export)")
    if not ok:
        return
    data = request("PUT", "/_mock/state", run.port, ["Content-Type: application/json"], export.body)
    with run.health() as health:
        restored = await one(run.port, data, 120)
    back = await total_tasks(run.port)
    what = f"{restored.status} in {restored.seconds:.2f} s"
    what += f"; tasks back {num(back)}" if restored.status == 200 else f": {first_issue(restored)}"
    ok = restored.status == 200 and back == made
    bound = f"its own export loads; RSS < {IMPORT_RSS_MIB:.0f} MiB"
    run.row("state-put-export", what, health, ok, Counter([label(restored)]), HEALTH_BIG_MS, bound, IMPORT_RSS_MIB)


async def race(run: Run) -> None:
    seconds = run.n(6, 2)
    snapshot = (await one(run.port, request("GET", "/_mock/state", run.port))).body
    controls = [
        json_request("POST", "/_mock/reset", run.port, {}),
        request("PUT", "/_mock/state", run.port, ["Content-Type: application/json"], snapshot),
        json_request("PUT", "/_mock/scenario", run.port, {"name": "default"}),
    ]
    keys = distinct_key("race")
    stop = time.monotonic() + seconds

    def endless_submits() -> Iterator[bytes]:
        i = 0
        while time.monotonic() < stop:  # 200 keys in turn: each gets its default credits again at a reset
            i += 1
            yield request(
                "POST", "/api/v1/tasks/create", run.port,
                [f"Authorization: Bearer {keys(i % 200)}", "Content-Type: application/json"], SUBMIT,
            )  # fmt: skip

    def endless_controls() -> Iterator[bytes]:
        i = 0
        while time.monotonic() < stop:
            i += 1
            yield controls[i % len(controls)]

    with run.health() as health:
        made, swaps = await asyncio.gather(
            flood(run.port, endless_submits(), 16, seconds + 10, split_body=True),
            flood(run.port, endless_controls(), 1, seconds + 10),
        )
    what = f"submits: {tally(made)}; reset/state/scenario: {tally(swaps)}"
    ok = set(swaps) == {"200"}  # each control call done (not refused): the race really ran
    run.row("race-submit-vs-reset", what, health, ok, made + swaps, bound="the contract's answers")


TOPUP = b'{"delta": 1000000}'


async def balance(port: int) -> int | None:
    body = (await one(port, request("GET", f"/_mock/accounts/{KEY}", port))).json()
    return body.get("credits") if isinstance(body, dict) else None


def topup(port: int, headers: Iterable[str], host: str | None = None, body: bytes = TOPUP) -> bytes:
    return request("POST", f"/_mock/accounts/{KEY}/credits", port, headers, body, host)


async def simple_types(run: Run) -> None:
    await make_rich(run.port)
    before = await balance(run.port)
    kinds = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
    with run.health() as health:
        got = [await one(run.port, topup(run.port, [f"Content-Type: {k}"] if k else [])) for k in kinds]
    after = await balance(run.port)
    what = f"{', '.join(str(a.status) for a in got)} (text/plain, form, multipart, none); balance {before} -> {after}"
    ok = all(refused(a.status) for a in got) and after == before
    run.row("xorigin-simple-topup", what, health, ok, Counter(label(a) for a in got), bound="refused, no credit")


async def foreign_origin(run: Run) -> None:
    await make_rich(run.port)
    before = await balance(run.port)
    headers = ["Content-Type: application/json", "Origin: http://evil.example"]
    with run.health() as health:
        answer = await one(run.port, topup(run.port, headers))
    after = await balance(run.port)
    ok = refused(answer.status) and after == before
    what = f"JSON top-up with Origin: {answer.status}; balance {before} -> {after}"
    run.row("xorigin-foreign-origin", what, health, ok, Counter([label(answer)]), bound="refused, no credit")


async def preflight(run: Run) -> None:
    headers = ["Origin: http://evil.example", "Access-Control-Request-Method: POST"]
    with run.health() as health:
        answer = await one(run.port, request("OPTIONS", f"/_mock/accounts/{KEY}/credits", run.port, headers))
    allowed = answer.header("access-control-allow-origin")
    ok = refused(answer.status) and not allowed
    what = f"OPTIONS: {answer.status}, Access-Control-Allow-Origin {allowed!r}"
    run.row("xorigin-preflight", what, health, ok, Counter([label(answer)]), bound="refused, no CORS grant")


async def foreign_host(run: Run) -> None:
    data = request("GET", "/_mock/state", run.port, host=f"evil.example:{run.port}")
    with run.health() as health:
        answer = await one(run.port, data)
    ok = refused(answer.status) and b'"accounts"' not in answer.body
    what = f"GET /_mock/state, Host evil.example: {answer.status}, {len(answer.body):,} B"
    run.row("xorigin-foreign-host", what, health, ok, Counter([label(answer)]), bound="refused (DNS rebinding)")


async def tool_json(run: Run) -> None:
    await make_rich(run.port)
    before = await balance(run.port)
    with run.health() as health:
        answer = await one(run.port, topup(run.port, ["Content-Type: application/json"], body=b'{"delta": 5}'))
    after = await balance(run.port)
    ok = answer.status == 200 and before is not None and after == before + 5
    what = f"JSON top-up from a tool: {answer.status}; balance {before} -> {after}"
    run.row("xorigin-tool-json-works", what, health, ok, Counter([label(answer)]), bound="still works (200)")


@dataclass
class Attack:
    group: str  # what --only names
    run: Callable[[Run], Coroutine[Any, Any, None]]
    server: Callable[[bool], list[str]] = lambda quick: []


def _deep(levels: int) -> str:
    return "rules:\n  - name: deep\n    extra: {x: " + "[" * levels + "]" * levels + "}\n"


ATTACKS = [
    Attack("yaml-bomb", yaml_attack("yaml-alias-bomb-372B", alias_bomb(8, 372))),
    Attack("yaml-bomb", yaml_attack("yaml-alias-bomb-431B", alias_bomb(9, 431))),
    Attack("yaml-bomb", yaml_attack("yaml-nesting-10000", _deep(10_000))),
    Attack("yaml-bomb", yaml_attack("yaml-5000-digits", "seed: " + "7" * 5000 + "\n")),
    Attack("yaml-bomb", json_digits),
    Attack("regex", regex),
    Attack("waiters", waiters_attack(f"waiters-{WAITERS}", WAITERS, 100, past_cap=True)),
    # A head past 64 KiB is refused (431) before anything is journaled ...
    Attack("journal", journal_attack("journal-200x1MB-headers", 200, 10, 1, 2**20, JOURNAL_GROWTH_MIB)),
    # ... and heads under it fill the journal to its byte bound (64 MiB), entries cut to 4 KiB a value.
    Attack("journal", journal_attack("journal-3000x12x4KB-headers", 3_000, 100, 12, 4096, JOURNAL_FULL_MIB)),
    Attack("accounts", accounts_poll),
    Attack("accounts", accounts_submit),
    Attack("max-tasks", max_tasks, lambda quick: ["--max-tasks", str(MAX_TASKS_QUICK if quick else MAX_TASKS)]),
    Attack("next-queue", next_queue),
    Attack("state", state),
    Attack("race", race),
    Attack("cross-origin", simple_types),
    Attack("cross-origin", foreign_origin),
    Attack("cross-origin", preflight),
    Attack("cross-origin", foreign_host),
    Attack("cross-origin", tool_json),
]
GROUPS = list(dict.fromkeys(a.group for a in ATTACKS))


def run_attack(attack: Attack, quick: bool, core: str | None) -> list[Row]:
    target = Target(attack.server(quick), core)
    run = Run(target, quick)
    try:
        asyncio.run(attack.run(run))
    finally:
        target.stop()
    return run.rows


def table(rows: list[Row]) -> str:
    cells = [("attack", "server's answer", "health worst", "RSS after", "bound", "result")]
    for r in rows:
        health = f"{r.health_ms:,.0f} ms" if r.health_ms < HEALTH_TIMEOUT * 1000 else f">= {HEALTH_TIMEOUT:.0f} s"
        cells.append((r.attack, r.answer, health, f"{r.rss_mib:,.0f} MiB", r.bound, "PASS" if r.ok else "FAIL"))
    widths = [max(len(c[i]) for c in cells) for i in range(6)]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(6)).rstrip() for c in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated, of: {', '.join(GROUPS)}")
    parser.add_argument("--quick", action="store_true", help="every count cut about 20 times (a smoke run)")
    parser.add_argument("--health-poller", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.health_poller:
        poll_health(args.health_poller)
        return 0
    only = [g for g in args.only.split(",") if g]
    unknown = sorted(set(only) - set(GROUPS))
    if unknown:
        parser.error(f"unknown attack {', '.join(unknown)}: choose from {', '.join(GROUPS)}")
    server_core, attacker_core = _cores()
    if attacker_core is not None:
        os.sched_setaffinity(0, {int(attacker_core)})  # the health poller inherits it
    try:
        import uvloop  # the client's loop too: the attacks then cost the attacker less than the server

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print(f"mockgen abuse: {os.cpu_count()} cores, Python {sys.version.split()[0]}{', quick' if args.quick else ''}")
    rows: list[Row] = []
    start = time.perf_counter()
    for attack in ATTACKS:
        if attack.group in only:
            began = time.perf_counter()
            got = run_attack(attack, args.quick, server_core)
            for r in got:
                print(f"  {r.attack}: {'PASS' if r.ok else 'FAIL'} ({time.perf_counter() - began:.1f} s)", flush=True)
            rows += got
    print()
    print(table(rows))
    print(
        f"Every row also: health's worst < {HEALTH_MS:.0f} ms (unless its bound says), RSS after < {RSS_MIB:.0f} MiB,"
        " no 500 or connection dropped unanswered, no traceback in the server's log."
    )
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} of {len(rows)} within bounds ({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
