"""Pure status logic: each condition, the phase, a whole reconcile pass, and the Events it causes."""

from __future__ import annotations

import datetime
from typing import Any

from claimcheck_operator.conditions.all_deleted import all_deleted
from claimcheck_operator.conditions.base import Condition, Status, find, make
from claimcheck_operator.conditions.failed import Stall, failed
from claimcheck_operator.conditions.jobs_created import jobs_created
from claimcheck_operator.conditions.producer_complete import producer_complete
from claimcheck_operator.conditions.spec_applied import spec_applied
from claimcheck_operator.events import transitions
from claimcheck_operator.observe import JobState, Observation, Progress, job_state, parse_progress
from claimcheck_operator.phase import compute_phase
from claimcheck_operator.reconcile import Applied, iso, reconcile

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
APPLIED = Applied(spec_hash="h1", count=10, recipients=("billing", "audit"))
CALM = Stall(idle_seconds=0, stuck_after_seconds=600)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


NO_PROGRESS = Progress()  # frozen: safe to share as a default

def obs(
    producer: JobState | None = None,
    consumers: tuple[JobState, ...] | None = None,
    progress: Progress | None = NO_PROGRESS,
    error: str = "",
) -> Observation:
    return Observation(
        producer=producer or JobState("p", exists=True),
        consumers=consumers or (JobState("c-billing", exists=True), JobState("c-audit", exists=True)),
        progress=progress,
        coordinator_error=error,
    )


def progress(published: int, billing: int, audit: int, deleted: int) -> Progress:
    return Progress(published=published, acked={"billing": billing, "audit": audit}, deleted=deleted,
                    pending=published - deleted)


# -- observe -----------------------------------------------------------------------------------
def test_job_state_reads_conditions_not_pod_counts() -> None:
    assert job_state("j", None) == JobState("j")
    exited = job_state("j", {"status": {"succeeded": 1}})
    assert exited.exists and not exited.complete  # pods exited, no Complete condition yet
    done = job_state("j", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert done.complete
    broken = job_state("j", {"status": {"failed": 4, "conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}]}})
    assert (broken.is_failed, broken.failed_reason, broken.failed_message) == (True, "DeadlineExceeded", "too slow")
    not_yet = job_state("j", {"status": {"conditions": [{"type": "Failed", "status": "False"}]}})
    assert not not_yet.is_failed


def test_parse_progress_follows_the_documented_shape() -> None:
    parsed = parse_progress({"job": "ns.x", "published": 3, "acked": {"a": 2}, "deleted": 1, "pending": 2})
    assert parsed == Progress(published=3, acked={"a": 2}, deleted=1, pending=2)
    try:
        parse_progress({"job": "ns.x", "acked": {}})
    except ValueError as exc:
        assert "published" in str(exc)
    else:
        raise AssertionError("a response without counts must be refused")


# -- conditions --------------------------------------------------------------------------------
def test_last_transition_time_changes_only_on_flips() -> None:
    first = make("X", "False", "A", "one", None, "t1")
    same_status = make("X", "False", "B", "two", first, "t2")
    flipped = make("X", "True", "C", "three", same_status, "t3")
    assert (first["lastTransitionTime"], same_status["lastTransitionTime"], flipped["lastTransitionTime"]) == ("t1", "t1", "t3")
    assert find([first, flipped], "X") == first and find([], "X") is None


def test_jobs_created() -> None:
    missing = obs(producer=JobState("p"))
    creating = jobs_created(missing, None, "t1")
    assert (creating["status"], creating["reason"], creating["message"]) == ("False", "CreatingJobs", "2/3 Jobs exist")
    created = jobs_created(obs(), creating, "t2")
    assert (created["status"], created["reason"], created["message"]) == ("True", "AllJobsCreated", "3/3 Jobs exist")
    gone = jobs_created(missing, created, "t3")
    assert (gone["status"], gone["reason"]) == ("False", "JobMissing")
    assert "p was deleted" in gone["message"]


def test_producer_complete() -> None:
    assert producer_complete(obs(), 10, None, "t")["reason"] == "ProducerNotStarted"
    assert producer_complete(obs(producer=JobState("p", True, active=1)), 10, None, "t")["reason"] == "ProducerRunning"
    exited = obs(producer=JobState("p", True, succeeded=1))
    assert producer_complete(exited, 10, None, "t")["status"] == "False"
    done = producer_complete(obs(producer=JobState("p", True, succeeded=1, complete=True)), 10, None, "t")
    assert (done["status"], done["reason"]) == ("True", "ProducerJobComplete")
    bad = producer_complete(obs(producer=JobState("p", True, failed_reason="BackoffLimitExceeded")), 10, None, "t")
    assert (bad["status"], bad["reason"]) == ("False", "ProducerJobFailed")


def test_all_deleted() -> None:
    recipients = ["billing", "audit"]
    pending = all_deleted(obs(progress=progress(10, 10, 7, 7)), 10, recipients, None, "t")
    assert (pending["status"], pending["reason"]) == ("False", "ObjectsPending")
    assert pending["message"] == "7/10 objects deleted, 10 published; acked: billing 10/10, audit 7/10"
    done = all_deleted(obs(progress=progress(10, 10, 10, 10)), 10, recipients, None, "t")
    assert (done["status"], done["reason"], done["message"]) == ("True", "AllObjectsDeleted", "10/10 objects deleted")
    unknown = all_deleted(obs(progress=None, error="GET x failed: refused"), 10, recipients, None, "t")
    assert (unknown["status"], unknown["reason"], unknown["message"]) == (
        "Unknown", "CoordinatorUnreachable", "GET x failed: refused")


def test_spec_applied() -> None:
    assert spec_applied("h1", "h1", None, "t")["status"] == "True"
    changed = spec_applied("h1", "h2", None, "t")
    assert (changed["status"], changed["reason"]) == ("False", "SpecChangedAfterStart")


def test_failed_reasons_in_priority_order() -> None:
    recipients = ["billing", "audit"]
    stuck = Stall(idle_seconds=601, stuck_after_seconds=600)
    broken = obs(consumers=(JobState("c-billing", True), JobState("c-audit", True, failed_reason="BackoffLimitExceeded",
                                                                   failed_message="limit")))
    job_failed = failed(broken, 10, recipients, stuck, jobs_missing=True, previous=None, now="t")
    assert (job_failed["status"], job_failed["reason"]) == ("True", "JobFailed")
    assert job_failed["message"] == "Job c-audit failed (BackoffLimitExceeded: limit); see kubectl logs job/c-audit"
    assert failed(obs(), 10, recipients, stuck, jobs_missing=True, previous=None, now="t")["reason"] == "JobMissing"
    assert failed(obs(), 10, recipients, CALM, jobs_missing=False, previous=None, now="t")["status"] == "False"


def test_no_progress_names_what_to_look_at() -> None:
    recipients = ["billing", "audit"]
    stuck = Stall(idle_seconds=700, stuck_after_seconds=600)

    def message(seen: Progress | None) -> str:
        return str(failed(obs(progress=seen, error="refused"), 10, recipients, stuck, False, None, "t")["message"])

    assert message(progress(4, 4, 4, 4)) == "no progress for 600s: the producer published 4/10: check the producer Job p"
    assert message(progress(10, 10, 6, 6)) == (
        "no progress for 600s: recipients audit acknowledged less than published: check the consumer Jobs c-audit")
    assert message(progress(10, 10, 10, 8)).endswith("only 8 deleted: check the coordinator")
    assert "coordinator cannot be asked (refused)" in message(None)
    assert failed(obs(progress=None), 10, recipients, stuck, False, None, "t")["reason"] == "CoordinatorUnreachable"


def test_phase() -> None:
    def conds(jc: Status = "True", pc: Status = "False", ad: Status = "False", f: Status = "False",
              ) -> tuple[Condition, Condition, Condition, Condition]:
        return (make("JobsCreated", jc, "r", "", None, "t"), make("ProducerComplete", pc, "r", "", None, "t"),
                make("AllDeleted", ad, "r", "", None, "t"), make("Failed", f, "r", "", None, "t"))

    idle, busy = obs(), obs(producer=JobState("p", True, active=1))
    assert compute_phase(*conds(jc="False"), busy) == "Pending"
    assert compute_phase(*conds(), idle) == "Pending"
    assert compute_phase(*conds(), busy) == "Running"
    assert compute_phase(*conds(), obs(progress=progress(1, 0, 0, 0))) == "Running"
    assert compute_phase(*conds(pc="True"), busy) == "Running"
    assert compute_phase(*conds(ad="True"), busy) == "Running"
    assert compute_phase(*conds(pc="True", ad="True"), busy) == "Succeeded"
    assert compute_phase(*conds(pc="True", ad="True", f="True"), busy) == "Failed"


# -- reconcile ---------------------------------------------------------------------------------
def found(status: dict[str, Any], type_: str) -> Condition:
    condition = find(status["conditions"], type_)
    assert condition is not None, f"no {type_} condition in {status}"
    return condition


def running_obs(seen: Progress | None) -> Observation:
    return obs(producer=JobState("p", True, active=1), progress=seen)


def test_reconcile_is_stable_when_nothing_changes() -> None:
    first = reconcile({"startTime": iso(T0)}, APPLIED, "h1", running_obs(progress(2, 1, 1, 1)), at(5), 600)
    assert first["phase"] == "Running"
    second = reconcile({"startTime": iso(T0), **first}, APPLIED, "h1", running_obs(progress(2, 1, 1, 1)), at(50), 600)
    assert second == first  # no write, no Event: not even a new lastProgressTime
    assert transitions(first, second) == []


def test_reconcile_stuck_clock_runs_from_last_progress() -> None:
    start = {"startTime": iso(T0)}
    first = reconcile(start, APPLIED, "h1", running_obs(progress(2, 1, 1, 1)), at(10), 60)
    assert first["lastProgressTime"] == iso(at(10))
    later = reconcile({**start, **first}, APPLIED, "h1", running_obs(progress(2, 1, 1, 1)), at(69), 60)
    assert later["phase"] == "Running"
    stuck = reconcile({**start, **first}, APPLIED, "h1", running_obs(progress(2, 1, 1, 1)), at(70), 60)
    assert stuck["phase"] == "Failed" and found(stuck, "Failed")["reason"] == "NoProgress"
    assert stuck["completionTime"] == iso(at(70))


def test_reconcile_keeps_counts_when_the_coordinator_is_away() -> None:
    first = reconcile({"startTime": iso(T0)}, APPLIED, "h1", running_obs(progress(2, 1, 1, 1)), at(1), 600)
    away = reconcile(first, APPLIED, "h1", running_obs(None), at(2), 600)
    assert (away["published"], away["deleted"], away["acked"]) == (2, 1, {"billing": 1, "audit": 1})
    assert away["lastProgressTime"] == first["lastProgressTime"]


def test_reconcile_success_and_final_phases_stay() -> None:
    done_obs = obs(producer=JobState("p", True, succeeded=1, complete=True), progress=progress(10, 10, 10, 10))
    done = reconcile({"startTime": iso(T0)}, APPLIED, "h1", done_obs, at(30), 600)
    assert done["phase"] == "Succeeded" and done["completionTime"] == iso(at(30))
    broken = obs(producer=JobState("p", True, failed_reason="BackoffLimitExceeded"), progress=None)
    assert reconcile(done, APPLIED, "h2", broken, at(99), 1) == done


def test_reconcile_reports_spec_change_without_acting_on_it() -> None:
    status = reconcile({}, APPLIED, "other", running_obs(progress(10, 10, 9, 9)), at(1), 600)
    assert found(status, "SpecApplied")["status"] == "False"
    assert "audit 9/10" in found(status, "AllDeleted")["message"]  # applied count


def test_events_for_flips_and_phase_changes() -> None:
    first = reconcile({"startTime": iso(T0)}, APPLIED, "h1", running_obs(progress(1, 0, 0, 0)), at(1), 600)
    events = transitions({}, first)
    assert [(e.type, e.reason) for e in events] == [
        ("Normal", "AllJobsCreated"), ("Normal", "ProducerRunning"), ("Normal", "ObjectsPending"), ("Normal", "PhaseRunning")]
    broken = obs(consumers=(JobState("c-billing", True, failed_reason="BackoffLimitExceeded"), JobState("c-audit", True)),
                 producer=JobState("p", True, active=1), progress=progress(1, 0, 0, 0))
    failed_status = reconcile(first, APPLIED, "h1", broken, at(2), 600)
    events = transitions(first, failed_status)
    assert [(e.type, e.reason) for e in events] == [("Warning", "JobFailed"), ("Warning", "PhaseFailed")]
    assert "c-billing" in events[1].message
