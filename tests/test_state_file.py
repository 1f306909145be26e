"""`--state-file`: checked at start, never silently swapped between scenarios, never lost at shutdown."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from mockgen import create_app
from mockgen.store import run_now
from mockgen.testing import MockServer

from .serving import serve_once

CREATE = "/api/v1/tasks/create"
CI_KEY = {"Authorization": "Bearer sk-ci000000000000000000000000000001"}


def saved_world(path: Path, scenario: str = "ci") -> str:
    """A state file saved at a clean shutdown of a server on ``scenario``, with one task in it."""
    with TestClient(create_app(scenario, clock="manual", state_file=path)) as client:
        client.post(CREATE, json={"model_id": "gpt-image-2", "prompt": "a cat"}, headers=CI_KEY)
    return path.read_text()


def test_a_state_saved_under_another_scenario_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    before = saved_world(path, "ci")
    done = serve_once("--port", "0", "--scenario", "default", "--state-file", str(path))
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Error: state file {path} refused: it was saved under the scenario 'ci', ")
    assert "this server runs 'default'" in done.stderr and "--state-any-scenario" in done.stderr
    assert path.read_text() == before  # nothing was loaded, so nothing will be overwritten


def test_state_any_scenario_loads_it_and_saves_it_under_the_scenario_in_force(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    saved_world(path, "ci")
    app = create_app("default", clock="manual", state_file=path, state_any_scenario=True)
    assert app.state.state_loaded is True
    with TestClient(app) as client:
        assert len(client.get("/_mock/tasks").json()) == 1
    assert json.loads(path.read_text())["scenario"] == "default"


@pytest.mark.parametrize("where", ["a-file/state.json", "no-such-dir/state.json"])
def test_an_unwritable_state_path_is_refused_at_start(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    path = tmp_path / where
    done = serve_once("--port", "0", "--state-file", str(path))
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Error: state file {path} refused: cannot write {path}.tmp")


def test_a_prompt_with_a_lone_surrogate_saves_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    body = b'{"model_id": "gpt-image-2", "prompt": "a cat \\ud800 on a mat"}'
    with MockServer("ci", state_file=path) as mock:
        created = httpx.post(
            mock.url(CREATE), content=body, headers={**mock.headers(), "Content-Type": "application/json"}
        )
        task_id = created.json()["data"]["task_id"]
    path.read_text(encoding="ascii")  # escaped, so any string survives the trip
    with MockServer("ci", state_file=path) as mock:
        assert run_now(mock.app.state.backend.store.get_task(task_id)).prompt == "a cat \ud800 on a mat"


def test_a_save_that_fails_keeps_the_old_file_removes_its_tmp_and_says_so(tmp_path: Path, caplog) -> None:
    path = tmp_path / "world.json"
    before = saved_world(path, "ci")
    app = create_app("ci", state_file=path)
    with TestClient(app):
        # A value no JSON can hold; the API refuses such values where they come in, and if one
        # ever slipped through, the save must fail loudly rather than write an unloadable file.
        app.state.backend.clock.set(float("inf"))
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world.json"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert errors[0].getMessage().startswith(f"state file {path} NOT written, the previous one is kept: ValueError")


def test_a_save_that_fails_after_writing_its_tmp_removes_it(tmp_path: Path, caplog) -> None:
    path = tmp_path / "world.json"
    app = create_app("ci", state_file=path)
    with TestClient(app):
        (path / "in-the-way").mkdir(parents=True)  # the .tmp is written, then cannot replace a directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world.json"] and path.is_dir()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f"state file {path} NOT written")
