"""``Failed``: the run cannot succeed any more; the message says what to look at.

Reasons: JobFailed (a Job hit its backoff limit or deadline), JobMissing (a Job was
deleted), NoProgress (the coordinator's counts did not move for ``stuck_after`` seconds),
CoordinatorUnreachable (same, because the coordinator could not be asked).
"""

from __future__ import annotations

import dataclasses

from claimcheck_operator.conditions.base import Condition, make
from claimcheck_operator.observe import Observation

TYPE = "Failed"
NO_FAILURE = "NoFailure"
JOB_FAILED = "JobFailed"
JOB_MISSING = "JobMissing"
NO_PROGRESS = "NoProgress"
COORDINATOR_UNREACHABLE = "CoordinatorUnreachable"


@dataclasses.dataclass(frozen=True)
class Stall:
    """How long the counts have not moved, and the limit."""

    idle_seconds: float
    stuck_after_seconds: float

    @property
    def stuck(self) -> bool:
        return self.idle_seconds >= self.stuck_after_seconds


def _lagging(observation: Observation, expected: int, recipients: list[str]) -> str:
    progress = observation.progress
    if progress is None:
        return ""
    if progress.published < expected:
        return f"the producer published {progress.published}/{expected}: check the producer Job {observation.producer.name}"
    behind = [r for r in recipients if progress.acked.get(r, 0) < progress.published]
    if behind:
        # consumers are observed in the order of the recipients list
        jobs = ", ".join(job.name for r, job in zip(recipients, observation.consumers, strict=False) if r in behind)
        return f"recipients {', '.join(behind)} acknowledged less than published: check the consumer Jobs {jobs}"
    return f"all published objects are acknowledged but only {progress.deleted} deleted: check the coordinator"


def failed(
    observation: Observation,
    expected: int,
    recipients: list[str],
    stall: Stall,
    jobs_missing: bool,
    previous: Condition | None,
    now: str,
) -> Condition:
    for job in observation.jobs:
        if job.is_failed:
            detail = f": {job.failed_message}" if job.failed_message else ""
            return make(
                TYPE, "True", JOB_FAILED,
                f"Job {job.name} failed ({job.failed_reason}{detail}); see kubectl logs job/{job.name}",
                previous, now,
            )
    if jobs_missing:
        return make(TYPE, "True", JOB_MISSING, "a Job of this run was deleted; delete and recreate the ClaimCheckJob",
                    previous, now)
    if stall.stuck:
        limit = f"{stall.stuck_after_seconds:g}s"
        if observation.progress is None:
            return make(
                TYPE, "True", COORDINATOR_UNREACHABLE,
                f"no progress for {limit} and the coordinator cannot be asked ({observation.coordinator_error}); "
                "check the coordinator Deployment and CLAIMCHECK_COORDINATOR_URL",
                previous, now,
            )
        return make(TYPE, "True", NO_PROGRESS,
                    f"no progress for {limit}: {_lagging(observation, expected, recipients)}", previous, now)
    return make(TYPE, "False", NO_FAILURE, "no Job failed and counts moved in time", previous, now)
