"""The pytest plugin (pytest11): a session-wide mockgen server, reset before each test, picked by a marker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import MockServer

__all__ = ["mockgen", "mockgen_session", "pytest_addoption", "pytest_configure"]

MARKER = (
    "mockgen(scenario=None, clock=None): the mockgen scenario (bundled name, YAML path or text) and clock "
    "('manual', 'real' or 'scenario') for a test, a class or a module"
)
CLOCKS = ("manual", "real", "scenario")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("mockgen_scenario", "mockgen: the scenario of the 'mockgen' fixture", default="default")
    help_clock = "mockgen: the clock of the 'mockgen' fixture (manual, real, scenario)"
    parser.addini("mockgen_clock", help_clock, default="manual")
    help_store = (
        "mockgen: where the 'mockgen' fixture's world lives (memory, or a redis:// URL shared with other servers)"
    )
    parser.addini("mockgen_store", help_store, default="memory")
    parser.addini("mockgen_store_prefix", "mockgen: the world's name in a shared store", default="mockgen-pytest")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def _wanted(request: pytest.FixtureRequest) -> tuple[str, str]:
    scenario = str(request.config.getini("mockgen_scenario"))
    clock = str(request.config.getini("mockgen_clock"))
    marker = request.node.get_closest_marker("mockgen")
    if marker is not None:
        kwargs: dict[str, Any] = dict(zip(("scenario", "clock"), marker.args, strict=False))
        unknown = set(marker.kwargs) - {"scenario", "clock"}
        if unknown or len(marker.args) > 2:
            raise pytest.UsageError(f"@pytest.mark.mockgen takes scenario= and clock=, not {sorted(unknown)}")
        kwargs.update(marker.kwargs)
        scenario = str(kwargs.get("scenario") or scenario)
        clock = str(kwargs.get("clock") or clock)
    if clock not in CLOCKS:
        raise pytest.UsageError(f"mockgen clock must be one of {', '.join(CLOCKS)}, not {clock!r}")
    return scenario, clock


class _Session:
    """The shared server and what it is set to now, so a test pays a scenario load only when it changes."""

    def __init__(self, store: str = "memory", store_prefix: str = "mockgen-pytest") -> None:
        self.server: MockServer | None = None
        self.config: tuple[str, str] | None = None
        self.store: dict[str, Any] = {} if store == "memory" else {"store": store, "store_prefix": store_prefix}

    def get(self, scenario: str, clock: str) -> MockServer:
        from .testing import MockServer

        override = None if clock == "scenario" else clock
        if self.server is None:
            self.server = MockServer(clock=override, **self.store).start()
            self.config = ("default", clock)
        if self.config == (scenario, clock):
            self.server.reset()
        else:
            self.config = None  # until the load succeeds
            self.server.use_scenario(scenario, clock=override)
            self.config = (scenario, clock)
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def mockgen_session(request: pytest.FixtureRequest) -> Iterator[_Session]:
    """The one server of the test session (started when a test first asks for ``mockgen``)."""
    ini = request.config.getini
    session = _Session(str(ini("mockgen_store")), str(ini("mockgen_store_prefix")))
    yield session
    session.close()


@pytest.fixture
def mockgen(mockgen_session: _Session, request: pytest.FixtureRequest) -> MockServer:
    """A running mockgen server in its starting state: ``base_url``, ``api_key``, control and verify helpers."""
    return mockgen_session.get(*_wanted(request))
