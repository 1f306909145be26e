"""requirements/lock.txt pins everything pyproject.toml asks for, so the lock cannot drift from it.

Static (no network, no install): when these fail, regenerate the lock with `requirements/update`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"


def pyproject_requirements() -> list[Requirement]:
    """The runtime dependencies and the test extra, as pyproject.toml names them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def lock_problems(requirements: list[Requirement], lock: str) -> list[str]:
    """Every way `lock` fails to pin `requirements` exactly, within their ranges, and nothing else directly."""
    problems: list[str] = []
    pins: dict[str, list[str]] = {}  # a universal lock may pin one name twice, under different markers
    direct: set[str] = set()
    for number, block in enumerate(re.split(r"\n(?=\S)", lock), 1):
        line = block.split("\n", 1)[0].split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            problems.append(f"entry {number}: {line!r} is not a requirement (pip options do not belong here)")
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or req.extras or req.url:
            problems.append(f"{line!r} is not pinned to one exact version")
            continue
        name = canonicalize_name(req.name)
        pins.setdefault(name, []).append(specs[0].version)
        if re.search(r"#\s+(via\s+)?mockgen \(pyproject\.toml\)", block):  # uv's annotation of a direct need
            direct.add(name)
    wanted = {canonicalize_name(r.name) for r in requirements}
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in the lock")
        for version in pins.get(name, []):
            if not req.specifier.contains(version, prereleases=True):
                problems.append(f"the lock pins {name}=={version}, outside {req}")
    problems += [f"the lock was made with {name}, which pyproject.toml no longer names" for name in direct - wanted]
    problems += [f"the lock was not made with {name}" for name in wanted - direct if name in pins]
    return problems


def test_the_lock_pins_every_requirement_of_pyproject_exactly() -> None:
    requirements = pyproject_requirements()
    assert len(requirements) > 10
    assert lock_problems(requirements, LOCK.read_text(encoding="utf-8")) == []


def test_each_kind_of_drift_is_found() -> None:
    via = "\n    # via mockgen (pyproject.toml)\n"
    wanted = [Requirement("pytest>=9.3"), Requirement("ruff>=0.6"), Requirement("uvicorn[standard]>=0.30")]
    lock = f"pytest==9.2.0{via}ruff>=0.6{via}mypy==1.0{via}uvicorn==0.54.0\n    # via other\n--index-url x\n"
    assert lock_problems(wanted, lock) == [
        "'ruff>=0.6' is not pinned to one exact version",
        "entry 5: '--index-url x' is not a requirement (pip options do not belong here)",
        "the lock pins pytest==9.2.0, outside pytest>=9.3",
        "ruff>=0.6 is not in the lock",
        "the lock was made with mypy, which pyproject.toml no longer names",
        "the lock was not made with uvicorn",
    ]
    assert lock_problems(wanted[2:], f"uvicorn==0.54.0{via}") == []
