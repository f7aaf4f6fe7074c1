"""``ProducerComplete``: the producer Job reports ``Complete`` (not merely that its pod exited)."""

from __future__ import annotations

from claimcheck_operator.conditions.base import Condition, make
from claimcheck_operator.observe import Observation

TYPE = "ProducerComplete"
PRODUCER_JOB_COMPLETE = "ProducerJobComplete"
PRODUCER_JOB_FAILED = "ProducerJobFailed"
PRODUCER_RUNNING = "ProducerRunning"
PRODUCER_NOT_STARTED = "ProducerNotStarted"


def producer_complete(observation: Observation, expected: int, previous: Condition | None, now: str) -> Condition:
    job = observation.producer
    if job.complete:
        return make(TYPE, "True", PRODUCER_JOB_COMPLETE, f"Job {job.name} completed", previous, now)
    if job.is_failed:
        return make(TYPE, "False", PRODUCER_JOB_FAILED, f"Job {job.name} failed: {job.failed_reason}", previous, now)
    if job.started:
        return make(
            TYPE, "False", PRODUCER_RUNNING,
            f"Job {job.name}: {job.active} active, {job.failed} failed pods; publishing {expected} objects",
            previous, now,
        )
    return make(TYPE, "False", PRODUCER_NOT_STARTED, f"Job {job.name} has no pod running yet", previous, now)
