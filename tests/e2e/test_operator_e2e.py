"""The operator on a real kind cluster: what kmock cannot show.

A ClaimCheckJob runs to Succeeded with honest counts, ``kubectl get ccj`` shows the printer
columns, the API server enforces the CRD (CEL immutability, schema validation of the invalid
examples) and deleting the resource removes its Jobs. When these run or are skipped (with the
reason) is decided in conftest.py: CLAIMCHECK_E2E=1 makes a missing kind/Docker a failure.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import NAMESPACE, ROOT, ccj_status, kubectl, wait_for

EXAMPLE = ROOT / "manifests" / "claimcheckjob-example.yaml"
INVALID = sorted((ROOT / "tests" / "operator" / "examples" / "invalid").glob("*.yaml"))


def apply(tmp_path: Path, count: int = 5) -> str:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    name = f"op-{uuid.uuid4().hex[:6]}"
    doc["metadata"] = {"name": name, "namespace": NAMESPACE}
    doc["spec"]["producer"].update({"count": count, "messageSize": "64KB"})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    kubectl("apply", "-f", str(path))
    return name


def final(name: str) -> dict[str, Any] | None:
    status = ccj_status(name)
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def run_jobs(name: str) -> str:
    return str(kubectl("get", "jobs", "-l", f"claimcheck.io/job={name}", "-o", "name").stdout).strip()


def test_run_succeeds_with_counts_columns_and_immutable_spec(cluster: str, tmp_path: Path) -> None:
    name = apply(tmp_path)
    try:
        status = wait_for(lambda: final(name), f"{name} to finish", 1200)
        assert status["phase"] == "Succeeded", json.dumps(status, indent=2)
        assert status["published"] == status["deleted"] == 5
        assert status["acked"] == {"billing": 5, "audit": 5}
        conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
        assert conditions["ProducerComplete"] == ("True", "ProducerJobComplete")
        assert conditions["AllDeleted"] == ("True", "AllObjectsDeleted")
        assert conditions["Failed"][0] == "False"
        assert status["completionTime"] >= status["startTime"]

        header = kubectl("get", "ccj", name).stdout.splitlines()[0].split()
        assert header == ["NAME", "PHASE", "PUBLISHED", "DELETED", "AGE"]

        change = kubectl("patch", "ccj", name, "--type", "merge", "-p", '{"spec":{"producer":{"count":6}}}', check=False)
        assert change.returncode != 0 and "immutable" in change.stderr, change.stderr
        jobs = run_jobs(name).splitlines()
        assert len(jobs) == 3, jobs  # two recipient groups + the producer, created once
        for job in jobs:
            owners = json.loads(kubectl("get", job, "-o", "json").stdout)["metadata"]["ownerReferences"]
            assert [(o["kind"], o["name"]) for o in owners] == [("ClaimCheckJob", name)]
    finally:
        kubectl("delete", "ccj", name, "--wait=true", "--timeout=180s", check=False)
    wait_for(lambda: run_jobs(name) == "", f"the Jobs of {name} to be gone", 180)


def test_deleting_a_running_job_stops_its_jobs(cluster: str, tmp_path: Path) -> None:
    name = apply(tmp_path, count=200)
    wait_for(lambda: ccj_status(name).get("phase") == "Running", f"{name} to run", 600)
    kubectl("delete", "ccj", name, "--wait=true", "--timeout=180s")
    wait_for(lambda: run_jobs(name) == "", f"the Jobs of {name} to be gone", 180)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_api_server_rejects_invalid_example(cluster: str, path: Path) -> None:
    result = kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    assert result.returncode != 0, f"{path.name} was accepted: {result.stdout}"
