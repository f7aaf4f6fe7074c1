"""End-to-end tests on a kind cluster (`make kind-up`).

They run when CLAIMCHECK_E2E=1, or when Docker and kind are usable here and
CLAIMCHECK_E2E is not 0. Where Docker or kind is not usable they are skipped with
the reason; with CLAIMCHECK_E2E=1 that is a failure instead, so a CI job that asks
for them can never pass without running them.

  CLAIMCHECK_E2E=1        require them
  CLAIMCHECK_E2E=0        never run them
  CLAIMCHECK_E2E_KEEP=1   leave the cluster running afterwards (default: make kind-down)
  KIND_CLUSTER_NAME       cluster name (default claimcheck)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import wait_until

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KIND_CLUSTER_NAME", "claimcheck")
NAMESPACE = os.environ.get("CLAIMCHECK_NAMESPACE", "claimcheck")
CONTEXT = f"kind-{CLUSTER}"
COORDINATOR = "http://127.0.0.1:30080"  # NodePort published by kind-config.yaml


def _unusable_reason() -> str | None:
    for tool in ("docker", "kind"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return "the Docker engine is not usable (`docker info` failed)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e_items = [item for item in items if Path(str(item.fspath)).parent == Path(__file__).parent]
    for item in e2e_items:
        item.add_marker(pytest.mark.e2e)
    if not e2e_items:
        return
    wanted = os.environ.get("CLAIMCHECK_E2E", "")
    if wanted == "0":
        reason = "kind end-to-end tests disabled (CLAIMCHECK_E2E=0)"
    else:
        reason = _unusable_reason()
        if reason and wanted != "1":
            reason = f"kind end-to-end tests skipped: {reason} (set CLAIMCHECK_E2E=1 to require them)"
        elif reason:
            return  # required but unusable: the `cluster` fixture fails with the reason
    if reason:
        for item in e2e_items:
            item.add_marker(pytest.mark.skip(reason=reason))


def run(*args: str, timeout: float = 600, check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def kubectl_bin() -> str:
    return shutil.which("kubectl") or str(ROOT / ".tools" / "bin" / "kubectl")


def kubectl(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(kubectl_bin(), "--context", CONTEXT, "-n", NAMESPACE, *args, timeout=timeout, check=check)


def helm(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run(str(ROOT / ".tools" / "bin" / "helm"), "--kube-context", CONTEXT, "-n", NAMESPACE, *args, timeout=timeout)


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    reason = _unusable_reason()
    if reason:
        pytest.fail(f"CLAIMCHECK_E2E=1 but {reason}")
    result = subprocess.run(["make", "kind-up"], cwd=ROOT, text=True, timeout=3600)
    assert result.returncode == 0, "make kind-up failed (its output is above)"
    yield CONTEXT
    if os.environ.get("CLAIMCHECK_E2E_KEEP") != "1":
        subprocess.run(["make", "kind-down"], cwd=ROOT, timeout=600)


def coordinator_job(job: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{COORDINATOR}/jobs/{job}", timeout=10) as response:
        return json.loads(response.read())


def ccj_status(name: str) -> dict[str, Any]:
    out = kubectl("get", "claimcheckjob", name, "-o", "json").stdout
    return json.loads(out).get("status", {})


def wait_for(predicate, what: str, timeout: float, interval: float = 3.0):
    """``testkit.wait_until``, polling kubectl every few seconds."""
    return wait_until(predicate, timeout, what, poll=interval)
