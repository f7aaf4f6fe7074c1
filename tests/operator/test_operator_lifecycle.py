"""The operator running in KopfRunner against kmock: create, progress, success, failure, stuck, restart, spec change, delete."""

from __future__ import annotations

import functools
import time
from typing import Any

from tests.operator.operator_harness import (
    CONTROL_TOKEN,
    NAMESPACE,
    CoordinatorStandIn,
    FakeCluster,
    OperatorFactory,
    job_complete,
    job_failed,
    wait_for,
)

SPEC: dict[str, Any] = {
    "producer": {"count": 5, "messageSize": "64KB", "verify": True, "parallelism": 2, "ratePerSecond": 0},
    "recipients": [{"name": "billing", "replicas": 2}, {"name": "audit", "replicas": 1}],
}
JOB_ID = f"{NAMESPACE}.run1"
JOB_NAMES = ["run1-consumer-billing", "run1-consumer-audit", "run1-producer"]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def phase_is(cluster: FakeCluster, phase: str, name: str = "run1") -> Any:
    return lambda: (status := cluster.status(NAMESPACE, name)).get("phase") == phase and status


def all_jobs(cluster: FakeCluster) -> Any:
    return lambda: all(cluster.job(NAMESPACE, n) for n in JOB_NAMES)


def test_create_makes_owned_jobs(cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory) -> None:
    with start_operator():
        ccj = cluster.create_ccj(NAMESPACE, "run1", SPEC)
        wait_for("the three Jobs", all_jobs(cluster))
        status = wait_for("JobsCreated",
                          lambda: condition(cluster.status(NAMESPACE, "run1"), "JobsCreated").get("status") == "True"
                          and cluster.status(NAMESPACE, "run1"))

    uid = ccj["metadata"]["uid"]
    billing = cluster.job(NAMESPACE, "run1-consumer-billing")
    producer = cluster.job(NAMESPACE, "run1-producer")
    assert billing and producer
    for job in (billing, producer):
        refs = job["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in refs] == [("ClaimCheckJob", "run1", uid, True)]
        assert job["metadata"]["labels"]["claimcheck.io/job"] == "run1"
        assert job["spec"]["template"]["metadata"]["labels"]["claimcheck.io/job"] == "run1"
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.example/claimcheck:test"
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # Each Job mounts its own role's Secret, and only that one.
    assert billing["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "cc-recipient-billing"}}]
    audit = cluster.job(NAMESPACE, "run1-consumer-audit")
    assert audit and audit["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "cc-recipient-audit"}}]
    assert producer["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "cc-producer"}}]
    assert billing["spec"]["parallelism"] == billing["spec"]["completions"] == 2
    assert billing["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "consumer", "--recipient", "billing", "--job", JOB_ID, "--expect", "5", "--http-port", "9102"]
    # The spec says verify: true, yet the producer publishes once and does not wait: a retried
    # pod would re-publish the run, and the operator, not the CLI's timeout, judges completion.
    assert producer["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "producer", "--job", JOB_ID, "--count", "5", "--size", "64KB", "--recipients", "billing,audit",
        "--no-verify", "--parallelism", "2", "--http-port", "9102"]
    assert producer["spec"]["backoffLimit"] == 0
    assert billing["spec"]["backoffLimit"] == 3
    for job in (billing, producer):
        assert job["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert status["jobId"] == JOB_ID
    assert status["applied"]["recipients"] == ["billing", "audit"]
    assert status["phase"] == "Pending"  # no pod started, nothing published
    assert sorted(j["metadata"]["name"] for j in cluster.jobs(NAMESPACE)) == sorted(JOB_NAMES)
    assert set(cluster.job_creations()) == set(JOB_NAMES)  # kopf may re-run the handler: then 409s
    reasons = {e["reason"] for e in cluster.events(NAMESPACE)}
    assert {"JobsCreated", "AllJobsCreated"} <= reasons


def start_run(cluster: FakeCluster, name: str = "run1", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    ccj = cluster.create_ccj(NAMESPACE, name, spec or SPEC)
    wait_for("the Jobs", all_jobs(cluster))
    return ccj


def start_running(cluster: FakeCluster) -> dict[str, Any]:
    """``start_run``, then the producer Job reports a running pod."""
    ccj = start_run(cluster)
    cluster.set_job_status(NAMESPACE, "run1-producer", {"active": 1})
    return ccj


def test_progress_then_success_needs_complete_producer_and_all_deleted(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        start_running(cluster)
        running = wait_for("Running", phase_is(cluster, "Running"))
        assert running["startTime"]

        coordinator.set(JOB_ID, published=3, acked={"billing": 2, "audit": 1}, deleted=1)
        status = wait_for("counts", lambda: (s := cluster.status(NAMESPACE, "run1")).get("published") == 3 and s)
        assert (status["acked"], status["deleted"], status["pending"]) == ({"billing": 2, "audit": 1}, 1, 2)
        assert condition(status, "AllDeleted")["message"] == "1/5 objects deleted, 3 published; acked: billing 2/5, audit 1/5"

        # Pods exiting is not success: the producer is complete but objects are still pending.
        cluster.set_job_status(NAMESPACE, "run1-producer", {"active": 0, **job_complete()})
        status = wait_for("ProducerComplete", lambda: condition(s := cluster.status(NAMESPACE, "run1"), "ProducerComplete")
                          .get("status") == "True" and s)
        assert status["phase"] == "Running"

        coordinator.set(JOB_ID, published=5, acked={"billing": 5, "audit": 5}, deleted=5)
        done = wait_for("Succeeded", phase_is(cluster, "Succeeded"))
        # The operator posts its events after the status patch: wait for them while it runs.
        wanted = {"PhaseRunning", "PhaseSucceeded", "ProducerJobComplete", "AllObjectsDeleted"}

        def all_events() -> list[dict[str, Any]] | None:
            found = cluster.events(NAMESPACE)
            return found if wanted <= {e["reason"] for e in found} else None

        events = wait_for("the run's events", all_events)

    assert condition(done, "AllDeleted")["reason"] == "AllObjectsDeleted"
    assert condition(done, "Failed")["status"] == "False"
    assert done["deleted"] == done["published"] == 5
    assert done["completionTime"] >= done["startTime"]
    assert all(e["involvedObject"]["name"] == "run1" for e in events)


def test_all_deleted_without_producer_complete_is_not_success(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        start_running(cluster)
        coordinator.set(JOB_ID, published=5, acked={"billing": 5, "audit": 5}, deleted=5)
        status = wait_for("AllDeleted", lambda: condition(s := cluster.status(NAMESPACE, "run1"), "AllDeleted")
                          .get("status") == "True" and s)
        assert status["phase"] == "Running"


def test_failed_job_fails_the_run(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        start_running(cluster)
        wait_for("Running", phase_is(cluster, "Running"))
        cluster.set_job_status(NAMESPACE, "run1-consumer-audit", job_failed())
        failed = wait_for("Failed", phase_is(cluster, "Failed"))

    reason = condition(failed, "Failed")
    assert reason["status"] == "True" and reason["reason"] == "JobFailed"
    assert "run1-consumer-audit" in reason["message"] and "BackoffLimitExceeded" in reason["message"]
    assert "kubectl logs job/run1-consumer-audit" in reason["message"]
    assert failed["completionTime"]
    warnings = [e for e in cluster.events(NAMESPACE) if e["type"] == "Warning"]
    assert {"JobFailed", "PhaseFailed"} <= {e["reason"] for e in warnings}


def test_failed_producer_pod_fails_the_run_without_a_second_publisher(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    """backoffLimit 0: the Job controller gives up after the first failed producer pod, and the
    operator reports the run Failed instead of creating another producer that would publish
    the run again under the same job id."""
    with start_operator():
        start_running(cluster)
        wait_for("Running", phase_is(cluster, "Running"))
        producer = cluster.job(NAMESPACE, "run1-producer")
        assert producer and producer["spec"]["backoffLimit"] == 0
        coordinator.set(JOB_ID, published=2, acked={"billing": 1, "audit": 0}, deleted=0)
        cluster.set_job_status(NAMESPACE, "run1-producer", {
            "failed": 1, "active": 0,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                            "message": "Job has reached the specified backoff limit"}]})
        failed = wait_for("Failed", phase_is(cluster, "Failed"))
        assert "run1-producer" in condition(failed, "Failed")["message"]
        # The Failed phase is final: the operator stops there and replaces nothing.
        assert wait_for("Failed kept", phase_is(cluster, "Failed"))["phase"] == "Failed"

    # Still the one producer Job it created first (a re-run creation handler may only get 409s).
    producers = [j for j in cluster.jobs(NAMESPACE) if j["metadata"]["name"] == "run1-producer"]
    assert set(cluster.job_creations()) == set(JOB_NAMES)
    assert [j["metadata"]["uid"] for j in producers] == [producer["metadata"]["uid"]]
    assert producers[0]["spec"]["template"]["spec"]["containers"][0]["args"].count("--no-verify") == 1


def test_no_progress_fails_with_the_lagging_recipient(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory,
    monkeypatch: Any,
) -> None:
    monkeypatch.setenv("CLAIMCHECK_STUCK_AFTER_SECONDS", "1.5")
    coordinator.set(JOB_ID, published=5, acked={"billing": 5, "audit": 2}, deleted=2)
    with start_operator():
        start_run(cluster)
        cluster.set_job_status(NAMESPACE, "run1-producer", job_complete())
        failed = wait_for("Failed", phase_is(cluster, "Failed"), timeout=8)

    reason = condition(failed, "Failed")
    assert reason["reason"] == "NoProgress"
    assert reason["message"] == (
        "no progress for 1.5s: recipients audit acknowledged less than published: "
        "check the consumer Jobs run1-consumer-audit")


def test_progress_keeps_a_run_alive(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory, monkeypatch: Any,
) -> None:
    """Counts moving every ~1 s keep a run with a 3 s stuck limit alive for longer than 3 s.

    Times in status have second precision, so one gap may look up to 1 s longer than it was.
    """
    monkeypatch.setenv("CLAIMCHECK_STUCK_AFTER_SECONDS", "3")
    with start_operator():
        start_running(cluster)
        began = time.monotonic()
        for step in range(1, 6):
            coordinator.set(JOB_ID, published=step, acked={"billing": step, "audit": step}, deleted=step)
            wait_for(f"count {step}", functools.partial(_deleted_is, cluster, step))
            wait_for("0.7 s to pass", functools.partial(_passed, time.monotonic() + 0.7))
        assert time.monotonic() - began > 3
        assert cluster.status(NAMESPACE, "run1")["phase"] == "Running"


def test_unreachable_coordinator_is_reported_then_fails(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory, monkeypatch: Any,
) -> None:
    monkeypatch.setenv("CLAIMCHECK_STUCK_AFTER_SECONDS", "1.5")
    monkeypatch.setenv("CLAIMCHECK_COORDINATOR_URL", "http://127.0.0.1:9")  # discard port: refused
    with start_operator():
        start_run(cluster)
        unknown = wait_for("AllDeleted Unknown", lambda: condition(s := cluster.status(NAMESPACE, "run1"), "AllDeleted")
                           .get("status") == "Unknown" and s)
        assert condition(unknown, "AllDeleted")["reason"] == "CoordinatorUnreachable"
        failed = wait_for("Failed", phase_is(cluster, "Failed"), timeout=8)
    reason = condition(failed, "Failed")
    assert reason["reason"] == "CoordinatorUnreachable"
    assert "CLAIMCHECK_COORDINATOR_URL" in reason["message"] and "127.0.0.1:9" in reason["message"]


def test_restart_mid_run_creates_nothing_twice_and_keeps_status(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        start_running(cluster)
        coordinator.set(JOB_ID, published=2, acked={"billing": 1, "audit": 1}, deleted=1)
        before = wait_for("Running with counts", lambda: (s := cluster.status(NAMESPACE, "run1")).get("published") == 2
                          and s.get("phase") == "Running" and s)
    uids = {j["metadata"]["name"]: j["metadata"]["uid"] for j in cluster.jobs(NAMESPACE)}
    posts = len(cluster.job_creations())

    coordinator.set(JOB_ID, published=4, acked={"billing": 3, "audit": 3}, deleted=3)
    with start_operator():
        after = wait_for("the new operator's update",
                         lambda: (s := cluster.status(NAMESPACE, "run1")).get("published") == 4 and s)

    assert {j["metadata"]["name"]: j["metadata"]["uid"] for j in cluster.jobs(NAMESPACE)} == uids
    assert len(cluster.job_creations()) == posts  # the finished create handler is not re-run
    assert after["startTime"] == before["startTime"]
    assert after["phase"] == "Running"
    for type_ in ("JobsCreated", "Failed", "SpecApplied"):
        assert condition(after, type_) == condition(before, type_)


def test_jobs_left_by_a_crashed_operator_are_adopted_not_duplicated(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    """The operator died after creating one Job and before recording it: the next one completes the set."""
    ccj = cluster.create_ccj(NAMESPACE, "run1", SPEC)
    leftover = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "run1-consumer-billing", "namespace": NAMESPACE, "ownerReferences": [
            {"apiVersion": "claimcheck.io/v1alpha1", "kind": "ClaimCheckJob", "name": "run1",
             "uid": ccj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}},
    }
    existing_uid = cluster.post(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", leftover)["metadata"]["uid"]
    with start_operator():
        wait_for("all Jobs", all_jobs(cluster))
        wait_for("JobsCreated", lambda: condition(cluster.status(NAMESPACE, "run1"), "JobsCreated").get("status") == "True")
    jobs = cluster.jobs(NAMESPACE)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(JOB_NAMES)
    assert cluster.job(NAMESPACE, "run1-consumer-billing")["metadata"]["uid"] == existing_uid  # type: ignore[index]


def test_job_of_another_owner_is_not_taken_over(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    stranger = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "run1-producer", "namespace": NAMESPACE},
        "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}},
    }
    cluster.post(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", stranger)
    with start_operator():
        cluster.create_ccj(NAMESPACE, "run1", SPEC)
        wait_for("consumer Jobs", lambda: cluster.job(NAMESPACE, "run1-consumer-audit"))
        status = wait_for("a status pass", lambda: condition(cluster.status(NAMESPACE, "run1"), "JobsCreated")
                          and cluster.status(NAMESPACE, "run1"))
        assert "applied" not in status  # the create handler did not finish: it waits for the stranger to go
        assert condition(status, "JobsCreated")["message"] == "2/3 Jobs exist"
        wait_for("a JobNameTaken Warning", lambda: any(e["reason"] == "JobNameTaken" for e in cluster.events(NAMESPACE)))
    assert "ownerReferences" not in cluster.job(NAMESPACE, "run1-producer")["metadata"]  # type: ignore[index]


def test_spec_change_is_not_acted_on_and_is_reported(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        start_run(cluster)
        wait_for("SpecApplied", lambda: condition(cluster.status(NAMESPACE, "run1"), "SpecApplied").get("status") == "True")
        # The API server's CEL rule would reject this; the emulator lets it through, as an old cluster would.
        cluster.patch(f"/apis/claimcheck.io/v1alpha1/namespaces/{NAMESPACE}/claimcheckjobs/run1",
                      {"spec": {"producer": {"count": 7}}})
        status = wait_for("SpecApplied False", lambda: condition(s := cluster.status(NAMESPACE, "run1"), "SpecApplied")
                          .get("status") == "False" and s)
        coordinator.set(JOB_ID, published=5, acked={"billing": 5, "audit": 5}, deleted=5)
        cluster.set_job_status(NAMESPACE, "run1-producer", job_complete())
        done = wait_for("Succeeded on the applied count", phase_is(cluster, "Succeeded"))

    assert condition(status, "SpecApplied")["reason"] == "SpecChangedAfterStart"
    assert done["applied"]["count"] == 5
    args = cluster.job(NAMESPACE, "run1-consumer-billing")["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert args[args.index("--expect") + 1] == "5"
    assert sorted(j["metadata"]["name"] for j in cluster.jobs(NAMESPACE)) == sorted(JOB_NAMES)
    warnings = {e["reason"] for e in cluster.events(NAMESPACE) if e["type"] == "Warning"}
    assert "SpecChangedAfterStart" in warnings


def test_delete_stops_jobs_and_asks_the_coordinator_to_drop_the_run(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        start_running(cluster)
        wait_for("Running", phase_is(cluster, "Running"))
        ccj = cluster.ccj(NAMESPACE, "run1")
        assert ccj and "claimcheck.io/finalizer" in ccj["metadata"]["finalizers"]
        cluster.delete(f"/apis/claimcheck.io/v1alpha1/namespaces/{NAMESPACE}/claimcheckjobs/run1")
        wait_for("the resource to be gone", lambda: cluster.ccj(NAMESPACE, "run1") is None)
    assert cluster.jobs(NAMESPACE) == []
    # kopf runs a delete handler at least once (a watch event that raced the finalizer's removal
    # runs it again; seen once in CI), and cancelling is idempotent in the ledger, so the contract
    # is: this run, and only this run, was cancelled, every time with the operator's control token
    # (the coordinator answers 401 without it).
    assert coordinator.deleted_jobs and set(coordinator.deleted_jobs) == {JOB_ID}
    assert set(coordinator.delete_auth) == {f"Bearer {CONTROL_TOKEN}"}


def test_cancel_without_an_accepted_token_is_refused_and_reported(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory, monkeypatch: Any,
) -> None:
    """A coordinator that does not accept the operator's token drops nothing; deletion still ends,
    with a CleanupIncomplete Warning that names the token problem (retries shortened for the test)."""
    import claimcheck_operator.handlers as handlers

    monkeypatch.setattr(handlers, "CLEANUP_RETRIES", 1)
    monkeypatch.setattr(handlers, "CLEANUP_RETRY_DELAY", 0.2)
    coordinator.tokens = ("another-token",)
    with start_operator():
        start_running(cluster)
        wait_for("Running", phase_is(cluster, "Running"))
        cluster.delete(f"/apis/claimcheck.io/v1alpha1/namespaces/{NAMESPACE}/claimcheckjobs/run1")
        wait_for("the resource to be gone", lambda: cluster.ccj(NAMESPACE, "run1") is None, timeout=20)
    assert coordinator.deleted_jobs == []
    assert coordinator.delete_auth and set(coordinator.delete_auth) == {f"Bearer {CONTROL_TOKEN}"}
    warnings = [e for e in cluster.events(NAMESPACE) if e["reason"] == "CleanupIncomplete"]
    assert warnings and "HTTP 401" in warnings[0]["message"] and CONTROL_TOKEN not in warnings[0]["message"]


def test_delete_leaves_a_same_named_job_it_does_not_own_alone(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    """The operator deletes only Jobs with an ownerReference to this ClaimCheckJob and its labels:
    a stranger's Job named like one of the run's, and one that copies the labels but has no
    ownerReference, both survive the deletion of the run."""
    stranger = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "run1-producer", "namespace": NAMESPACE, "labels": {"team": "someone-else"}},
        "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}},
    }
    lookalike = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "run1-consumer-audit", "namespace": NAMESPACE,
                     "labels": {"claimcheck.io/job": "run1", "app.kubernetes.io/managed-by": "claimcheck-operator"}},
        "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}},
    }
    stranger_uid = cluster.post(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", stranger)["metadata"]["uid"]
    lookalike_uid = cluster.post(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", lookalike)["metadata"]["uid"]
    with start_operator():
        cluster.create_ccj(NAMESPACE, "run1", SPEC)
        wait_for("the billing consumer Job", lambda: cluster.job(NAMESPACE, "run1-consumer-billing"))
        cluster.delete(f"/apis/claimcheck.io/v1alpha1/namespaces/{NAMESPACE}/claimcheckjobs/run1")
        wait_for("the resource to be gone", lambda: cluster.ccj(NAMESPACE, "run1") is None)
    assert cluster.job(NAMESPACE, "run1-consumer-billing") is None  # ours: deleted
    assert (cluster.job(NAMESPACE, "run1-producer") or {}).get("metadata", {}).get("uid") == stranger_uid
    assert (cluster.job(NAMESPACE, "run1-consumer-audit") or {}).get("metadata", {}).get("uid") == lookalike_uid
    deletes = [r.url.path for r in cluster.requests_log()
               if str(r.method).upper().endswith("DELETE") and "/jobs/" in r.url.path]
    assert deletes == [f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/run1-consumer-billing"]


def test_an_unconfigured_recipient_group_is_refused_without_jobs(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    spec = {**SPEC, "recipients": [{"name": "billing"}, {"name": "payroll", "replicas": 2}]}
    with start_operator():
        cluster.create_ccj(NAMESPACE, "run1", spec)
        failed = wait_for("Failed", phase_is(cluster, "Failed"))
        # A few more timer passes: the refusal is final and nothing else is written or created.
        polls = coordinator.get_count
        time_left = time.monotonic() + 1.0
        wait_for("a second", lambda: time.monotonic() >= time_left)
        assert cluster.status(NAMESPACE, "run1") == failed
        assert coordinator.get_count == polls
    reason = condition(failed, "Failed")
    assert reason["reason"] == "RecipientNotConfigured"
    assert "payroll" in reason["message"] and "billing" not in reason["message"].split("(configured")[0]
    assert cluster.jobs(NAMESPACE) == [] and cluster.job_creations() == []
    assert any(e["reason"] == "RecipientNotConfigured" and e["type"] == "Warning" for e in cluster.events(NAMESPACE))


def test_a_disallowed_image_is_refused_without_jobs(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        cluster.create_ccj(NAMESPACE, "run1", {**SPEC, "image": "evil.example/claimcheck:test"})
        failed = wait_for("Failed", phase_is(cluster, "Failed"))
        cluster.create_ccj(NAMESPACE, "run2", {**SPEC, "image": "registry.example/claimcheck:0.2.0"})
        wait_for("run2's Jobs", lambda: cluster.job(NAMESPACE, "run2-producer"))
    reason = condition(failed, "Failed")
    assert reason["reason"] == "ImageNotAllowed"
    assert "evil.example/claimcheck:test" in reason["message"]
    assert not [j for j in cluster.jobs(NAMESPACE) if j["metadata"]["name"].startswith("run1-")]
    producer = cluster.job(NAMESPACE, "run2-producer")
    assert producer and producer["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/claimcheck:0.2.0"


def test_deleting_a_refused_run_asks_the_coordinator_nothing(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        cluster.create_ccj(NAMESPACE, "run1", {**SPEC, "image": "evil.example/claimcheck:test"})
        wait_for("Failed", phase_is(cluster, "Failed"))
        cluster.delete(f"/apis/claimcheck.io/v1alpha1/namespaces/{NAMESPACE}/claimcheckjobs/run1")
        wait_for("the resource to be gone", lambda: cluster.ccj(NAMESPACE, "run1") is None)
    assert coordinator.delete_auth == []


def test_invalid_spec_that_got_past_the_schema_is_reported(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        cluster.create_ccj(NAMESPACE, "bad", {"producer": {"count": 5, "messageSize": "huge"}, "recipients": [{"name": "a"}]})
        failed = wait_for("Failed", phase_is(cluster, "Failed", name="bad"))
    assert condition(failed, "Failed")["reason"] == "InvalidSpec"
    assert "messageSize" in condition(failed, "Failed")["message"]
    assert cluster.jobs(NAMESPACE) == []


def test_an_idle_run_writes_no_status(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    def status_patches() -> int:
        return sum(1 for r in cluster.requests_log()
                   if str(r.method).upper().endswith("PATCH") and r.url.path.endswith("/claimcheckjobs/run1/status"))

    with start_operator():
        start_running(cluster)
        coordinator.set(JOB_ID, published=2, acked={"billing": 1, "audit": 1}, deleted=1)
        wait_for("Running with counts", lambda: (s := cluster.status(NAMESPACE, "run1")).get("published") == 2
                 and "applied" in s)
        settled = coordinator.get_count + 2
        wait_for("two more observations", lambda: coordinator.get_count >= settled)
        polls, patches = coordinator.get_count, status_patches()
        wait_for("five more observations", lambda: coordinator.get_count >= polls + 5)
        assert status_patches() == patches
        events = len(cluster.events(NAMESPACE))
        coordinator.set(JOB_ID, published=3, acked={"billing": 2, "audit": 1}, deleted=1)
        wait_for("the change to be written", lambda: cluster.status(NAMESPACE, "run1").get("published") == 3)
        assert status_patches() == patches + 1
        assert len(cluster.events(NAMESPACE)) == events  # counts moved, nothing flipped: no Event


def _deleted_is(cluster: FakeCluster, count: int) -> bool:
    return bool(cluster.status(NAMESPACE, "run1").get("deleted") == count)


def _passed(deadline: float) -> bool:
    return time.monotonic() >= deadline
