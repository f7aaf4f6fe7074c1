"""``JobsCreated``: every child Job exists.

True/AllJobsCreated once all exist; False/CreatingJobs before that; False/JobMissing when a
Job that existed is gone (someone deleted it: the run cannot finish).
"""

from __future__ import annotations

from claimcheck_operator.conditions.base import Condition, make
from claimcheck_operator.observe import Observation

TYPE = "JobsCreated"
ALL_JOBS_CREATED = "AllJobsCreated"
CREATING_JOBS = "CreatingJobs"
JOB_MISSING = "JobMissing"


def missing_jobs(observation: Observation) -> list[str]:
    return [job.name for job in observation.jobs if not job.exists]


def jobs_created(observation: Observation, previous: Condition | None, now: str) -> Condition:
    total = len(observation.jobs)
    missing = missing_jobs(observation)
    if not missing:
        return make(TYPE, "True", ALL_JOBS_CREATED, f"{total}/{total} Jobs exist", previous, now)
    if previous is not None and previous["status"] == "True":
        return make(
            TYPE, "False", JOB_MISSING,
            f"Job {', '.join(missing)} was deleted while the run was going on; "
            "delete and recreate the ClaimCheckJob to start over",
            previous, now,
        )
    return make(TYPE, "False", CREATING_JOBS, f"{total - len(missing)}/{total} Jobs exist", previous, now)
