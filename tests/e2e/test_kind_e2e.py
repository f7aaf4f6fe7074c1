"""claimcheck on a real kind cluster: a job end to end, RabbitMQ failover, a helm upgrade.

See conftest.py for when these run. Each test applies its own ClaimCheckJob (from
manifests/claimcheckjob-example.yaml, renamed) and waits until the operator reports
Succeeded and the coordinator reports every object deleted.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from .conftest import NAMESPACE, ROOT, ccj_status, coordinator_job, helm, kubectl, wait_for

EXAMPLE = ROOT / "manifests" / "claimcheckjob-example.yaml"


def apply_job(tmp_path: Path, prefix: str, count: int | None = None, size: str | None = None) -> tuple[str, int]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    doc["metadata"] = {"name": name, "namespace": NAMESPACE}
    if count is not None:
        doc["spec"]["producer"]["count"] = count
    if size is not None:
        doc["spec"]["producer"]["messageSize"] = size
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    kubectl("apply", "-f", str(path))
    return name, doc["spec"]["producer"]["count"]


def phase(name: str) -> str:
    status = ccj_status(name)
    if status.get("phase") == "Failed":
        pytest.fail(f"ClaimCheckJob {name} failed: {json.dumps(status)}")
    return status.get("phase", "")


def assert_finished_and_clean(name: str, count: int, timeout: float = 1200) -> None:
    wait_for(lambda: phase(name) == "Succeeded", f"{name} to succeed", timeout)
    status = ccj_status(name)
    assert status.get("published") == count and status.get("deleted") == count, status
    ledger = coordinator_job(f"{NAMESPACE}.{name}")
    assert ledger["published"] == count, ledger
    assert ledger["deleted"] == count, ledger
    assert ledger["pending"] == 0, ledger
    assert all(n == count for n in ledger["acked"].values()), ledger


def wait_running_with_progress(name: str) -> None:
    wait_for(lambda: phase(name) == "Running" and (ccj_status(name).get("published") or 0) > 0,
             f"{name} to be running with published messages", 600, interval=1)


def test_cluster_is_ready(cluster: str) -> None:
    pods = json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/component=rabbitmq", "-o", "json").stdout)
    names = sorted(p["metadata"]["name"] for p in pods["items"])
    assert names == ["rmq-0", "rmq-1", "rmq-2"]
    status = kubectl("exec", "rmq-0", "-c", "rabbitmq", "--", "rabbitmq-diagnostics", "-q", "cluster_status",
                     "--formatter", "json").stdout
    running = json.loads(status)["running_nodes"]
    assert len(running) == 3, running


def test_example_job_succeeds_and_deletes_every_object(cluster: str, tmp_path: Path) -> None:
    name, count = apply_job(tmp_path, "e2e-example")
    assert_finished_and_clean(name, count)


def test_rabbitmq_pod_deleted_during_a_job_loses_nothing(cluster: str, tmp_path: Path) -> None:
    name, count = apply_job(tmp_path, "e2e-failover", count=300, size="256KB")
    wait_running_with_progress(name)
    kubectl("delete", "pod", "rmq-1", "--wait=false")
    assert_finished_and_clean(name, count)
    kubectl("wait", "--for=condition=Ready", "pod/rmq-1", "--timeout=600s", timeout=660)


def test_helm_upgrade_of_the_app_chart_during_a_job(cluster: str, tmp_path: Path) -> None:
    before = json.loads(kubectl("get", "deployment", "claimcheck-coordinator", "-o", "json").stdout)
    name, count = apply_job(tmp_path, "e2e-upgrade", count=300, size="256KB")
    wait_running_with_progress(name)
    helm("upgrade", "claimcheck", str(ROOT / "charts" / "claimcheck"), "--reuse-values",
         "--set", "coordinator.replicas=3", "--set", "config.logLevel=DEBUG", "--wait", "--timeout", "10m")
    after = json.loads(kubectl("get", "deployment", "claimcheck-coordinator", "-o", "json").stdout)
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    old_checksum = before["spec"]["template"]["metadata"]["annotations"]["checksum/env"]
    assert after["spec"]["template"]["metadata"]["annotations"]["checksum/env"] != old_checksum
    assert_finished_and_clean(name, count)
