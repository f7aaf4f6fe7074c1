"""The RBAC list in operator/rbac-rules.yaml covers every request the operator makes, and no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.operator.operator_harness import NAMESPACE, CoordinatorStandIn, FakeCluster, OperatorFactory, job_complete, wait_for

RULES = Path(__file__).resolve().parents[2] / "operator" / "rbac-rules.yaml"


def granted() -> set[tuple[str, str, str]]:
    rules: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def verb_of(request: Any) -> str:
    method = str(request.method).split(".")[-1].upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


def test_rules_are_well_formed() -> None:
    rules = yaml.safe_load(RULES.read_text())
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in rules)
    assert ("batch", "jobs", "create") in granted()
    assert not any(v in ("*", "deletecollection", "escalate", "bind") for _, _, v in granted())


def test_every_request_of_a_whole_run_is_granted(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, start_operator: OperatorFactory
) -> None:
    with start_operator():
        cluster.create_ccj(NAMESPACE, "run1", {"producer": {"count": 1}, "recipients": [{"name": "a"}]})
        wait_for("Jobs", lambda: cluster.job(NAMESPACE, "run1-producer"))
        coordinator.set(f"{NAMESPACE}.run1", published=1, acked={"a": 1}, deleted=1)
        cluster.set_job_status(NAMESPACE, "run1-producer", job_complete())
        wait_for("Succeeded", lambda: cluster.status(NAMESPACE, "run1").get("phase") == "Succeeded")
        cluster.create_ccj(NAMESPACE, "run2", {"producer": {"count": 1}, "recipients": [{"name": "a"}]})
        wait_for("Jobs", lambda: cluster.job(NAMESPACE, "run2-producer"))
        cluster.delete(f"/apis/claimcheck.io/v1alpha1/namespaces/{NAMESPACE}/claimcheckjobs/run2")
        wait_for("run2 gone", lambda: cluster.ccj(NAMESPACE, "run2") is None)

    used: set[tuple[str, str, str]] = set()
    for request in cluster.requests_log():
        agent = request.headers.get("User-Agent", "")
        if agent.startswith("python-requests") or request.resource is None or not request.resource.plural:
            continue  # the test's own calls; discovery (granted to every authenticated user)
        plural = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        used.add((request.resource.group or "", plural, verb_of(request)))
    missing = used - granted()
    assert not missing, f"requests not covered by {RULES.name}: {sorted(missing)}"
    unused = granted() - used
    assert not unused, f"rules never needed in a whole run: {sorted(unused)}"
