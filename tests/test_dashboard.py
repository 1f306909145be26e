"""The dashboard: served assets (in process) and the live page, end to end in Debian's headless Chromium."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from mockgen import create_app
from mockgen.testing import MockServer

from .redis_server import fresh_prefix, session_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CI_KEY = "sk-ci000000000000000000000000000001"
POOR_KEY = "sk-ci000000000000000000000000000002"
XSS = "<img src=x onerror=alert(1)>"


# --- the page and its assets, in process ---------------------------------------------------------


def test_page_loads_only_its_own_assets() -> None:
    with TestClient(create_app("ci")) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert "/static/dashboard.js" in assets and "/static/dashboard.css" in assets
        assert not [a for a in assets if a.startswith(("http:", "https:", "//"))]  # offline: no CDN
        for asset in ("/static/dashboard.js", "/static/dashboard.css"):
            r = client.get(asset)
            assert r.status_code == 200, asset
        assert (
            client.get("/static/dashboard.js")
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert client.get("/static/nope.js").status_code == 404
        assert client.get("/_mock/requests").json() == []  # the page and its assets are not journaled


def test_dashboard_script_never_writes_html() -> None:
    script = (ROOT / "mockgen" / "static" / "dashboard.js").read_text(encoding="utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


def test_task_list_limit_gives_the_newest_and_the_total() -> None:
    with TestClient(create_app("ci")) as client:
        auth = {"Authorization": f"Bearer {CI_KEY}"}
        for i in range(3):
            body = {"model_id": "gpt-image-2", "prompt": f"p{i}"}
            assert client.post("/api/v1/tasks/create", json=body, headers=auth).json()["code"] == 200
        r = client.get("/_mock/tasks?limit=2")
        assert [t["request"]["prompt"] for t in r.json()] == ["p1", "p2"]
        assert r.headers["x-total-count"] == "3"
        assert len(client.get("/_mock/tasks").json()) == 3
        assert client.get("/_mock/tasks?limit=0").json() == []
        assert client.get("/_mock/tasks?limit=x").status_code == 400
        account = client.get(f"/_mock/accounts/{CI_KEY}?limit=1")
        assert [e["task_id"] for e in account.json()["ledger"]] == [r.json()[1]["task_id"]]
        assert account.headers["x-total-count"] == "3"
        assert len(client.get(f"/_mock/accounts/{CI_KEY}").json()["ledger"]) == 3


# --- the live page in a real browser -------------------------------------------------------------


def _unavailable(reason: str) -> None:
    """Skip where Chromium is missing on a workstation; fail in CI, where .ci/run installs it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)  # two shared cores in CI: allow a few slow polls
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(10_000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs  # any alert() would be injected script running
    yield page
    context.close()


def _row(page: Any, prompt: str) -> Any:
    return page.locator("#task-rows tr").filter(has=page.get_by_text(prompt, exact=True))


def _submit(
    page: Any, prompt: str, *, account: str = CI_KEY, model: str = "gpt-image-2", ratio: str = "", queued: bool = True
) -> Any:
    page.select_option("#submit-account", account)
    page.select_option("#submit-model", model)
    page.select_option("#submit-ratio", ratio)
    page.fill("#submit-prompt", prompt)
    page.get_by_role("button", name="Submit task").click()
    row = _row(page, prompt)
    from playwright.sync_api import expect

    expect(row).to_have_attribute("data-status", "1" if queued else re.compile("[1-4]"))
    return row


def _advance(page: Any, seconds: float) -> None:
    page.fill("#advance-seconds", str(seconds))
    page.click("#advance-button")


def _balance(page: Any, key: str) -> Any:
    return page.locator(f'article.account[data-key="{key}"] [data-role="balance"]')


def _shoot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


def _replicas(stack: contextlib.ExitStack, store: str) -> tuple[MockServer, MockServer]:
    """A server on the ci scenario, and the one the page is shown by: itself (the memory store), or
    another replica of its world on Redis (the dashboard works against any replica)."""
    if store == "memory":
        mock = stack.enter_context(MockServer("ci"))
        return mock, mock
    options = {"store": session_server().url, "store_prefix": fresh_prefix("dashboard")}
    return stack.enter_context(MockServer("ci", **options)), stack.enter_context(MockServer("ci", **options))


@pytest.mark.browser
@pytest.mark.parametrize("store", ["memory", "redis"])
def test_demo_tasks_go_live_and_a_failure_is_refunded(page: Any, store: str) -> None:
    from playwright.sync_api import expect

    with contextlib.ExitStack() as stack:
        mock, shown = _replicas(stack, store)
        page.goto(shown.base_url)
        expect(page.locator("#scenario-name")).to_have_text("ci")
        expect(page.locator("#clock-kind")).to_have_text("manual clock")
        expect(page.locator("#clock-now")).to_have_text("2026-01-01 00:00:00 UTC")
        expect(_balance(page, CI_KEY)).to_have_text("1000")

        # Submit from the form; the row moves 1 -> 2 -> 3 as the page's own control moves the clock.
        done = _submit(page, "a lighthouse at dusk, oil painting", ratio="16:9")
        expect(_balance(page, CI_KEY)).to_have_text("985")
        _advance(page, 2)
        expect(page.locator("#clock-now")).to_have_text("2026-01-01 00:00:02 UTC")
        expect(done).to_have_attribute("data-status", "2")
        page.get_by_role("button", name="+5 s").click()
        expect(done).to_have_attribute("data-status", "3")
        thumb = done.locator("img.thumb")
        expect(thumb).to_have_attribute("src", re.compile(r"/files/\w+\.png$"))
        page.wait_for_function("img => img.complete && img.naturalWidth === 1280", arg=thumb.element_handle())

        # A video: resolved as a success on the page, it gets a link to its MP4.
        video = _submit(page, "a paper boat drifting down a rainy street", model="seedance-2")
        video.get_by_role("button", name="Success").click()
        expect(video).to_have_attribute("data-status", "3")
        expect(video.get_by_role("link", name="video")).to_have_attribute("href", re.compile(r"/files/\w+\.mp4$"))

        # Resolve another as failed: its refund shows in the balance and the ledger at once.
        doomed = _submit(page, "a storm over the sea at night")
        expect(_balance(page, CI_KEY)).to_have_text("910")  # 1000 - 15 - 60 - 15
        task_id = doomed.get_attribute("data-task-id")
        doomed.get_by_role("button", name="Fail").click()
        expect(doomed).to_have_attribute("data-status", "4")
        expect(_balance(page, CI_KEY)).to_have_text("925")
        refund = page.locator(f'article.account[data-key="{CI_KEY}"] li[data-kind="refund"][data-task="{task_id}"]')
        expect(refund).to_contain_text("+15")

        # A prompt with HTML in it is shown as text and never runs.
        hostile = _submit(page, XSS)
        expect(hostile.locator('[data-role="prompt"]')).to_have_text(XSS)
        assert page.locator('img[src="x"]').count() == 0
        assert page.dialogs == []
        hostile.get_by_role("button", name="Success").click()
        expect(hostile).to_have_attribute("data-status", "3")

        # Top up and a new key, from the page.
        poor = page.locator(f'article.account[data-key="{POOR_KEY}"]')
        poor.locator("input").fill("250")
        poor.get_by_role("button", name="Top up").click()
        expect(_balance(page, POOR_KEY)).to_have_text("270")
        expect(poor.locator('li[data-kind="topup"]')).to_contain_text("+250")
        page.fill("#new-key-name", "demo")
        page.fill("#new-key-credits", "500")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("article.account").filter(has_text="demo").locator('[data-role="balance"]')).to_have_text(
            "500"
        )

        # One more task left queued and one running, for a screenshot mid-demo.
        _submit(page, "a neon koi pond in the rain", ratio="1:1")
        _advance(page, 1.5)
        _submit(page, "a tiny robot watering a bonsai tree", model="nano-banana-2", ratio="3:4")
        expect(page.locator("#task-summary")).to_contain_text("1 queued · 1 running")
        assert mock.balance(CI_KEY) == 1000 - 15 - 60 - 15 + 15 - 15 - 15 - 8
        page.locator("#notice").click()  # a click dismisses the last notice
        expect(page.locator("#notice")).to_be_hidden()
        shot = _shoot(page, "dashboard.png")
        if os.environ.get("MOCKGEN_DOCS_SCREENSHOT") == "1" and store == "memory":  # the README's picture
            shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")
        assert page.dialogs == []


@pytest.mark.browser
def test_switching_scenario_and_resetting_from_the_page(page: Any) -> None:
    from playwright.sync_api import expect

    with MockServer("ci") as mock:
        page.goto(mock.base_url)
        _submit(page, "something to be reset away")
        page.get_by_role("button", name="Reset the world").click()
        page.get_by_role("button", name="Click again to reset").click()
        expect(page.locator("#task-rows tr")).to_have_count(0)
        expect(_balance(page, CI_KEY)).to_have_text("1000")

        page.select_option("#scenario-select", "default")
        page.get_by_role("button", name="Load").click()
        expect(page.locator("#scenario-name")).to_have_text("default")
        expect(page.locator("#clock-kind")).to_have_text("real clock")
        expect(page.locator("#advance-button")).to_be_disabled()
        # Open auth: the form can submit as a brand-new key, which the mock creates with credits.
        _submit(page, "hello from a new key", account="new", queued=False)
        expect(page.locator("article.account")).to_have_count(1)
        new_key = page.locator("article.account").get_attribute("data-key")
        expect(page.locator("#submit-account")).to_have_value(new_key)  # the next submit uses it again
        assert mock.control("GET", "scenario")["name"] == "default"
        _shoot(page, "dashboard-default.png")


@pytest.mark.browser
def test_admin_token_is_asked_for_and_kept_for_the_session(page: Any) -> None:
    from playwright.sync_api import expect

    with MockServer("ci", admin_token="s3cret-token") as mock:
        page.goto(mock.base_url)
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        page.fill("#token-input", "wrong")
        page.get_by_role("button", name="Unlock").click()
        expect(page.locator("#token-error")).to_be_visible()
        page.fill("#token-input", "s3cret-token")
        page.get_by_role("button", name="Unlock").click()
        expect(dialog).to_be_hidden()
        expect(_balance(page, CI_KEY)).to_have_text("1000")
        page.reload()
        expect(_balance(page, CI_KEY)).to_have_text("1000")
        expect(dialog).to_be_hidden()
        _submit(page, "a task sent with the admin token kept")
        assert len(mock.tasks()) == 1


@pytest.mark.browser
def test_a_task_created_behind_a_lost_answer_is_marked(page: Any) -> None:
    import httpx
    from playwright.sync_api import expect

    from mockgen.scenario import parse_scenario

    fault = f"  - {{name: {json.dumps(XSS)}, match: {{route: create, first_n: 1}}, lose_answer: 502}}\n"
    with MockServer(parse_scenario("clock: manual\nfaults:\n" + fault, "lost.yaml")) as mock:
        with httpx.Client(base_url=mock.base_url, headers=mock.headers(), timeout=5) as http:
            for prompt, status in (("charged behind a lost answer", 502), ("answered as usual", 200)):
                r = http.post("/api/v1/tasks/create", json={"model_id": "gpt-image-2", "prompt": prompt})
                assert r.status_code == status
        page.goto(mock.base_url)
        lost = _row(page, "charged behind a lost answer").locator('[data-role="lost-answer"]')
        expect(lost).to_have_text("answer lost")
        expect(lost).to_have_attribute("title", re.compile(re.escape(XSS)))  # the fault's name, as text
        answered = _row(page, "answered as usual")
        expect(answered).to_have_attribute("data-status", "1")
        expect(answered.locator('[data-role="lost-answer"]')).to_have_count(0)
        assert page.locator('img[src="x"]').count() == 0 and page.dialogs == []
        _shoot(page, "dashboard-lost-answer.png")


# --- a page of another origin cannot change the world (README, Who can drive the control API) -----------

ATTACK_PAGE = """<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe>
<form id="f1" method="POST" enctype="text/plain" target="sink1" action="MOCK/_mock/clock/advance">
  <input name='{"seconds": 86400, "x": "' value='"}'></form>
<form id="f2" method="POST" target="sink2" action="MOCK/_mock/accounts/KEY/credits">
  <input name="delta" value="1000000"></form>
<form id="f3" method="POST" enctype="multipart/form-data" target="sink3" action="MOCK/_mock/next">
  <input name="outcome" value="failed"></form>
<script>
const results = {};
async function attempt(name, url, init) {
  try {
    const r = await fetch("MOCK" + url, init);
    results[name] = `${r.type}:${r.status}`;
  } catch (e) {
    results[name] = `blocked:${e.name}`;
  }
}
(async () => {
  const simple = { method: "POST", mode: "no-cors", headers: { "Content-Type": "text/plain" } };
  await attempt("reset", "/_mock/reset", { method: "POST", mode: "no-cors" });  // first: it would undo the rest
  await attempt("topup", "/_mock/accounts/KEY/credits", { ...simple, body: '{"delta": 1000000}' });
  await attempt("advance", "/_mock/clock/advance", { ...simple, body: '{"seconds": 86400}' });
  await attempt("next", "/_mock/next", { ...simple, body: '{"outcome": "failed", "count": 5}' });
  const json = { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"delta": 1000000}' };
  await attempt("json_topup", "/_mock/accounts/KEY/credits", json);  // needs a preflight
  await attempt("read_state", "/_mock/state", {});
  for (const [form, frame] of [["f1", "sink1"], ["f2", "sink2"], ["f3", "sink3"]]) {
    const sink = document.getElementsByName(frame)[0];
    const loaded = new Promise((resolve) => sink.addEventListener("load", resolve, { once: true }));
    document.getElementById(form).submit();
    await loaded;
    results[form] = "submitted";
  }
  window.results = results;
  document.title = "done";
})();
</script></body></html>"""


@contextlib.contextmanager
def _attacker(page_html: str) -> Iterator[str]:
    """Another origin (another loopback address and port) serving one page, as any site the user visits."""
    body = page_html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.2:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.browser
def test_a_page_of_another_origin_cannot_change_the_world(page: Any) -> None:
    from playwright.sync_api import expect

    with MockServer("ci") as mock:
        mock.advance(7)  # a world away from its start, which a reset would undo
        mock.topup(5, CI_KEY)
        before = mock.state()
        html = ATTACK_PAGE.replace("MOCK", mock.base_url).replace("KEY", CI_KEY)
        with _attacker(html) as evil:
            page.goto(evil)
            page.wait_for_function("document.title === 'done'")
            results = page.evaluate("window.results")
        # Every simple request reached the server (an opaque answer, not a network error) and was refused;
        # the JSON one and the read need CORS, which the server never grants.
        assert results == {
            "topup": "opaque:0", "advance": "opaque:0", "next": "opaque:0", "reset": "opaque:0",
            "json_topup": "blocked:TypeError", "read_state": "blocked:TypeError",
            "f1": "submitted", "f2": "submitted", "f3": "submitted",
        }  # fmt: skip
        assert mock.state() == before
        assert mock.balance(CI_KEY) == 1005 and mock.now() == before["clock"]["now"]
        assert mock.control("GET", "next") == {"queued": []}

        # ... while the dashboard, on the server's own origin, drives it as before.
        page.goto(mock.base_url)
        expect(_balance(page, CI_KEY)).to_have_text("1005")
        _advance(page, 5)
        expect(page.locator("#clock-now")).to_have_text("2026-01-01 00:00:12 UTC")
        assert mock.now() == before["clock"]["now"] + 5


@pytest.mark.browser
def test_a_dns_rebinding_page_reads_and_changes_nothing(browser: Any) -> None:
    """The attacker's name now resolves to 127.0.0.1: to the browser the mock is then the page's own origin."""
    rebinding = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP rebind.test 127.0.0.1"]
    )
    try:
        with MockServer("ci") as mock:
            before = mock.state()
            page = rebinding.new_page()
            page.set_default_timeout(10_000)
            origin = f"http://rebind.test:{mock.port}"
            assert page.goto(f"{origin}/").status == 403  # no dashboard under a foreign name
            seen = page.evaluate(
                """async (key) => {
                    const json = { "Content-Type": "application/json" };
                    const state = await fetch("/_mock/state");
                    const topup = await fetch(`/_mock/accounts/${key}/credits`,
                        { method: "POST", headers: json, body: '{"delta": 1000000}' });
                    const spend = await fetch("/api/v1/tasks/create", { method: "POST",
                        headers: { ...json, Authorization: `Bearer ${key}` },
                        body: '{"model_id": "seedance-2", "prompt": "on the user\\'s credits"}' });
                    return [state.status, await state.text(), topup.status, spend.status, await spend.text()];
                }""",
                CI_KEY,
            )
            state_status, state_text, topup_status, spend_status, spend_text = seen
            assert (state_status, topup_status, spend_status) == (403, 403, 403), seen
            assert CI_KEY not in state_text and "--allowed-host rebind.test" in state_text
            assert json.loads(spend_text)["code"] == 403
            assert mock.state() == before and mock.tasks() == []
    finally:
        rebinding.close()


@pytest.mark.browser
def test_the_page_asks_for_the_newest_accounts_only(page: Any) -> None:
    from playwright.sync_api import expect

    with MockServer("ci") as mock:
        keys = [mock.create_account(credits=i, name=f"n{i}") for i in range(30)]  # and the ci scenario's two
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if "/_mock/accounts?" in r.url else None)
        page.goto(mock.base_url)
        expect(page.locator("article.account")).to_have_count(24)
        expect(page.locator("#accounts-more")).to_have_text("8 more accounts are not shown.")
        shown = [page.locator("article.account").nth(i).get_attribute("data-key") for i in range(24)]
        assert shown == keys[-24:]  # the newest, oldest first
        assert asked and all(url.endswith("/_mock/accounts?limit=24") for url in asked)
