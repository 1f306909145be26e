"""The emulated world's records: accounts, ledger entries and tasks, with status read off a clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED = 1, 2, 3, 4
NEVER = float("inf")


@dataclass(slots=True)
class LedgerEntry:
    kind: str  # "charge" | "refund" | "topup"
    amount: int
    at: float
    task_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "amount": self.amount, "at": self.at}
        if self.task_id is not None:
            d["task_id"] = self.task_id
        return d


@dataclass(slots=True)
class Account:
    key: str
    credits: int
    name: str | None = None
    ledger: list[LedgerEntry] = field(default_factory=list)


@dataclass(slots=True)
class Task:
    """One generation task. Its status is computed when read, from the clock and its plan."""

    task_id: str
    key: str
    model_id: str
    task_type: str
    prompt: str
    aspect_ratio: str
    image_urls: tuple[str, ...]
    credits: int
    created_at: float
    request_id: str
    running_at: float  # when status 2 begins
    finish_at: float  # when it finishes by time; NEVER when it progresses by polls or by hand
    outcome: str  # the planned outcome, "success" | "failed"
    failure_message: str
    progress: str = "time"  # "time" | "polls" | "manual"
    polls_queued: int = 0
    polls_running: int = 0
    polls: int = 0
    final_status: int = 0  # 0 until settled, then SUCCEEDED or FAILED
    settled_at: float | None = None
    message: str | None = None  # the failure message it ended with
    rule: str | None = None
    results: str = "local"
    extra: dict[str, Any] | None = None

    def status_at(self, now: float) -> int:
        """The status a client sees at ``now`` (settled tasks keep their final status)."""
        if self.final_status:
            return self.final_status
        if self.progress == "polls":
            if self.polls <= self.polls_queued:
                return QUEUED
            if self.polls <= self.polls_queued + self.polls_running:
                return RUNNING
            return SUCCEEDED if self.outcome == "success" else FAILED
        if now < self.running_at:
            return QUEUED
        if now < self.finish_at:
            return RUNNING
        return SUCCEEDED if self.outcome == "success" else FAILED

    @property
    def polls_to_finish(self) -> int:
        return self.polls_queued + self.polls_running + 1
