"""Bad input changes nothing: no 500 for any body, bounded reads, masked keys, and both request paths alike."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from mockgen import create_app
from mockgen.api import POLL_KEYS, polled, submitted, task_data
from mockgen.backend import Msg
from mockgen.http import MAX_BODY_BYTES, dumps
from mockgen.media import ASPECT_RATIOS
from mockgen.store import run_now

from .conftest import AUTH, JSON, KEY, Client

RICH = {"credits": 10**12, "key": KEY}


# --- in-process ASGI calls (thousands of them: no TestClient, no threads) -----------------------------


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"mock.test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("mock.test", 80),
        "state": {},
    }


async def call(
    app: Any, method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request; the body arrives in 64 KiB chunks, as a server would pass it on."""
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(method, path, list(headers or [])), receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


class Errors(logging.Handler):
    """Collects what the catch-all logs: reaching it is a bug."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors() -> Iterator[Errors]:
    handler = Errors()
    logger = logging.getLogger("mockgen")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


# --- the fuzz run ------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
create_objects = st.fixed_dictionaries(
    {},
    optional={
        "model_id": st.sampled_from(["gpt-image-2", "nano-banana-2", "seedance-2", ""]) | json_values,
        "prompt": st.text(min_size=1, max_size=60) | json_values | st.just("p" * 5000),
        "aspect_ratio": st.sampled_from(list(ASPECT_RATIOS)) | json_values,
        "image_urls": st.lists(st.sampled_from(["https://e.com/a.png", "ftp://x", "", "http://"]), max_size=3)
        | json_values,
        "extra": json_values,
    },
)


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(_encode),
    create_objects.map(_encode),
    create_objects.map(_encode).flatmap(lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n])),  # cut short
    create_objects.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
            b"1" * 5000,
            b'{"model_id": 1e999, "prompt": -1e999}',
            b'{"model_id": "gpt-image-2", "prompt": "x", "prompt": "y"}',
            b'{"model_id": "gpt-image-2", "prompt": "\\ud800"}',
            b'{"model_id": "gpt-image-2", "prompt": "ok", "aspect_ratio": null, "image_urls": null}',
            b"\xef\xbb\xbf{}",
            b"\xc3\x28",
        ]
    ),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20)
steering = st.lists(
    st.tuples(
        st.sampled_from([b"x-mockgen-outcome", b"x-mockgen-delay"]), header_text.map(lambda t: t.encode("latin-1"))
    ),
    max_size=2,
)
paths = st.text(max_size=30).filter(lambda t: "/" not in t and t not in ("", ".", ".."))


def test_fuzz_thousands_of_bodies_never_reach_the_catch_all(errors: Errors, loop: asyncio.AbstractEventLoop) -> None:
    app = create_app("default", clock="manual")
    run_now(app.state.backend.create_account(RICH["credits"], KEY))
    auth = [(b"authorization", f"Bearer {KEY}".encode())]
    seen: dict[int, int] = {}

    @settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, extra=steering, task_id=paths)
    def run(body: bytes, extra: list[tuple[bytes, bytes]], task_id: str) -> None:
        status, _, out = loop.run_until_complete(call(app, "POST", "/api/v1/tasks/create", body, auth + extra))
        seen[status] = seen.get(status, 0) + 1
        answer = json.loads(out)
        assert status == 200 and answer["code"] in (200, 0), (body, answer)
        assert answer["code"] == 0 or answer["data"]["task_id"]
        assert isinstance(answer["msg"], str) and answer["msg"]
        status, _, out = loop.run_until_complete(call(app, "GET", f"/api/v1/tasks/{task_id}", b"", auth))
        assert status == 200 and json.loads(out)["code"] == 0

    run()
    assert errors.records == []
    assert set(seen) == {200}


def _objects(*keys: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, json_values))


control_calls = st.one_of(
    st.tuples(st.just("POST"), st.just("/_mock/clock/advance"), json_values.map(lambda v: {"seconds": v})),
    st.tuples(st.just("POST"), st.just("/_mock/accounts"), _objects("credits", "key", "name")),
    st.tuples(st.just("POST"), st.just(f"/_mock/accounts/{KEY}/credits"), json_values.map(lambda v: {"delta": v})),
    st.tuples(st.just("POST"), st.just("/_mock/next"), _objects("outcome", "count", "model_id", "key", "msg")),
    st.tuples(st.just("POST"), st.just("/_mock/tasks/nosuchtask/resolve"), json_values),
    st.tuples(st.just("GET"), st.just("/_mock/requests/wait"), st.just(None)),
)


def test_fuzz_control_api_bodies_are_4xx_never_500(errors: Errors, loop: asyncio.AbstractEventLoop) -> None:
    app = create_app("default", clock="manual")

    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(req=control_calls, raw=st.booleans())
    def run(req: tuple[str, str, Any], raw: bool) -> None:
        method, path, body = req
        data = b"" if body is None else _encode(body)
        if path.endswith("/wait"):
            path += "?count=1&timeout=0"
        status, _, out = loop.run_until_complete(call(app, method, path, data))
        assert status < 500, (path, body, out)
        json.loads(out)

    run()
    assert errors.records == []


# --- the listed cases --------------------------------------------------------------------------------


def post_endless(
    loop: asyncio.AbstractEventLoop, app: Any, headers: list[tuple[bytes, bytes]], chunk: Callable[[int], bytes]
) -> tuple[list[dict[str, Any]], int]:
    """POST a create from a client that never stops sending (``chunk(n)`` is its n-th chunk, from 1);
    what was sent back, and how many chunks the app read."""
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": chunk(reads), "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    loop.run_until_complete(app(scope("POST", "/api/v1/tasks/create", headers), receive, send))
    return sent, reads


def test_declared_oversize_body_is_refused_before_any_of_it_is_read(loop: asyncio.AbstractEventLoop) -> None:
    app = create_app("default", clock="manual")
    headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"content-length", str(MAX_BODY_BYTES + 1).encode())]
    sent, reads = post_endless(loop, app, headers, lambda n: b"x" * 65536)
    assert sent[0]["status"] == 413 and json.loads(sent[1]["body"])["code"] == 413
    assert reads == 0


def test_endless_chunked_body_is_refused_once_past_the_limit(loop: asyncio.AbstractEventLoop) -> None:
    app = create_app("default", clock="manual")
    sent, reads = post_endless(loop, app, [(b"authorization", f"Bearer {KEY}".encode())], lambda n: b"x" * 65536)
    assert sent[0]["status"] == 413
    assert reads * 65536 <= MAX_BODY_BYTES + 65536  # never more than the limit and one chunk


def test_an_oversize_chunked_body_is_journaled_alike_on_both_paths(loop: asyncio.AbstractEventLoop) -> None:
    """The shortcut and Starlette's routing both keep the first 4 KiB of what arrived before the 413."""
    bodies = []
    for fast in (True, False):
        app = create_app("default", clock="manual", fast_path=fast)
        headers = [(b"authorization", f"Bearer {KEY}".encode())]
        post_endless(loop, app, headers, lambda n: b"%07d" % n * 9363)  # ~64 KiB each
        [entry] = app.state.backend.store.journal.entries
        assert entry["status"] == 413
        bodies.append(entry["body"])
    assert bodies[0] == bodies[1] == (b"0000001" * 9363)[:4096].decode()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not valid JSON"),
        (b"\xc3\x28", "not UTF-8"),
        (b'{"model_id": ["gpt-image-2"], "prompt": "x"}', "Unknown model_id an array"),
        (b'{"model_id": null, "prompt": "x"}', "model_id is required"),
        (b'{"model_id": "gpt-image-2", "prompt": null}', "prompt is required"),
        (b'{"model_id": "gpt-image-2", "prompt": {"text": "x"}}', "prompt is required"),
        (b'{"model_id": "' + b"m" * 500_000 + b'", "prompt": "x"}', "Unknown model_id 'mmmm"),
        (b'{"model_id": "gpt-image-2", "prompt": "x", "aspect_ratio": "' + b"1" * 500_000 + b'"}', "aspect_ratio"),
        (b'{"model_id": ' + b"9" * 5000 + b', "prompt": "x"}', "a number has too many digits"),
        (b'{"model_id": 1e999, "prompt": "x"}', "Unknown model_id a huge number"),
        (b'{"model_id": "gpt-image-2", "model_id": "seedance-2", "prompt": "x"}', "duplicate key 'model_id'"),
        (b"true", "must be a JSON object"),
        (b"42", "must be a JSON object"),
    ],
    ids=lambda v: v[:24].decode("latin-1") if isinstance(v, bytes) else None,
)
def test_bad_bodies_are_code_0_with_a_message(client: Client, errors: Errors, raw: bytes, fragment: str) -> None:
    r = client.post("/api/v1/tasks/create", content=raw, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["code"] == 0 and body["data"] is None and fragment in body["msg"], body["msg"][:200]
    assert len(body["msg"]) < 500  # a client's huge value is never echoed whole
    assert client.balance() == 1000
    assert errors.records == []


def test_a_lone_surrogate_in_a_prompt_is_stored_and_shown_as_valid_json(client: Client) -> None:
    r = client.post(
        "/api/v1/tasks/create", content=b'{"model_id": "gpt-image-2", "prompt": "a \\ud800 b"}', headers=AUTH
    )
    assert r.json()["code"] == 200
    tasks = client.get("/_mock/tasks")
    assert tasks.status_code == 200 and tasks.json()[0]["request"]["prompt"] == "a \ud800 b"
    assert client.get("/_mock/requests").status_code == 200


def test_an_unexpected_exception_is_a_logged_json_500_on_both_paths(make_client: Callable[..., Client]) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    handler = Errors()
    logging.getLogger("mockgen").addHandler(handler)
    try:
        for fast in (True, False):
            app = create_app("default", clock="manual", fast_path=fast)
            app.state.backend.poll = broken  # (the hot path's step)
            with TestClient(app, base_url="http://mock.test", raise_server_exceptions=False) as client:
                r = client.get("/api/v1/tasks/abc", headers=AUTH)
                assert r.status_code == 500
                assert r.json() == {
                    "code": 500,
                    "msg": "Internal error in mockgen (a bug, please report it): RuntimeError",
                    "data": None,
                }
                assert [e["status"] for e in client.get("/_mock/requests").json()] == [500]
        assert len(handler.records) == 2 and "RuntimeError: boom" in handler.format(handler.records[0])
    finally:
        logging.getLogger("mockgen").removeHandler(handler)


# --- keys ----------------------------------------------------------------------------------------------


def test_journal_never_holds_a_whole_key(client: Client) -> None:
    other = "sk-" + "Z" * 32
    client.post(
        f"/api/v1/tasks/create?api_key={other}",
        content=json.dumps({"model_id": "gpt-image-2", "prompt": f"my key is {other}"}),
        headers={**AUTH, "X-Api-Key": other},
    )
    client.get("/api/v1/tasks/nope", headers={"Authorization": f"Bearer {KEY}"})
    journal = client.app.state.backend.store.journal
    assert KEY not in repr(list(journal._items)) and other not in repr(list(journal._items))
    entries = client.get("/_mock/requests").json()
    assert KEY not in json.dumps(entries) and other not in json.dumps(entries)
    assert entries[0]["headers"]["x-api-key"] == "sk-ZZZZ…ZZZZ"
    assert entries[0]["query"] == "api_key=sk-ZZZZ…ZZZZ"
    assert "my key is sk-ZZZZ…ZZZZ" in entries[0]["body"]
    assert KEY not in client.get("/_mock/state").text.replace(f'"key":"{KEY}"', "")


def test_admin_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import mockgen.control

    compared: list[tuple[bytes, bytes]] = []
    real = mockgen.control.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(mockgen.control.hmac, "compare_digest", spy)
    client = TestClient(create_app("default", admin_token="s3cret"), base_url="http://mock.test")
    assert client.get("/_mock/health", headers={"Authorization": "Bearer s3cres"}).status_code == 401
    assert client.get("/_mock/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert compared == [(b"Bearer s3cres", b"Bearer s3cret"), (b"Bearer s3cret", b"Bearer s3cret")]
    client.close()


def test_api_keys_are_found_by_hash_never_by_scanning_accounts(make_client: Callable[..., Client]) -> None:
    client = make_client("ci")  # strict: only listed keys
    listed = "sk-ci000000000000000000000000000001"
    store = client.app.state.backend.store

    def no_scans() -> None:
        raise AssertionError("authentication must not walk the accounts comparing keys")

    store.accounts = no_scans
    near_miss = listed[:-1] + "9"  # shares 34 of 35 characters with a listed key
    r = client.get("/api/v1/tasks/x", headers={"Authorization": f"Bearer {near_miss}"})
    assert r.status_code == 401 and "Unknown API key" in r.json()["msg"]
    r = client.get("/api/v1/tasks/x", headers={"Authorization": f"Bearer {listed}"})
    assert r.status_code == 200 and "Task not found" in r.json()["msg"]


# --- result files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../pyproject.toml",
        "/files/..%2F..%2Fpyproject.toml",
        "/files/%2e%2e%2fmockgen%2f__init__.py",
        "/files/..png",
        "/files/README.md",
        "/files/abc.png%00.txt",
    ],
)
def test_result_files_are_looked_up_by_task_id_never_by_path(client: Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["code"] == 404


# --- the shortcut and Starlette's path answer alike -------------------------------------------------------

SAME_REQUESTS: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("POST", "/api/v1/tasks/create", b'{"model_id": "gpt-image-2", "prompt": "a cat"}', AUTH),
    ("POST", "/api/v1/tasks/create", b'{"model_id": "seedance-2", "prompt": "[fail] a dog"}', AUTH),
    ("POST", "/api/v1/tasks/create", b'{"model_id": "gpt-image-2", "prompt": "x [reject]"}', AUTH),
    ("POST", "/api/v1/tasks/create", b"{", AUTH),
    ("POST", "/api/v1/tasks/create", b'{"model_id": "gpt-image-2", "prompt": "s"}', {**AUTH, "X-Mockgen-Delay": "9"}),
    ("POST", "/api/v1/tasks/create", b'{"model_id": "gpt-image-2", "prompt": "s"}', {**AUTH, "X-Mockgen-Fault": "503"}),
    ("POST", "/api/v1/tasks/create", b'{"model_id": "gpt-image-2", "prompt": "s"}', {**AUTH, "X-Mockgen-Fault": "x"}),
    ("POST", "/api/v1/tasks/create", b"{}", {}),
    ("POST", "/api/v1/tasks/create", b"{}", {"Authorization": "Basic abc"}),
    ("GET", "/api/v1/tasks/{0}", b"", AUTH),
    ("GET", "/api/v1/tasks/{1}", b"", AUTH),
    ("GET", "/api/v1/tasks/{0}", b"", {"Authorization": "Bearer sk-" + "c" * 32}),
    ("GET", "/api/v1/tasks/create", b"", AUTH),
    ("GET", "/api/v1/tasks/nope", b"", {**AUTH, "X-Mockgen-Fault": "429"}),
    ("GET", "/api/v1/tasks/nope", b"", {}),
    ("POST", "/api/v1/tasks/nope", b"", AUTH),
    ("GET", "/api/v1/tasks/", b"", AUTH),
    ("GET", "/api/v1/tasks/a/b", b"", AUTH),
]


def _replay(fast: bool) -> list[Any]:
    app = create_app("ci", fast_path=fast)  # seeded: the same ids both times
    client = TestClient(app, base_url="http://mock.test", follow_redirects=False)
    key = "sk-ci000000000000000000000000000001"
    ids: list[str] = []
    seen = []
    for method, path, body, headers in SAME_REQUESTS:
        headers = {k: v.replace(KEY, key) for k, v in headers.items()}
        r = client.request(method, path.format(*ids, "x", "y"), content=body, headers=headers)
        if r.headers.get("content-type") == "application/json" and r.status_code == 200:
            data = r.json().get("data") or {}
            if "request_id" in data:
                ids.append(data["task_id"])
        drop = {"date", "server"}
        seen.append((r.status_code, sorted((k, v) for k, v in r.headers.items() if k not in drop), r.content))
    journal = client.get("/_mock/requests").json()
    for entry in journal:
        del entry["latency_ms"]
    seen.append(journal)
    seen.append(client.get("/_mock/state").json())
    client.close()
    return seen


def test_the_shortcut_answers_exactly_as_starlettes_routing_does() -> None:
    with_shortcut, without = _replay(fast=True), _replay(fast=False)
    for a, b in zip(with_shortcut, without, strict=True):
        assert a == b


@given(st.recursive(scalars, lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=5), i, max_size=3)))
@settings(max_examples=300, deadline=None, database=None)
def test_dumps_is_json_dumps_compact(value: Any) -> None:
    try:
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        expected = json.dumps(value, separators=(",", ":")).encode()
    assert dumps(value) == expected


@given(st.text(max_size=14), st.text(max_size=18), st.integers())
@settings(max_examples=300, deadline=None, database=None)
def test_the_create_answer_is_dumps_of_its_envelope(task_id: str, request_id: str, credits: int) -> None:
    data = {"task_id": task_id, "request_id": request_id, "credits": credits}
    assert submitted(task_id, request_id, credits) == dumps({"code": 200, "msg": Msg.SUBMITTED, "data": data})


def test_the_poll_answer_is_dumps_of_its_envelope(make_client: Callable[..., Client]) -> None:
    client = make_client()
    backend = client.app.state.backend
    kinds = [(m, p) for m in ("gpt-image-2", "seedance-2") for p in ("a", "b [fail]", "c [slow]")]
    ids = [client.submit(model_id=m, prompt=p)["data"]["task_id"] for m, p in kinds]
    for step in (0, 1, 60):
        client.advance(step)
        for task_id in ids:
            task = run_now(backend.store.get_task(task_id))
            for base in ("http://mock.test", 'http://we"ird\\host', "http://é.test"):
                data = task_data(backend, task, base)
                assert tuple(data) == POLL_KEYS
                assert polled(data) == dumps({"code": 200, "msg": "ok", "data": data})


@given(
    st.fixed_dictionaries({k: scalars for k in POLL_KEYS}), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)
@settings(max_examples=300, deadline=None, database=None)
def test_the_poll_answer_of_any_data_is_dumps_of_its_envelope(data: dict[str, Any], more: dict[str, Any]) -> None:
    data.update(more)
    assert polled(data) == dumps({"code": 200, "msg": "ok", "data": data})


# --- keys in every form, and the key filter -----------------------------------------------------------

HIDDEN = "sk-" + "Q7" * 16  # its 32 characters never appear in the journal, in any form


def _percent(text: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in text)


def _json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


KEY_FORMS: list[tuple[str, str, str, dict[str, str], str]] = [
    # (id, method, path with query, headers, body)
    ("no scheme", "GET", "/api/v1/tasks/x", {"Authorization": HIDDEN}, ""),
    ("tab after Bearer", "GET", "/api/v1/tasks/x", {"Authorization": f"Bearer\t{HIDDEN}"}, ""),
    ("two spaces", "GET", "/api/v1/tasks/x", {"Authorization": f"Bearer  {HIDDEN}"}, ""),
    ("key as scheme", "GET", "/api/v1/tasks/x", {"Authorization": f"{HIDDEN} {HIDDEN}"}, ""),
    ("in the path", "GET", f"/api/v1/tasks/{HIDDEN}", {}, ""),
    ("percent-encoded in the path", "GET", f"/api/v1/tasks/{HIDDEN.replace('-', '%2D')}", {}, ""),
    ("percent-encoded query", "GET", f"/api/v1/tasks/x?api_key={HIDDEN.replace('-', '%2D')}", {}, ""),
    ("lowercase percent", "GET", f"/api/v1/tasks/x?api_key={HIDDEN.replace('-', '%2d')}", {}, ""),
    ("all percent-encoded", "GET", f"/api/v1/tasks/x?k={_percent(HIDDEN)}", {}, ""),
    ("header, percent-encoded", "GET", "/api/v1/tasks/x", {"X-Api-Key": HIDDEN.replace("-", "%2D")}, ""),
    ("json \\u002d", "POST", "/api/v1/tasks/create", {}, '{"prompt": "' + HIDDEN.replace("-", "\\u002d") + '"}'),
    ("json all escaped", "POST", "/api/v1/tasks/create", {}, '{"prompt": "' + _json_escaped(HIDDEN) + '"}'),
    ("form body", "POST", "/api/v1/tasks/create", {}, "key=" + HIDDEN.replace("-", "%2D") + "&x=1"),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"), [f[1:] for f in KEY_FORMS], ids=[f[0] for f in KEY_FORMS]
)
def test_a_key_is_masked_in_every_form_it_is_sent(
    client: Client, method: str, path: str, headers: dict[str, str], body: str
) -> None:
    client.request(method, path, content=body, headers={**AUTH, **headers})
    kept = repr(list(client.app.state.backend.store.journal._items))
    shown = client.get("/_mock/requests").text
    for text in (kept, shown):
        for form in ("Q7" * 16, _percent("Q7" * 16), _json_escaped("Q7" * 16), _percent("Q7" * 16).lower()):
            assert form not in text
    assert "sk-Q7Q7…Q7Q7" in shown


def test_the_masked_authorization_header_keeps_its_scheme(client: Client) -> None:
    for value, shown in [
        (f"Bearer\t{HIDDEN}", "Bearer sk-Q7Q7…Q7Q7"),
        (HIDDEN, "sk-Q7Q7…Q7Q7"),
        ("Basic dXNlcjpwYXNz", "Basic ***"),
        ("Bearer", "Bearer"),
        ("weird:token", "***"),
    ]:
        client.delete("/_mock/requests", headers=JSON)
        client.get("/api/v1/tasks/x", headers={"Authorization": value})
        [entry] = client.get("/_mock/requests").json()
        assert entry["headers"]["authorization"] == shown


def test_the_key_filter_matches_that_key_only(client: Client) -> None:
    """Two keys with the same masked form ('sk-abcd…wxyz') are told apart by ?key=."""
    one, other = ("sk-abcd" + c * 24 + "wxyz" for c in "01")
    client.submit(key=one, prompt="one")
    client.submit(key=other, prompt="other")
    client.submit(key=other, prompt="other again")
    assert {e["key"] for e in client.get("/_mock/requests").json()} == {"sk-abcd…wxyz"}
    assert len(client.get("/_mock/requests", params={"key": one}).json()) == 1
    assert len(client.get("/_mock/requests", params={"key": other}).json()) == 2
    assert client.get("/_mock/requests", params={"key": "sk-abcd…wxyz"}).json() == []
    r = client.get("/_mock/requests/wait", params={"key": one, "count": 1, "timeout": 0})
    assert r.status_code == 200 and [json.loads(e["body"])["prompt"] for e in r.json()["requests"]] == ["one"]
    r = client.get("/_mock/requests/wait", params={"key": one, "count": 2, "timeout": 0})
    assert r.status_code == 408 and r.json()["count"] == 1


def test_a_waiter_on_a_key_is_woken_by_that_key_only(loop: asyncio.AbstractEventLoop) -> None:
    import httpx

    app = create_app("default", clock="manual")
    one, other = ("sk-abcd" + c * 24 + "wxyz" for c in "01")

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mock.test") as http:
            params = {"key": one, "count": 1, "timeout": 30}
            waiting = asyncio.ensure_future(http.get("/_mock/requests/wait", params=params))
            for _ in range(50):  # bounded: until the waiter is parked
                await asyncio.sleep(0)
            await http.get("/api/v1/tasks/x", headers={"Authorization": f"Bearer {other}"})
            assert not waiting.done()
            await http.get("/api/v1/tasks/y", headers={"Authorization": f"Bearer {one}"})
            return await asyncio.wait_for(waiting, 10)

    r = loop.run_until_complete(run())
    assert r.status_code == 200 and [e["path"] for e in r.json()["requests"]] == ["/api/v1/tasks/y"]


# --- PUT /_mock/scenario {"name"}: bundled scenarios only ----------------------------------------------


def test_a_scenario_name_loads_only_bundled_scenarios(
    client: Client, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret.yaml").write_text("name: secret\ndescription: the launch codes\n")
    (tmp_path / "secret").write_text("name: secret2\n")
    monkeypatch.chdir(tmp_path)
    answers = {}
    for name in ("secret.yaml", "secret", "missing.yaml", "./secret.yaml", str(tmp_path / "secret.yaml"), "../x"):
        r = client.put("/_mock/scenario", json={"name": name})
        assert r.status_code == 422, r.text
        [issue] = r.json()["issues"]
        assert "the launch codes" not in r.text and "is not a bundled scenario (bundled: ci, default" in r.text
        answers[name] = issue["message"].replace(repr(name), "NAME")
    assert len(set(answers.values())) == 1  # the same answer whether the file exists or not: no oracle
    assert client.get("/_mock/scenario").json()["name"] == "default"
    r = client.put("/_mock/scenario", json={"name": "ci"})
    assert r.status_code == 200 and r.json()["name"] == "ci"
