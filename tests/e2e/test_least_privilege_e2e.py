"""Least privilege on a real cluster: what only an API server, a CNI and the real services show.

- The NetworkPolicy is enforced (kindnet, kind >= v0.24): a pod without the operator's Job
  labels cannot open the coordinator's port; the same pod with them can.
- The coordinator refuses DELETE /jobs/<job> without the control token (401).
- The operator refuses a ClaimCheckJob naming an unconfigured group or a foreign image.
When these run or are skipped is decided in conftest.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from .conftest import COORDINATOR, NAMESPACE, ROOT, ccj_status, kubectl, wait_for

EXAMPLE = ROOT / "manifests" / "claimcheckjob-example.yaml"
PROBE = ("import socket,sys\n"
         "try:\n socket.create_connection(('claimcheck-coordinator', 38080), timeout=5).close(); print('open')\n"
         "except OSError as e:\n print('refused', e)\n")


def image() -> str:
    deployment = json.loads(kubectl("get", "deployment", "claimcheck-coordinator", "-o", "json").stdout)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def probe(labels: dict[str, str]) -> str:
    name = f"np-probe-{uuid.uuid4().hex[:6]}"
    overrides = {"spec": {"automountServiceAccountToken": False, "securityContext": {
        "runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": name, "image": image(), "command": ["python", "-c", PROBE],
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}
    label_args = ",".join(f"{k}={v}" for k, v in labels.items())
    result = kubectl("run", name, "--rm", "-i", "--restart=Never", "--image", image(), "--image-pull-policy=Never",
                     *(["--labels", label_args] if label_args else []), "--overrides", json.dumps(overrides),
                     timeout=180)
    return str(result.stdout)


def test_only_labelled_pods_reach_the_coordinator(cluster: Any) -> None:
    assert "refused" in probe({"app": "stranger"})
    assert "open" in probe({"app.kubernetes.io/part-of": "claimcheck", "app.kubernetes.io/managed-by": "claimcheck-operator"})


def test_cancel_needs_the_control_token(cluster: Any) -> None:
    request = urllib.request.Request(f"{COORDINATOR}/jobs/{NAMESPACE}.nobody", method="DELETE")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("DELETE without a token was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


def apply(tmp_path: Path, spec_change: dict[str, Any]) -> str:
    doc = yaml.safe_load(EXAMPLE.read_text())
    name = f"lp-{uuid.uuid4().hex[:6]}"
    doc["metadata"] = {"name": name, "namespace": NAMESPACE}
    doc["spec"].update(spec_change)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    kubectl("apply", "-f", str(path))
    return name


def test_unconfigured_group_and_foreign_image_are_refused(cluster: Any, tmp_path: Path) -> None:
    refusals: list[tuple[dict[str, Any], str]] = [({"recipients": [{"name": "payroll"}]}, "RecipientNotConfigured"),
                                                  ({"image": "docker.io/library/python:3.12"}, "ImageNotAllowed")]
    for change, reason in refusals:
        name = apply(tmp_path, change)
        status = wait_for(lambda name=name: (s := ccj_status(name)).get("phase") == "Failed" and s, f"{name} refused", 120)
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == reason
        assert kubectl("get", "jobs", "-l", f"claimcheck.io/job={name}", "-o", "name").stdout.strip() == ""
        kubectl("delete", "claimcheckjob", name, "--wait=true", timeout=120)
