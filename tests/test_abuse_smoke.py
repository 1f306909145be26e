"""benchmarks/abuse cannot rot: its quick YAML rows run as a user runs them, and its raw client works."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mockgen.testing import MockServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import abuse_attacks as abuse  # noqa: E402  (benchmarks/ is not a package)


def test_the_yaml_rows_run_from_the_command_and_are_refused() -> None:
    # The command as the README gives it, its python3 being this interpreter (as in an activated venv).
    # Health's latency is the benchmark's to judge (this machine may be busy), so the exit status and the
    # PASS column are not asserted here: the answers are, and so are the log and the RSS.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(ROOT / "benchmarks" / "abuse"), "--only", "yaml-bomb", "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    rows = [re.split(r"\s{2,}", line) for line in proc.stdout.splitlines() if line.startswith(("yaml-", "json-"))]
    assert [row[0] for row in rows] == [
        "yaml-alias-bomb-372B",
        "yaml-alias-bomb-431B",
        "yaml-nesting-10000",
        "yaml-5000-digits",
        "json-5000-digits",
    ]
    answers = [row[1] for row in rows]
    assert [a.split(":")[0] for a in answers[:2]] == ["372 B", "431 B"]  # the sizes issue 11 measured
    assert all(re.search(r"\b4[0-9][0-9] in ", a) and "traceback" not in a for a in answers), proc.stdout
    assert all(float(row[3].split()[0]) < abuse.RSS_MIB for row in rows), proc.stdout
    assert re.search(r"\d of 5 within bounds", proc.stdout)


def test_an_unknown_attack_is_refused_with_the_names() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "abuse_attacks.py"), "--only", "nope"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown attack nope" in proc.stderr and "yaml-bomb" in proc.stderr


def test_the_raw_client_floods_over_keep_alive_and_reads_every_kind_of_answer() -> None:
    with MockServer() as mock:
        port = mock.port

        async def attack() -> tuple[object, ...]:
            polls = await abuse.flood(port, abuse.polls(port, 50), 4, 10)
            made = await abuse.flood(port, abuse.submits(port, 5, abuse.distinct_key("t")), 2, 10, split_body=True)
            cleared = await abuse.one(
                port, abuse.request("DELETE", "/_mock/requests", port, ["Content-Type: application/json"]), timeout=10
            )  # 204
            missing = await abuse.one(port, abuse.request("GET", "/nowhere", port))
            return polls, made, cleared, missing

        polls, made, cleared, missing = asyncio.run(attack())
    assert polls == {"200/code 0": 50}  # a poll of no task: the contract's not-found
    assert made == {"200/code 200": 5}
    assert isinstance(cleared, abuse.Answer) and cleared.status == 204
    assert isinstance(missing, abuse.Answer) and missing.status == 404 and missing.json() is not None


def test_500s_and_drops_fail_a_row_and_answers_are_labelled() -> None:
    assert abuse.server_errors(Counter({"200/code 200": 3, "500": 1, "dropped": 2, "503": 4})) == 3
    assert abuse.label(abuse.Answer(200, b"", b'{"code":0,"msg":"x","data":null}', 0.0)) == "200/code 0"
    assert abuse.label(abuse.Answer(0, b"", b"", 0.0)) == "dropped"
    assert len(abuse.alias_bomb(8, 372)) == 372 and len(abuse.alias_bomb(9, 431)) == 431


def test_the_raw_client_reads_a_chunked_answer_and_keeps_the_connection() -> None:
    # A streamed answer (as a streamed GET /_mock/state would be), then another on the same connection.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n"
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def exchange() -> tuple[list[bytes], int]:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            for answer in (chunked, plain):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = abuse.Conn(port)
        try:
            bodies = [(await conn.send(abuse.request("GET", "/", port), timeout=5)).body for _ in range(2)]
        finally:
            conn.close()
            server.close()
            await server.wait_closed()
        return bodies, connections

    assert asyncio.run(exchange()) == ([b"hello world", b"ok"], 1)
