"""The run's phase, from its conditions: Pending -> Running -> Succeeded | Failed (both final)."""

from __future__ import annotations

from typing import Final, Literal

from claimcheck_operator.conditions.base import Condition
from claimcheck_operator.observe import Observation

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
PENDING: Final = "Pending"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
TERMINAL: Final = frozenset({SUCCEEDED, FAILED})


def compute_phase(
    jobs_created: Condition,
    producer_complete: Condition,
    all_deleted: Condition,
    failed: Condition,
    observation: Observation,
) -> Phase:
    """Succeeded needs both a complete producer Job and every object deleted by the coordinator."""
    if failed["status"] == "True":
        return FAILED
    if producer_complete["status"] == "True" and all_deleted["status"] == "True":
        return SUCCEEDED
    progress = observation.progress
    if jobs_created["status"] == "True" and (
        any(job.started for job in observation.jobs) or (progress is not None and progress.published > 0)
    ):
        return RUNNING
    return PENDING
