"""``AllDeleted``: the coordinator deleted every object of the run, so every recipient acknowledged it.

Only deletions earned by every recipient's ACK count: objects removed because the run was
cancelled or swept as orphans are named in the message, never counted as done. Unknown while
the coordinator cannot be asked: the operator does not guess counts.
"""

from __future__ import annotations

from claimcheck_operator.conditions.base import Condition, make
from claimcheck_operator.observe import Observation

TYPE = "AllDeleted"
ALL_OBJECTS_DELETED = "AllObjectsDeleted"
OBJECTS_PENDING = "ObjectsPending"
COORDINATOR_UNREACHABLE = "CoordinatorUnreachable"


def all_deleted(
    observation: Observation, expected: int, recipients: list[str], previous: Condition | None, now: str
) -> Condition:
    progress = observation.progress
    if progress is None:
        return make(TYPE, "Unknown", COORDINATOR_UNREACHABLE, observation.coordinator_error, previous, now)
    if progress.deleted >= expected and progress.published >= expected:
        return make(TYPE, "True", ALL_OBJECTS_DELETED, f"{progress.deleted}/{expected} objects deleted", previous, now)
    acked = ", ".join(f"{r} {progress.acked.get(r, 0)}/{expected}" for r in recipients)
    removed = "".join(f", {count} {what} (not confirmed)"
                      for what, count in (("cancelled", progress.cancelled), ("swept", progress.swept)) if count)
    return make(
        TYPE, "False", OBJECTS_PENDING,
        f"{progress.deleted}/{expected} objects deleted, {progress.published} published{removed}; acked: {acked}",
        previous, now,
    )
