"""The guard (mockgen/guard.py): what a web page could send is refused, what tools send is served."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from mockgen import create_app
from mockgen.guard import HostPolicy, is_loopback_host, split_host
from mockgen.testing import MockServer

from .conftest import AUTH, JSON, KEY, Client
from .serving import Serve

CI_KEY = "sk-ci000000000000000000000000000001"  # listed in the bundled ci scenario: no secret


def world(client: TestClient) -> dict[str, Any]:
    """Everything a refused request must leave alone: accounts, ledgers, tasks, queue and clock."""
    r = client.get("/_mock/state")
    assert r.status_code == 200, r.text
    return r.json()


# --- content types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
     "TEXT/PLAIN", "application/octet-stream", "application/yaml"],
)  # fmt: skip
def test_a_change_without_a_json_content_type_is_a_415_and_changes_nothing(
    client: Client, content_type: str | None
) -> None:
    client.submit()
    before = world(client)
    headers = {"Content-Type": content_type} if content_type else {}
    changes = [
        ("POST", f"/_mock/accounts/{KEY}/credits", {"delta": 1_000_000}),
        ("POST", "/_mock/clock/advance", {"seconds": 3600}),
        ("POST", "/_mock/next", {"outcome": "failed", "count": 5}),
        ("POST", "/_mock/accounts", {"credits": 5}),
        ("POST", "/_mock/reset", None),
        ("PUT", "/_mock/state", {"accounts": [], "tasks": []}),
    ]
    for method, path, body in changes:
        content = json.dumps(body).encode() if body is not None else b""
        r = client.request(method, path, content=content, headers=headers)
        assert r.status_code == 415, (method, path, r.text)
        error = r.json()["error"]
        assert "application/json" in error and len(error) < 300
        assert "access-control-allow-origin" not in r.headers
    assert world(client) == before
    assert client.delete("/_mock/requests", headers=headers).status_code == 415
    assert len(client.get("/_mock/requests").json()) == 1  # the journal was not cleared


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/x+json"]
)
def test_json_content_types_are_served_with_or_without_a_body(client: Client, content_type: str) -> None:
    headers = {"Content-Type": content_type}
    r = client.post("/_mock/clock/advance", content=b'{"seconds": 5}', headers=headers)
    assert r.status_code == 200, r.text
    assert client.post(f"/_mock/accounts/{KEY}/credits", content=b'{"delta": 7}', headers=headers).status_code == 200
    assert client.post("/_mock/accounts", headers=headers).status_code == 201  # no body: {}
    assert client.delete("/_mock/requests", headers=headers).status_code == 204
    assert client.post("/_mock/reset", headers=headers).status_code == 200


def test_a_scenario_is_taken_as_yaml_or_as_a_json_name(client: Client) -> None:
    for kind in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml; charset=utf-8"):
        r = client.put("/_mock/scenario", content=f"name: sent as {kind}\n", headers={"Content-Type": kind})
        assert r.status_code == 200 and client.get("/_mock/scenario").json()["name"] == f"sent as {kind}", r.text
    assert client.put("/_mock/scenario", json={"name": "ci"}).json()["name"] == "ci"
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": kind} if kind else {}
        r = client.put("/_mock/scenario", content=b"name: from a web page\n", headers=headers)
        assert r.status_code == 415 and "application/yaml" in r.json()["error"], r.text
    assert client.get("/_mock/scenario").json()["name"] == "ci"
    # YAML is for the scenario only
    state = client.get("/_mock/state").text
    assert client.put("/_mock/state", content=state, headers={"Content-Type": "application/yaml"}).status_code == 415


def test_reads_and_unrouted_methods_need_no_content_type(client: Client) -> None:
    assert client.get("/_mock/health").status_code == 200
    r = client.request("PATCH", "/_mock/accounts", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"  # the router's answer, as before
    assert client.post("/_mock/nowhere", content=b"x").status_code == 404


def test_the_admin_token_does_not_lift_the_content_type_rule(make_client: Callable[..., Client]) -> None:
    client = make_client(admin_token="s3cret")
    token = {"Authorization": "Bearer s3cret"}
    assert client.post("/_mock/reset", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 401
    r = client.post("/_mock/reset", content=b"{}", headers={**token, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert client.post("/_mock/reset", headers={**token, **JSON}).status_code == 200


# --- Origin and preflights -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://mock.test:8080", "http://mock.test.evil.example", "null", "garbage"]
)
def test_a_change_from_a_foreign_origin_is_a_403_and_changes_nothing(client: Client, origin: str) -> None:
    before = world(client)
    r = client.post("/_mock/clock/advance", json={"seconds": 60}, headers={"Origin": origin})
    assert r.status_code == 403 and "not from this server" in r.json()["error"], r.text
    assert "access-control-allow-origin" not in r.headers
    r = client.put("/_mock/scenario", content=b"name: x\n", headers={"Origin": origin, "Content-Type": "text/yaml"})
    assert r.status_code == 403
    assert world(client) == before
    r = client.get("/_mock/state", headers={"Origin": origin})  # a read: the browser keeps the answer from the page
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)


def test_a_change_from_the_servers_own_origin_is_served(make_client: Callable[..., Client]) -> None:
    client = make_client()
    for origin in ("http://mock.test", "HTTP://MOCK.TEST"):
        assert client.post("/_mock/clock/advance", json={"seconds": 1}, headers={"Origin": origin}).status_code == 200
    proxied = make_client(public_url="https://mock.example.com/")
    r = proxied.post("/_mock/reset", headers={**JSON, "Origin": "https://mock.example.com"})
    assert r.status_code == 200, r.text
    r = proxied.post("/_mock/reset", headers={**JSON, "Origin": "https://other.example.com"})
    assert r.status_code == 403


def test_preflights_are_refused_without_cors_headers(client: Client) -> None:
    preflight = {
        "Origin": "http://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    for path in ("/_mock/clock/advance", f"/_mock/accounts/{KEY}/credits", "/_mock/state", "/_mock/nowhere"):
        r = client.options(path, headers=preflight)
        assert r.status_code == 403 and "preflight" in r.json()["error"], (path, r.text)
        assert not any(h.startswith("access-control-") for h in r.headers)
    assert client.options("/_mock/reset").status_code == 403


# --- Host ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "LOCALHOST", "app.localhost:3000", "localhost.", "127.0.0.1", "127.1.2.3:80",
     "[::1]", "[::1]:8000", "[::ffff:127.0.0.1]:8000", "mock.test", "mock.test:80"],
)  # fmt: skip
def test_loopback_names_and_the_address_reached_are_answered(client: Client, host: str) -> None:
    headers = {"Host": host}
    for path in ("/_mock/health", "/", "/openapi.json", "/static/dashboard.js"):
        assert client.get(path, headers=headers).status_code == 200, (host, path)
    assert client.post("/_mock/clock/advance", json={"seconds": 1}, headers=headers).status_code == 200
    task_id = client.submit(headers=headers)["data"]["task_id"]
    assert client.get(f"/api/v1/tasks/{task_id}", headers={**AUTH, **headers}).json()["code"] == 200


FOREIGN = ["evil.example", "evil.example:8000", "localhost.evil.example", "192.0.2.1", "[2001:db8::1]:80",
           "127.0.0.1.nip.io", "mock.test.evil.example"]  # fmt: skip
MALFORMED = ['we"ird', "a b", "[::1", "[::1]x", "host:port", "host:", "a/b", "user@host", "a..b", ""]


@pytest.mark.parametrize("host", FOREIGN + MALFORMED)
def test_a_foreign_or_malformed_host_is_refused_everywhere_and_changes_nothing(client: Client, host: str) -> None:
    client.submit(prompt="before")
    before = world(client)
    headers = {"Host": host}
    r = client.get("/_mock/state", headers=headers)
    assert r.status_code == 403 and KEY not in r.text, r.text
    error = r.json()["error"]
    assert ("--allowed-host" in error) if split_host(host) else ("not a host name" in error)
    for method, path, body in [
        ("POST", f"/_mock/accounts/{KEY}/credits", {"delta": 10}),
        ("POST", "/_mock/reset", {}),
        ("GET", "/", None),
        ("GET", "/openapi.json", None),
        ("GET", "/files/abc.png", None),
    ]:
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, (method, path, r.text)
    # the public API, on the shortcut, in the contract's envelope: nothing charged, nothing shown
    task_id = before["tasks"][0]["task_id"]
    for r in [
        client.post(
            "/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers={**AUTH, **headers}
        ),
        client.get(f"/api/v1/tasks/{task_id}", headers={**AUTH, **headers}),
    ]:
        assert r.status_code == 403 and r.json()["code"] == 403 and r.json()["data"] is None, r.text
        assert task_id not in r.text
    assert world(client) == before


def test_a_host_that_is_not_ascii_is_refused(client: Client) -> None:
    r = client.get("/_mock/health", headers={"Host": "é.test".encode()})
    assert r.status_code == 403 and "not a host name" in r.json()["error"]


def test_a_refused_host_is_answered_alike_with_and_without_the_shortcut() -> None:
    seen = []
    for fast in (True, False):
        app = create_app("ci", fast_path=fast)  # False: the ordinary path, Starlette's middleware and router
        with TestClient(app, base_url="http://mock.test") as client:
            auth = {"Authorization": f"Bearer {CI_KEY}", "Host": "rebound.example"}
            r = client.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": "x"}, headers=auth)
            journal = client.get("/_mock/requests").json()
            for entry in journal:
                del entry["latency_ms"]
            seen.append((r.status_code, r.content, journal))
    assert seen[0] == seen[1]
    assert seen[0][2][0]["status"] == 403 and "--allowed-host" in seen[0][2][0]["error"]


def test_allowed_hosts_exact_by_domain_and_any(make_client: Callable[..., Client]) -> None:
    exact = make_client(allowed_hosts=["mock.internal", "Proxy.Example:8443"])
    for host, status in [("mock.internal", 200), ("mock.internal:9000", 200), ("proxy.example", 200),
                         ("other.internal", 403), ("sub.mock.internal", 403)]:  # fmt: skip
        assert exact.get("/_mock/health", headers={"Host": host}).status_code == status, host
    domain = make_client(allowed_hosts=[".example.com"])
    for host, status in [("example.com", 200), ("a.b.example.com:1", 200), ("badexample.com", 403)]:
        assert domain.get("/_mock/health", headers={"Host": host}).status_code == status, host
    anything = make_client(allowed_hosts=["*"])
    assert anything.get("/_mock/health", headers={"Host": "whatever.example"}).status_code == 200
    assert anything.get("/_mock/health", headers={"Host": 'we"ird'}).status_code == 403  # never into a URL
    public = make_client(public_url="http://mockgen:8000")
    assert public.get("/_mock/health", headers={"Host": "mockgen:8000"}).status_code == 200


def test_the_address_a_request_reached_is_answered_and_others_are_not() -> None:
    app = create_app("default", clock="manual")
    with TestClient(app, base_url="http://10.1.2.3:8000") as client:  # as uvicorn: the socket's address
        assert client.get("/_mock/health").status_code == 200
        assert client.get("/_mock/health", headers={"Host": "10.9.9.9:8000"}).status_code == 403
    with TestClient(app, base_url="http://mock.test") as other:  # not remembered for another address
        assert other.get("/_mock/health", headers={"Host": "10.1.2.3:8000"}).status_code == 403


def test_the_policy_remembers_a_bounded_number_of_accepted_hosts() -> None:
    policy = HostPolicy(["*"])
    for port in range(1000):
        assert policy.allows(f"localhost:{port}")
    assert len(policy.ok) <= 64
    assert policy.allows("localhost:5000") and not policy.allows("bad host")
    assert not HostPolicy().allows("evil.example", ("10.0.0.1", 80))


def test_loopback_names() -> None:
    for name in ("localhost", "a.localhost", "127.0.0.1", "127.255.0.9", "::1", "[::1]", "::ffff:127.0.0.1"):
        assert is_loopback_host(name), name
    for name in ("0.0.0.0", "192.0.2.1", "localhost.example", "notlocalhost", "::", "[::2]", ""):
        assert not is_loopback_host(name), name


# --- result URLs -----------------------------------------------------------------------------------


def _result_url(client: Client, headers: dict[str, str]) -> str:
    task_id = client.submit(headers=headers)["data"]["task_id"]
    client.advance(60)
    return client.get(f"/api/v1/tasks/{task_id}", headers={**AUTH, **headers}).json()["data"]["image_url"]


def test_result_urls_use_the_checked_host_or_the_public_url(make_client: Callable[..., Client]) -> None:
    client = make_client()
    assert _result_url(client, {"Host": "localhost:9999"}).startswith("http://localhost:9999/files/")
    assert _result_url(client, {"Host": "[::1]:8000"}).startswith("http://[::1]:8000/files/")
    public = make_client(public_url="https://cdn.example/mock/")
    assert _result_url(public, {"Host": "localhost"}).startswith("https://cdn.example/mock/files/")


def test_without_a_host_header_result_urls_name_the_bound_address() -> None:
    """HTTP/1.0 needs no Host: the result URL then names the address the server listens on, never a guess."""
    with MockServer("default", clock="manual") as mock:
        task_id = httpx.post(mock.url("/api/v1/tasks/create"), json={"model_id": "gpt-image-2", "prompt": "x"},
                             headers=mock.headers()).json()["data"]["task_id"]  # fmt: skip
        mock.advance(60)
        with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as conn:
            conn.sendall(
                f"GET /api/v1/tasks/{task_id} HTTP/1.0\r\nAuthorization: Bearer {mock.api_key}\r\n\r\n".encode()
            )
            answer = b""
            for _ in range(100):  # bounded: until the server closes the connection
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["data"]["image_url"] == f"http://127.0.0.1:{mock.port}/files/{task_id}.png"


# --- a real server and a real `mockgen serve` --------------------------------------------------------


def test_a_dns_rebinding_request_to_a_real_server_reads_and_spends_nothing() -> None:
    """A page at rebind.example whose name now resolves to 127.0.0.1 reaches the server with that Host."""
    with MockServer("ci") as mock, httpx.Client(base_url=mock.base_url, timeout=5) as http:
        rebound = {"Host": f"rebind.example:{mock.port}", "Origin": f"http://rebind.example:{mock.port}"}
        state = http.get("/_mock/state", headers=rebound)
        assert state.status_code == 403 and CI_KEY not in state.text
        assert http.get("/", headers=rebound).status_code == 403
        r = http.post(f"/_mock/accounts/{CI_KEY}/credits", json={"delta": 10**6}, headers=rebound)
        assert r.status_code == 403
        spend = {**rebound, "Authorization": f"Bearer {CI_KEY}"}
        r = http.post("/api/v1/tasks/create", json={"model_id": "seedance-2", "prompt": "x"}, headers=spend)
        assert r.status_code == 403 and r.json()["code"] == 403
        assert mock.balance(CI_KEY) == 1000 and mock.tasks() == []
        assert http.get("/_mock/health").status_code == 200  # its own name still works


@pytest.mark.parametrize(
    ("args", "env", "allowed"),
    [
        (("--allowed-host", "mockgen", "--allowed-host", "proxy.example,extra.example"), {}, True),
        ((), {"MOCKGEN_ALLOWED_HOSTS": "mockgen, proxy.example,extra.example"}, True),
        ((), {}, False),
    ],
)
def test_serve_takes_allowed_hosts_from_the_flag_or_the_variable(
    args: tuple[str, ...], env: dict[str, str], allowed: bool
) -> None:
    with Serve("--port", "0", *args, env=env) as served:
        named = 200 if allowed else 403
        for host, status in [("mockgen", named), ("proxy.example:80", named), ("extra.example", named),
                             ("localhost", 200), ("evil.example", 403)]:  # fmt: skip
            r = httpx.get(f"{served.base}/_mock/health", headers={"Host": host}, timeout=5)
            assert r.status_code == status, (host, r.text)
        r = httpx.post(f"{served.base}/_mock/reset", content=b"{}", headers={"Content-Type": "text/plain"}, timeout=5)
        assert r.status_code == 415


def test_serve_forwards_the_allowed_hosts_and_the_name_it_binds(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import mockgen.app
    from mockgen.cli import main
    from mockgen.errors import ControlError

    forwarded: list[Any] = []

    def create_app(*args: Any, **options: Any) -> None:
        forwarded.append(options["allowed_hosts"])
        raise ControlError("stopped here")  # the command ends before it binds anything

    monkeypatch.setattr(mockgen.app, "create_app", create_app)
    runner = CliRunner()
    runner.invoke(main, ["serve", "--allowed-host", "a.example,b.example", "--host", "mock.lan"])
    runner.invoke(main, ["serve", "--host", "0.0.0.0"], env={"MOCKGEN_ALLOWED_HOSTS": "c.example d.example"})
    assert forwarded == [["a.example", "b.example", "mock.lan"], ["c.example", "d.example"]]
    help_text = runner.invoke(main, ["serve", "--help"]).output
    assert "--allowed-host" in help_text and "MOCKGEN_ALLOWED_HOSTS" in help_text
