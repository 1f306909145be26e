"""The public surface: each module users import says what it offers in ``__all__``, and the README
imports nothing else."""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# What users import: the package (create_app and the clocks), the app factory's own module, the
# clocks, the test helpers, the pytest plugin (pytest11) and the placeholder media.
PUBLIC = (
    "mockgen", "mockgen.app", "mockgen.clock", "mockgen.media", "mockgen.pytest_plugin", "mockgen.testing",
    "mockgen.store", "mockgen.redis_store",
)  # fmt: skip


def exported(module: str) -> list[str]:
    names = getattr(importlib.import_module(module), "__all__", None)
    assert isinstance(names, list) and all(isinstance(n, str) for n in names), f"{module} has no __all__ list"
    return names


@pytest.mark.parametrize("module", PUBLIC)
def test_every_name_in_all_exists_once(module: str) -> None:
    names = exported(module)
    mod = importlib.import_module(module)
    assert [n for n in names if not hasattr(mod, n)] == []
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("module", PUBLIC)
def test_a_star_import_gives_exactly_all(module: str) -> None:
    space: dict[str, object] = {}
    exec(f"from {module} import *", space)
    assert set(space) - {"__builtins__"} == set(exported(module))


def test_the_package_gives_create_app_without_importing_starlette_first() -> None:
    import mockgen

    assert mockgen.create_app is importlib.import_module("mockgen.app").create_app
    assert mockgen.ManualClock is importlib.import_module("mockgen.clock").ManualClock
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mockgen.nope  # noqa: B018


def readme_code() -> tuple[list[str], list[str]]:
    """The README's Python code blocks, and its prose (what is outside any fenced block)."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return blocks, re.findall(r"`([^`\n]+)`", prose)


def readme_imports() -> list[tuple[str, str | None]]:
    """(module, name) for every ``from mockgen... import name`` and (module, None) for ``import mockgen...``."""
    found: list[tuple[str, str | None]] = []
    blocks, _ = readme_code()
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mockgen":
                found += [(node.module or "", alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "mockgen"]
    return found


def readme_references() -> list[tuple[str, str | None]]:
    """(module, name) for every dotted ``mockgen.x.Name`` the prose names in code spans."""
    found: list[tuple[str, str | None]] = []
    _, spans = readme_code()
    for span in spans:
        dotted = re.match(r"mockgen(?:\.\w+)+", span)
        if dotted is None:
            continue
        parts = dotted.group(0).split(".")
        for cut in range(len(parts), 0, -1):  # the longest prefix that is a module; the rest is a name in it
            module = ".".join(parts[:cut])
            if _module(module) is not None:
                found.append((module, parts[cut] if cut < len(parts) else None))
                break
        else:
            raise AssertionError(f"the README names {span!r}, which is no module of mockgen")
    return found


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return None


def test_the_readme_imports_and_names_only_what_public_modules_export() -> None:
    used = readme_imports() + readme_references()
    assert ("mockgen.testing", "MockServer") in used and ("mockgen", "ManualClock") in used  # the parse works
    wrong = [
        (module, name)
        for module, name in used
        if module not in PUBLIC or (name is not None and name not in exported(module))
    ]
    assert wrong == []


def test_the_pytest_plugin_entry_point_is_a_public_module() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert list(project["entry-points"]["pytest11"].values()) == ["mockgen.pytest_plugin"]
    assert "mockgen.pytest_plugin" in PUBLIC
