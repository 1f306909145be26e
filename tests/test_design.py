"""The layout the README's Design section describes: the Backend is the only door into the world,
nothing below the HTTP layer imports Starlette, each message is written once, every module is named."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mockgen.spec import Msg

from .conftest import Client

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mockgen"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
# The domain code that may hold the store and read the scenario's insides.
DOORS = {"backend.py", "store.py", "state.py"}
BELOW_HTTP = {
    "spec.py", "scenario.py", "clock.py", "models.py", "errors.py", "journal.py", "backend.py", "state.py",
    "store.py", "media/__init__.py", "media/common.py", "media/png.py", "media/mp4.py", "draws.py", "redis_store.py",
    "redis_journal.py", "resp.py",
}  # fmt: skip


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_edges_reach_the_world_only_through_the_backend() -> None:
    reaching = re.compile(r"\.store\.|\.scenario\.")
    found = [
        f"{_name(path)}:{n}: {line.strip()}"
        for path in MODULES
        if _name(path) not in DOORS
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if reaching.search(line)
    ]
    assert found == []


@pytest.mark.parametrize("module", sorted(BELOW_HTTP))
def test_nothing_below_the_http_layer_imports_starlette(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {m for m in imported if m.split(".")[0] in ("starlette", "uvicorn", "httpx")} == set()


def test_the_design_section_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    design = readme[readme.index("## Design\n") :]
    design = design[: design.find("\n## ", 1) if "\n## " in design[1:] else None]
    named = set(re.findall(r"`(\w+\.py)`", design))  # media/'s modules by their own names
    assert [_name(p) for p in MODULES if p.name not in named and p.name != "__init__.py"] == []
    assert "`media/`" in design


@pytest.mark.parametrize("text", [Msg.NOT_FOUND.split(":")[0], Msg.NO_TASK.split("{")[0], Msg.NO_FILE.split(" {")[0]])
def test_a_missing_task_is_worded_in_one_place(text: str) -> None:
    places = [_name(p) for p in MODULES if text in p.read_text(encoding="utf-8")]
    assert places == ["spec.py"]


def test_the_control_api_says_the_same_of_a_missing_task_everywhere(client: Client) -> None:
    expected = {"error": Msg.NO_TASK.format(task_id="nope")}
    looked = client.get("/_mock/tasks/nope")
    resolved = client.post("/_mock/tasks/nope/resolve", json={"outcome": "success"})
    assert (looked.status_code, looked.json()) == (404, expected)
    assert (resolved.status_code, resolved.json()) == (404, expected)
