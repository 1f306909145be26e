"""A client generated from GET /openapi.json by openapi-python-client: made with no warnings, and it
parses every answer of the contract (faults included) and of the control API into the right objects."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from mockgen.testing import MockServer

from .conftest import KEY

pytest.importorskip("openapi_python_client")

PACKAGE = "mockgen_generated_client"
# The generator knows JSON, text and application/octet-stream; the result files are binary too.
CONFIG = "content_type_overrides:\n  image/png: application/octet-stream\n  video/mp4: application/octet-stream\n"


class Generated:
    """The generated package, its modules reached by attribute: ``gen.api.contract.create_task``."""

    def __init__(self, root: ModuleType) -> None:
        self.root = root

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.{name}")

    @property
    def models(self) -> Any:
        return self.module("models")


@pytest.fixture(scope="module")
def live() -> Iterator[MockServer]:
    with MockServer("default", clock="manual") as mock:
        yield mock


@pytest.fixture(scope="module")
def generation(live: MockServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Generate the client from the served document; the package's directory and the generator's output."""
    where = tmp_path_factory.mktemp("generated")
    (where / "openapi.json").write_text(json.dumps(httpx.get(live.url("/openapi.json")).json()), encoding="utf-8")
    (where / "config.yaml").write_text(CONFIG, encoding="utf-8")
    bin_dir = Path(sys.executable).parent  # its post-generation hooks run ruff, which is installed beside it
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", "openapi.json", "--config", "config.yaml",
         "--meta", "none", "--output-path", PACKAGE],
        cwd=where, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return where, output


@pytest.fixture(scope="module")
def gen(generation: tuple[Path, str]) -> Iterator[Generated]:
    where, _ = generation
    sys.path.insert(0, str(where))
    try:
        yield Generated(importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture()
def client(gen: Generated, live: MockServer) -> Iterator[Any]:
    """An authenticated client of the generated package, on a world back at its start."""
    httpx.post(live.url("/_mock/reset"), headers={"Content-Type": "application/json"}).raise_for_status()
    with gen.module("client").AuthenticatedClient(base_url=live.url(""), token=KEY) as c:
        yield c


def test_the_generator_warns_about_nothing(generation: tuple[Path, str]) -> None:
    where, output = generation
    assert "warning" not in output.lower() and "error" not in output.lower(), output
    operations = {p.stem for p in (where / PACKAGE / "api").rglob("*.py") if p.stem != "__init__"}
    assert {"create_task", "get_task", "get_result_file", "get_health", "put_state", "wait_for_requests"} <= operations


def _create(gen: Generated, client: Any, prompt: str = "a cat", model: str = "GPT_IMAGE_2") -> Any:
    m = gen.models
    body = m.CreateRequest(model_id=getattr(m.CreateRequestModelId, model), prompt=prompt)
    return gen.module("api.contract.create_task").sync_detailed(client=client, body=body)


def test_create_success_and_code_0_parse(gen: Generated, client: Any) -> None:
    m = gen.models  # (a field named like a Python builtin, as credits, gets a trailing _)
    created = _create(gen, client).parsed
    assert isinstance(created, m.CreateSuccess) and created.code == 200
    assert created.data.task_id and created.data.request_id and created.data.credits_ == 15
    refused = _create(gen, client, "[reject] a cat").parsed
    assert isinstance(refused, m.BusinessError) and refused.code == 0 and refused.msg and refused.data is None
    unknown = gen.module("api.contract.get_task").sync_detailed("nosuchtask00", client=client).parsed
    assert isinstance(unknown, m.BusinessError) and unknown.code == 0 and unknown.data is None


def test_401_and_413_parse(gen: Generated, client: Any, live: MockServer) -> None:
    m = gen.models
    with gen.module("client").AuthenticatedClient(base_url=live.url(""), token="sk-1") as stranger:
        answer = _create(gen, stranger)
        assert answer.status_code == 401 and isinstance(answer.parsed, m.AuthError) and answer.parsed.code == 401
    too_big = _create(gen, client, "x" * 2_000_000)
    assert too_big.status_code == 413 and isinstance(too_big.parsed, m.HttpError) and too_big.parsed.code == 413


@pytest.mark.parametrize(("model", "prompt", "last"), [("GPT_IMAGE_2", "a cat", 3), ("SEEDANCE_2", "a cat [fail]", 4)])
def test_a_poll_parses_at_every_status(gen: Generated, client: Any, model: str, prompt: str, last: int) -> None:
    m = gen.models
    task_id = _create(gen, client, prompt, model).parsed.data.task_id
    get_task = gen.module("api.contract.get_task")
    advance = gen.module("api.control.advance_clock")
    seen = []
    for _ in range(12):
        polled = get_task.sync_detailed(task_id, client=client).parsed
        assert isinstance(polled, m.QuerySuccess) and polled.data.task_id == task_id
        seen.append(int(polled.data.task_status))
        assert isinstance(advance.sync_detailed(client=client, body=m.ClockAdvance(seconds=0.5)).parsed, m.ClockNow)
    assert sorted(set(seen)) == [1, 2, last]
    data = get_task.sync_detailed(task_id, client=client).parsed.data
    if last == 3:
        assert data.image_url.endswith(f"/files/{task_id}.png") and data.video_url is None and data.credits_ == 15
    else:
        assert data.image_url is None and data.video_url is None and str(data.task_type) == "video"


@pytest.mark.parametrize("status", [400, 403, 408, 409, 429, 500, 502, 503, 504])
def test_injected_faults_parse_on_both_routes(gen: Generated, live: MockServer, status: int) -> None:
    m = gen.models
    headers = {"X-Mockgen-Fault": str(status)}
    with gen.module("client").AuthenticatedClient(base_url=live.url(""), token=KEY, headers=headers) as faulty:
        answers = [_create(gen, faulty), gen.module("api.contract.get_task").sync_detailed("abc", client=faulty)]
    for answer in answers:
        assert answer.status_code == status
        assert isinstance(answer.parsed, m.HttpError) and answer.parsed.code == status and answer.parsed.data is None
        assert answer.headers["x-mockgen-fault"] == f"header:{status}"
        assert ("retry-after" in answer.headers) == (status in (429, 503))


def test_a_result_file_downloads_as_bytes(gen: Generated, client: Any) -> None:
    task_id = _create(gen, client).parsed.data.task_id
    gen.module("api.control.resolve_task").sync_detailed(
        task_id, client=client, body=gen.models.Resolve(outcome=gen.models.ResolveOutcome.SUCCESS)
    )
    got = gen.module("api.files.get_result_file").sync_detailed(f"{task_id}.png", client=client)
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
    missing = gen.module("api.files.get_result_file").sync_detailed("nosuchtask00.png", client=client).parsed
    assert isinstance(missing, gen.models.HttpError) and missing.code == 404


def test_the_control_answers_parse(gen: Generated, client: Any) -> None:
    m = gen.models

    def call(name: str, *args: Any, **kwargs: Any) -> Any:
        return gen.module(f"api.control.{name}").sync_detailed(*args, client=client, **kwargs).parsed

    health = call("get_health")
    assert isinstance(health, m.Health) and health.scenario == "default" and str(health.clock) == "manual"
    task_id = _create(gen, client).parsed.data.task_id
    accounts = call("list_accounts")
    assert [a.key for a in accounts] == [KEY] and accounts[0].credits_ == 985
    account = call("get_account", KEY)
    assert isinstance(account, m.AccountWithLedger) and account.ledger[-1].amount == 15
    assert str(account.ledger[-1].kind) == "charge" and account.ledger[-1].task_id == task_id
    new = call("create_account", body=m.NewAccount(credits_=7, name="ci"))
    assert isinstance(new, m.Account) and new.credits_ == 7 and new.name == "ci" and new.key.startswith("sk-")
    topped = call("change_credits", new.key, body=m.CreditsChange(delta=3))
    assert isinstance(topped, m.AccountWithLedger) and topped.credits_ == 10
    [view] = call("list_tasks", key=KEY)
    assert isinstance(view, m.TaskView) and view.task_id == task_id and view.request.prompt == "a cat"
    resolved = call("resolve_task", task_id, body=m.Resolve(outcome=m.ResolveOutcome.FAILED, msg="no"))
    assert isinstance(resolved, m.TaskView) and resolved.status == 4 and resolved.message == "no"
    refused = gen.module("api.control.resolve_task").sync_detailed(
        task_id, client=client, body=m.Resolve(outcome=m.ResolveOutcome.SUCCESS)
    )
    assert (
        refused.status_code == 409 and isinstance(refused.parsed, m.ControlError) and "already" in refused.parsed.error
    )
    missing = gen.module("api.control.get_task_record").sync_detailed("nosuchtask00", client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, m.ControlError)
    journal = call("list_requests", path="/api/v1/*")
    assert journal and all(isinstance(e, m.JournalEntry) for e in journal)
    assert journal[0].method == "POST" and journal[0].status == 200 and journal[0].task_id == task_id
    waited = gen.module("api.control.wait_for_requests").sync_detailed(client=client, count=99, timeout=0.05)
    assert waited.status_code == 408 and isinstance(waited.parsed, m.WaitResult) and waited.parsed.arrived is False
    scenario = call("get_scenario")
    assert isinstance(scenario, m.ScenarioInfo) and scenario.name == "default"
    assert scenario.models["gpt-image-2"].cost == 15
    assert "default" in call("list_scenarios")
    queued = call("queue_next", body=m.QueueNext(outcome=m.QueueNextOutcome.FAILED, count=2))
    assert isinstance(queued, m.NextQueue) and [(q.outcome, q.count) for q in queued.queued] == [("failed", 2)]
    state = call("get_state")
    assert isinstance(state, m.State) and state.version == 1 and len(state.tasks) == 1
    assert isinstance(call("put_state", body=state), m.StateRestored)
    assert call("get_state").to_dict() == state.to_dict()
    loaded = call("load_scenario", body=m.ScenarioName(name=m.ScenarioNameName.DEFAULT))
    assert isinstance(loaded, m.ScenarioLoaded) and loaded.loaded is True
    reset = call("reset", body={})  # a change is sent as JSON, also when it carries nothing
    assert isinstance(reset, m.ResetDone) and reset.reset is True


def test_a_refused_scenario_parses_with_its_issues(gen: Generated, client: Any, live: MockServer) -> None:
    r = httpx.put(live.url("/_mock/scenario"), content="models: 3\n", headers={"content-type": "text/yaml"})
    assert r.status_code == 422
    refused = gen.models.ControlError.from_dict(r.json())
    assert refused.error == "scenario refused" and refused.issues
    assert all(isinstance(i, gen.models.ScenarioIssue) and i.message for i in refused.issues)
