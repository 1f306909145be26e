"""The fast path: the contract's two routes answered ahead of Starlette's middleware stack and router.

Polls and submits are what clients send by the thousand. Recognising them by their exact shape
here, and running the endpoint inside the journal and a catch-all like Starlette's
ServerErrorMiddleware, skips the exception middleware, the Request it builds and the router's
regex matching: a large part of what a request costs (benchmarks/README.md). The endpoints and
their renderers are the routes' own (``api``): only the way in differs, so both ways answer alike
(tests/test_hardening.py runs the same requests both ways).

The rule for when it is off: ``create_app(fast_path=False)``; a middleware added with
``add_middleware`` after ``create_app`` (the fast path would skip it, so every request then takes
Starlette's stack); any other method or shape of path, or a ``root_path``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from .spec import CREATE_PATH, TASKS_PREFIX

if TYPE_CHECKING:
    from .backend import Backend
    from .guard import HostPolicy

__all__ = ["Answer", "FastRoutes", "MockgenApp"]

# An endpoint that answers and returns what the journal records: the status sent and the body read.
Answer = Callable[[Scope, Receive, Send], Awaitable[tuple[int, bytes]]]


class Journaled(Protocol):
    """What the fast path runs an answer in (app.JournalMiddleware): the journal and a catch-all."""

    async def serve_answer(self, scope: Scope, receive: Receive, send: Send, answer: Answer) -> None: ...


class FastRoutes:
    """The fast path's parts: the journal it records in, and the poll's and the submit's endpoints."""

    __slots__ = ("journal", "poll", "submit")

    def __init__(self, journal: Journaled, poll: Answer, submit: Answer) -> None:
        self.journal = journal
        self.poll = poll
        self.submit = submit


class MockgenApp(Starlette):
    """Starlette, with the contract's two routes dispatched on the fast path (``fast``; None: off)."""

    fast: FastRoutes | None = None
    # Read on every request, so plain attributes: one costs a twentieth of a lookup in ``state``,
    # which raises and catches an AttributeError. (``state.backend`` is the same Backend.)
    backend: Backend
    hosts: HostPolicy  # the Host headers answered (the contract's endpoints check it themselves)
    public_url: str | None = None

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        """Starlette's; one added after ``create_app`` turns the fast path off, so that it sees every request."""
        super().add_middleware(middleware_class, *args, **kwargs)
        self.fast = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"].startswith(TASKS_PREFIX)
            and not scope.get("root_path")
        ):
            path, method = scope["path"], scope["method"]
            task_id = path[len(TASKS_PREFIX) :]
            answer = None
            if method == "GET" and task_id and "/" not in task_id:
                scope["path_params"] = {"task_id": task_id}  # as the route's {task_id} would match it
                answer = fast.poll
            elif method == "POST" and path == CREATE_PATH:
                answer = fast.submit
            if answer is not None:
                scope["app"] = self
                await fast.journal.serve_answer(scope, receive, send, answer)
                return
        await super().__call__(scope, receive, send)
