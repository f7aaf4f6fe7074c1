"""One reconcile pass as a pure function: previous status + observation + clock -> new status.

The kopf timer patches only the keys returned here, and only when they differ from the
previous status, so an idle run causes no writes. A final phase (Succeeded, Failed) is
kept as it is: a finished run is not re-judged.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from claimcheck_operator.conditions import all_deleted as all_deleted_mod
from claimcheck_operator.conditions import failed as failed_mod
from claimcheck_operator.conditions import jobs_created as jobs_created_mod
from claimcheck_operator.conditions import producer_complete as producer_complete_mod
from claimcheck_operator.conditions import spec_applied as spec_applied_mod
from claimcheck_operator.conditions.base import Condition, find
from claimcheck_operator.observe import Observation
from claimcheck_operator.phase import TERMINAL, compute_phase

# Status keys this module owns; ``startTime``, ``jobId`` and ``applied`` are written once by the create handler.
MANAGED_KEYS = (
    "phase", "conditions", "published", "acked", "deleted", "pending", "lastProgressTime", "completionTime",
)


@dataclasses.dataclass(frozen=True)
class Applied:
    """What the Jobs were built from: recorded in ``status.applied`` when they are created."""

    spec_hash: str
    count: int
    recipients: tuple[str, ...]

    def to_status(self) -> dict[str, Any]:
        return {"specHash": self.spec_hash, "count": self.count, "recipients": list(self.recipients)}

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Applied | None:
        raw = status.get("applied")
        if not raw:
            return None
        return cls(spec_hash=str(raw["specHash"]), count=int(raw["count"]), recipients=tuple(raw["recipients"]))


def iso(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes times."""
    return moment.astimezone(datetime.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def managed(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a status this module computes, to compare old against new."""
    return {key: status[key] for key in MANAGED_KEYS if key in status}


def reconcile(
    previous: Mapping[str, Any],
    applied: Applied,
    current_spec_hash: str,
    observation: Observation,
    now: datetime.datetime,
    stuck_after_seconds: float,
) -> dict[str, Any]:
    """The new values of ``MANAGED_KEYS``."""
    if previous.get("phase") in TERMINAL:
        return managed(previous)
    now_s = iso(now)
    old = previous.get("conditions")
    expected, recipients = applied.count, list(applied.recipients)

    progress = observation.progress
    counts: dict[str, Any] = {key: previous[key] for key in ("published", "acked", "deleted", "pending") if key in previous}
    if progress is not None:
        counts = {
            "published": progress.published,
            "acked": {r: progress.acked.get(r, 0) for r in recipients},
            "deleted": progress.deleted,
            "pending": progress.pending,
        }
    moved = progress is not None and any(counts.get(k) != previous.get(k) for k in ("published", "acked", "deleted"))
    last_progress = now_s if moved else str(previous.get("lastProgressTime") or previous.get("startTime") or now_s)
    stall = failed_mod.Stall(
        idle_seconds=(now - parse_time(last_progress)).total_seconds(),
        stuck_after_seconds=stuck_after_seconds,
    )

    jobs_created = jobs_created_mod.jobs_created(observation, find(old, jobs_created_mod.TYPE), now_s)
    producer_complete = producer_complete_mod.producer_complete(
        observation, expected, find(old, producer_complete_mod.TYPE), now_s
    )
    all_deleted = all_deleted_mod.all_deleted(observation, expected, recipients, find(old, all_deleted_mod.TYPE), now_s)
    spec_applied = spec_applied_mod.spec_applied(
        applied.spec_hash, current_spec_hash, find(old, spec_applied_mod.TYPE), now_s
    )
    failed = failed_mod.failed(
        observation, expected, recipients, stall,
        jobs_missing=jobs_created["reason"] == jobs_created_mod.JOB_MISSING,
        previous=find(old, failed_mod.TYPE), now=now_s,
    )
    phase = compute_phase(jobs_created, producer_complete, all_deleted, failed, observation)
    conditions: list[Condition] = [jobs_created, producer_complete, all_deleted, spec_applied, failed]

    status: dict[str, Any] = {"phase": phase, "conditions": conditions, **counts, "lastProgressTime": last_progress}
    if phase in TERMINAL:
        status["completionTime"] = now_s
    return status
