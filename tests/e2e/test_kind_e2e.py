"""claimcheck on a real kind cluster: a job end to end, RabbitMQ failover and a helm upgrade
during a run, and `make kind-up` run again on the running cluster.

See conftest.py for when these run. The disruption tests pace their ClaimCheckJob
(ratePerSecond) so the run lasts minutes, and check at the moment of the disruption that the
run is Running with objects still to delete: they cannot pass if the disruption came after
the run. Every run is checked to the end in the CR status, the coordinator, the ledger's
deletions table (each object deleted exactly once) and the bucket (nothing left).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import (
    NAMESPACE,
    ROOT,
    bucket_keys,
    ccj_status,
    coordinator_job,
    helm,
    kubectl,
    kubectl_json,
    psql,
    secret_data,
    wait_for,
)

EXAMPLE = ROOT / "manifests" / "claimcheckjob-example.yaml"
RMQ_NODE = "rabbit@rmq-{i}.rmq-headless." + NAMESPACE + ".svc.cluster.local"


def apply_job(tmp_path: Path, prefix: str, count: int | None = None, size: str | None = None,
              rate: int | None = None) -> tuple[str, int]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    doc["metadata"] = {"name": name, "namespace": NAMESPACE}
    producer = doc["spec"]["producer"]
    if count is not None:
        producer["count"] = count
    if size is not None:
        producer["messageSize"] = size
    if rate is not None:
        producer["ratePerSecond"] = rate
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    kubectl("apply", "-f", str(path))
    return name, int(producer["count"])


def job_id(name: str) -> str:
    return f"{NAMESPACE}.{name}"


def phase(name: str) -> str:
    status = ccj_status(name)
    if status.get("phase") == "Failed":
        pytest.fail(f"ClaimCheckJob {name} failed: {json.dumps(status)}")
    return str(status.get("phase", ""))


def running_mid_run(name: str, count: int) -> dict[str, Any]:
    """Wait until the run is Running with published > 0, and prove it is still mid-run.

    The probe also stops on a finished run, so a run that ended between two polls fails
    here at once (pace it slower) instead of timing out or, worse, being disrupted after it ended.
    """
    def probe() -> dict[str, Any] | None:
        status = ccj_status(name)
        if status.get("phase") in ("Succeeded", "Failed"):
            return status
        return status if status.get("phase") == "Running" and (status.get("published") or 0) > 0 else None

    status: dict[str, Any] = wait_for(probe, f"{name} to be running with published messages", 600, interval=1)
    assert status["phase"] == "Running", f"{name} was already {status['phase']} before the disruption: {status}"
    assert_mid_run(name, count)
    return status


def assert_mid_run(name: str, count: int) -> None:
    ledger = coordinator_job(job_id(name))
    assert ledger["deleted"] < count, f"{name}: every object already deleted, nothing was disrupted: {ledger}"
    assert ccj_status(name).get("phase") == "Running"


def assert_finished_and_clean(name: str, count: int, timeout: float = 1800) -> None:
    """Succeeded, and not only by the CR: the coordinator, the ledger and the bucket agree."""
    wait_for(lambda: phase(name) == "Succeeded", f"{name} to succeed", timeout)
    status = ccj_status(name)
    assert status.get("published") == count and status.get("deleted") == count, status
    ledger = coordinator_job(job_id(name))
    assert (ledger["published"], ledger["deleted"], ledger["pending"]) == (count, count, 0), ledger
    assert all(n == count for n in ledger["acked"].values()), ledger
    job = job_id(name).replace("'", "''")
    [[objects, deleted]] = psql(f"SELECT count(*), count(*) FILTER (WHERE state = 'deleted') FROM objects WHERE job = '{job}'")
    assert (int(objects), int(deleted)) == (count, count)
    [[deletions, distinct]] = psql("SELECT count(*), count(DISTINCT d.object_id) FROM deletions d "
                                   f"JOIN objects o USING (object_id) WHERE o.job = '{job}'")
    assert (int(deletions), int(distinct)) == (count, count), "each object deleted exactly once"
    keys = {row[0] for row in psql(f"SELECT key FROM objects WHERE job = '{job}'")}
    assert len(keys) == count
    left = keys & bucket_keys()
    assert not left, f"{len(left)} objects of {name} still in the bucket"


def pods(selector: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in kubectl_json("get", "pods", "-l", selector)["items"]}


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def running_rabbitmq_nodes() -> list[str]:
    out = kubectl("exec", "rmq-0", "-c", "rabbitmq", "--", "rabbitmq-diagnostics", "-q", "cluster_status",
                  "--formatter", "json", check=False)
    return list(json.loads(out.stdout).get("running_nodes", [])) if out.returncode == 0 else []


def test_cluster_is_ready(cluster: Any) -> None:
    assert sorted(pods("app.kubernetes.io/component=rabbitmq")) == ["rmq-0", "rmq-1", "rmq-2"]
    assert sorted(running_rabbitmq_nodes()) == sorted(RMQ_NODE.format(i=i) for i in range(3))


def test_example_job_succeeds_and_deletes_every_object(cluster: Any, tmp_path: Path) -> None:
    name, count = apply_job(tmp_path, "e2e-example")
    assert_finished_and_clean(name, count)


def test_rabbitmq_pod_deleted_during_a_job_loses_nothing(cluster: Any, tmp_path: Path) -> None:
    old = pods("app.kubernetes.io/component=rabbitmq")["rmq-1"]["metadata"]["uid"]
    # 300 objects at 2/s: about two and a half minutes of publishing.
    name, count = apply_job(tmp_path, "e2e-failover", count=300, size="64KB", rate=2)
    running_mid_run(name, count)
    kubectl("delete", "pod", "rmq-1", "--wait=false")
    assert_mid_run(name, count)  # the node went away while objects were still to be deleted

    def rejoined() -> bool:
        pod = pods("app.kubernetes.io/component=rabbitmq").get("rmq-1")
        return bool(pod and pod["metadata"]["uid"] != old and ready(pod)
                    and RMQ_NODE.format(i=1) in running_rabbitmq_nodes())

    wait_for(rejoined, "a new rmq-1 pod to rejoin the cluster", 900, interval=5)
    assert sorted(running_rabbitmq_nodes()) == sorted(RMQ_NODE.format(i=i) for i in range(3))
    assert_finished_and_clean(name, count)


def test_second_make_kind_up_is_idempotent(cluster: Any) -> None:
    """`make kind-up` on the running cluster succeeds and restarts nothing: no pod is replaced
    (checksum annotations are stable, the bucket Job changes nothing) and no Secret changes."""
    env = {**os.environ, "SKIP_BUILD": "1"}
    first = subprocess.run(["make", "kind-up"], cwd=ROOT, env=env, text=True, timeout=3600, check=False)
    assert first.returncode == 0, "make kind-up failed on the existing cluster (its output is above)"
    selector = "app.kubernetes.io/part-of=claimcheck"
    before = {n: p["metadata"]["uid"] for n, p in pods(selector).items() if p["status"].get("phase") == "Running"}
    secrets = {n: secret_data(n) for n in ("rmq-default-user", "claimcheck-infra-minio", "claimcheck-producer",
                                           "claimcheck-coordinator", "claimcheck-recipient-billing",
                                           "claimcheck-recipient-audit", "claimcheck-operator")}
    revisions = {r["name"]: int(r["revision"]) for r in json.loads(helm("list", "-o", "json").stdout)}

    second = subprocess.run(["make", "kind-up"], cwd=ROOT, env=env, text=True, timeout=3600, check=False)
    assert second.returncode == 0, "a second make kind-up failed (its output is above)"

    after = {n: p["metadata"]["uid"] for n, p in pods(selector).items() if p["status"].get("phase") == "Running"}
    assert after == before, {"replaced": sorted(set(before) ^ set(after))}
    assert {n: secret_data(n) for n in secrets} == secrets
    upgraded = {r["name"]: int(r["revision"]) for r in json.loads(helm("list", "-o", "json").stdout)}
    assert upgraded == {name: revision + 1 for name, revision in revisions.items()}, "both releases upgraded in place"


def test_helm_upgrade_of_the_app_chart_during_a_job(cluster: Any, tmp_path: Path) -> None:
    selector = "app.kubernetes.io/component=coordinator"
    before = {p["metadata"]["uid"] for p in pods(selector).values()}
    name, count = apply_job(tmp_path, "e2e-upgrade", count=300, size="64KB", rate=2)
    running_mid_run(name, count)
    helm("upgrade", "claimcheck", str(ROOT / "charts" / "claimcheck"), "--reuse-values",
         "--set", "coordinator.replicas=3", "--set", "config.logLevel=DEBUG", "--wait", "--timeout", "10m")
    kubectl("rollout", "status", "deployment/claimcheck-coordinator", "--timeout=5m", timeout=330)
    assert_mid_run(name, count)  # every coordinator was replaced while objects were still to be deleted
    after = pods(selector)
    live = {p["metadata"]["uid"] for p in after.values() if ready(p) and not p["metadata"].get("deletionTimestamp")}
    assert len(live) == 3 and not live & before, "the coordinators were not replaced"
    deployment = kubectl_json("get", "deployment", "claimcheck-coordinator")
    assert deployment["spec"]["replicas"] == 3
    assert_finished_and_clean(name, count)
