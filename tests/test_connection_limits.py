"""Connections and slow clients: uvicorn's limits as mockgen sets them, on real servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from mockgen import create_app
from mockgen.cli import main, serve
from mockgen.server import MAX_CONNECTIONS, MAX_HEAD_BYTES, bind, make_server
from mockgen.testing import MockServer
from tests.serving import Serve

CREATE = "/api/v1/tasks/create"


def hold(server: MockServer | Serve, n: int) -> list[socket.socket]:
    """``n`` open connections that send nothing, each accepted by the server before this returns."""
    host, port = _address(server)
    held = [socket.create_connection((host, port), timeout=5) for _ in range(n)]
    for sock in held:  # a request on each, answered: the server has accepted and counts them
        sock.sendall(b"GET /_mock/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    return held


def _address(server: MockServer | Serve) -> tuple[str, int]:
    if isinstance(server, MockServer):
        return server.host, server.port
    host, _, port = server.base.removeprefix("http://").rpartition(":")
    return host, int(port)


def health(base: str) -> int:
    with httpx.Client() as client:  # a connection of its own
        return client.get(f"{base}/_mock/health").status_code


@pytest.fixture
def limited() -> Iterator[MockServer]:
    with MockServer("ci", max_connections=3) as mock:
        yield mock


def test_max_connections_are_served_and_one_more_gets_503(limited: MockServer) -> None:
    held = hold(limited, 2)
    assert health(limited.base_url) == 200  # the third connection: at the limit, served
    held += hold(limited, 1)
    with httpx.Client() as client:
        refused = client.get(limited.url("/_mock/health"))
    assert refused.status_code == 503 and refused.text == "Service Unavailable"  # past it: at once
    held.pop().close()
    deadline = time.monotonic() + 5
    while health(limited.base_url) != 200:  # the server sees the close a moment later (bounded)
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for sock in held:
        sock.close()


def test_a_refused_connection_changes_nothing(limited: MockServer) -> None:
    before = limited.balance()
    held = hold(limited, 3)
    body = {"model_id": "gpt-image-2", "prompt": "a cat"}
    with httpx.Client() as client:
        refused = client.post(limited.url(CREATE), json=body, headers=limited.headers())
    assert refused.status_code == 503
    for sock in held:
        sock.close()
    assert limited.control("GET", "tasks") == [] and limited.balance() == before


def test_a_head_past_the_bound_is_431_and_one_under_it_is_answered(server: MockServer) -> None:
    base = server.base_url
    with httpx.Client() as client:
        assert client.get(f"{base}/_mock/health", headers={"x-pad": "a" * (MAX_HEAD_BYTES - 1000)}).status_code == 200
    with httpx.Client() as client:
        # Counted per read: past the bound and more than one read (uvloop reads up to 256 KiB at once).
        refused = client.get(f"{base}/_mock/health", headers={"x-pad": "a" * (300 * 1024)})
    assert refused.status_code == 431
    assert refused.json() == {
        "code": 431,
        "msg": f"Request line and headers too large: the limit is {MAX_HEAD_BYTES} bytes.",
        "data": None,
    }
    assert refused.headers["connection"] == "close"


def test_a_huge_head_is_cut_off_without_reading_it_all(server: MockServer) -> None:
    """8 MB of one header: refused once the bound (and a read) has arrived, not after buffering it all."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(b"GET /_mock/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
    sent = 0
    try:
        while sent < 8 * 1024 * 1024:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:  # the server answered and closed while we were still sending
        pass
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert health(server.base_url) == 200


def test_a_body_is_not_a_head(server: MockServer) -> None:
    """A body far past the head bound is the body limit's business: the contract's answer, not a 431."""
    body = {"model_id": "gpt-image-2", "prompt": "x" * 900_000}
    with httpx.Client() as client:
        r = client.post(server.url(CREATE), json=body, headers=server.headers())
    assert r.status_code == 200 and r.json()["code"] == 0 and "too long" in r.json()["msg"]


def test_a_head_that_trickles_in_is_closed_at_its_deadline() -> None:
    """A slow-loris client holds a connection for head_seconds, then loses it; health is answered meanwhile."""
    app = create_app("ci")
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(app, head_seconds=0.5, lifespan="on")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)  # a real socket starting to listen
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # sends nothing at all
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow.sendall(b"GET /_mock/health HTTP/1.1\r\n")  # and never the rest
        started = time.monotonic()
        assert health(f"http://127.0.0.1:{port}") == 200
        assert slow.recv(100) == b"" and idle.recv(100) == b""  # closed, unanswered
        assert 0.4 < time.monotonic() - started < 4
        idle.close()
        slow.close()
        # A request whose head arrives in time on a kept-alive connection is not affected.
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{port}/_mock/health").status_code == 200
            time.sleep(0.7)  # past the head deadline, idle between requests (keep-alive: 5 s)
            assert client.get(f"http://127.0.0.1:{port}/_mock/health").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_serve_has_the_limit_as_a_flag_and_a_variable() -> None:
    with Serve("--port", "0", "--scenario", "ci", "--max-connections", "2") as s:
        held = hold(s, 1)
        assert health(s.base) == 200
        held += hold(s, 1)
        assert health(s.base) == 503
        for sock in held:
            sock.close()
    with Serve("--port", "0", "--scenario", "ci", env={"MOCKGEN_MAX_CONNECTIONS": "1"}) as s:
        held = hold(s, 1)
        assert health(s.base) == 503
        for sock in held:
            sock.close()


def test_the_cli_defaults_are_the_servers() -> None:
    """cli.py spells the defaults out (it imports uvicorn only to serve); they must be the same numbers."""
    from mockgen.http import MAX_STATE_BYTES

    defaults = {p.name: p.default for p in serve.params}
    assert defaults["max_connections"] == MAX_CONNECTIONS
    assert defaults["state_bytes"] == MAX_STATE_BYTES
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert "MOCKGEN_MAX_CONNECTIONS" in result.output and "MOCKGEN_STATE_BYTES" in result.output
    refused = CliRunner().invoke(main, ["serve", "--max-connections", "0"])
    assert refused.exit_code == 2 and "0 is not in the range x>=1" in refused.output
