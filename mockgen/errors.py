"""Framework-free errors: ApiError for the public contract, ScenarioError for bad scenario files,
and ``show``, how a client's value is quoted in their messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class ApiError(Exception):
    """A failure of the public API, rendered once at the edge in the contract's envelope.

    ``code`` is the envelope's ``code`` (0 for business failures, 401 for auth);
    ``status`` is the HTTP status (200 for business failures, as the real service does).
    """

    def __init__(self, msg: str, *, code: int = 0, status: int = 200) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.status = status


class ControlError(Exception):
    """A failure of the /_mock/ control API: a plain HTTP status and a message."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status


@dataclass(frozen=True)
class ScenarioIssue:
    """One problem in a scenario file: where it is and what is wrong."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top)'}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "path": self.path, "message": self.message}


class ScenarioError(Exception):
    """A scenario that failed validation; carries every issue found, not just the first."""

    def __init__(self, issues: list[ScenarioIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


def show(value: object) -> str:
    """A short, safe rendering of a client's value for an error message."""
    text = repr(value) if isinstance(value, str) else _json_kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if abs(value) < 1e15 else "a huge number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
