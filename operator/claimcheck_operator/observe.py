"""What the operator saw on one pass: the state of each child Job and the coordinator's counts.

Pure parsing only; ``kube`` and ``coordinator`` fetch the raw data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class JobState:
    """One child Job as seen in its ``status``; ``exists`` is False when it was not found."""

    name: str
    exists: bool = False
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failed_reason: str = ""
    failed_message: str = ""

    @property
    def is_failed(self) -> bool:
        return bool(self.failed_reason)

    @property
    def started(self) -> bool:
        return self.active + self.succeeded + self.failed > 0 or self.complete or self.is_failed


def job_state(name: str, job: Mapping[str, Any] | None) -> JobState:
    """Read a Job's ``status``: its ``Complete``/``Failed`` conditions decide, not pod counts."""
    if job is None:
        return JobState(name=name)
    status = job.get("status") or {}
    complete = False
    failed_reason = failed_message = ""
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            complete = True
        elif condition.get("type") == "Failed":
            failed_reason = condition.get("reason") or "JobFailed"
            failed_message = condition.get("message") or ""
    return JobState(
        name=name,
        exists=True,
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        complete=complete,
        failed_reason=failed_reason,
        failed_message=failed_message,
    )


@dataclasses.dataclass(frozen=True)
class Progress:
    """The coordinator's counts for one job (``GET /jobs/<job>``).

    ``deleted`` counts only objects deleted after every recipient confirmed them; objects removed
    because the run was cancelled, or swept as orphans, are counted apart and never as done.
    """

    published: int = 0
    acked: Mapping[str, int] = dataclasses.field(default_factory=dict)
    deleted: int = 0
    pending: int = 0
    cancelled: int = 0
    swept: int = 0


def parse_progress(payload: Mapping[str, Any]) -> Progress:
    """Parse the documented response; ValueError if a count is missing or not a number."""
    try:
        acked_raw = payload.get("acked") or {}
        return Progress(
            published=int(payload["published"]),
            acked={str(k): int(v) for k, v in dict(acked_raw).items()},
            deleted=int(payload["deleted"]),
            pending=int(payload.get("pending") or 0),
            cancelled=int(payload.get("cancelled") or 0),
            swept=int(payload.get("swept") or 0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unexpected coordinator response {dict(payload)!r}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Observation:
    """Everything one reconcile pass is computed from (besides the previous status and the clock)."""

    producer: JobState
    consumers: tuple[JobState, ...]
    progress: Progress | None
    coordinator_error: str = ""

    @property
    def jobs(self) -> tuple[JobState, ...]:
        return (*self.consumers, self.producer)
