"""Least privilege on the rendered objects (issue 12): every pod, including the Jobs the operator
builds, under the restricted profile; each pod mounts only its role's Secret and no application
pod the infrastructure's administrator credentials; the NetworkPolicy lets only the operator,
the operator's Job pods and Prometheus reach the coordinator's port.

The operator's Jobs are built by the operator's own builders with the configuration the chart
gives the operator Deployment (its env), so chart and operator cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from claimcheck_operator.builders import Owner, build_all
from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import parse_spec

from .conftest import APP, INFRA, NAMESPACE, SCENARIOS, containers, find, one, pod_specs, render, restricted_problems, scenario_id

APP_SCENARIOS = [s for s in SCENARIOS if s[0] == APP]
INFRA_ADMIN_SECRETS = {"rmq-default-user", "rmq-erlang-cookie", "claimcheck-infra-minio", "claimcheck-infra-postgresql",
                       "claimcheck-infra-connection"}


def operator_config(docs: list[dict[str, Any]]) -> OperatorConfig:
    """The operator's configuration exactly as the chart sets it (plain env values)."""
    container = one(docs, "Deployment", "claimcheck-operator")["spec"]["template"]["spec"]["containers"][0]
    return OperatorConfig.from_env({e["name"]: e["value"] for e in container["env"] if "value" in e})


def built_jobs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Jobs the operator creates for a run naming every configured group."""
    config = operator_config(docs)
    spec = parse_spec({"producer": {"count": 10}, "recipients": [{"name": g, "replicas": 2} for g in config.recipients]})
    return build_all(Owner(namespace=NAMESPACE, name="demo"), spec, config)


def all_pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(where, pod spec, pod labels) of every rendered workload and every Job the operator builds."""
    pods = [(w, s, next(d for d in docs if f"{d['kind']}/{d['metadata']['name']}" == w)["spec"]["template"]["metadata"]
             .get("labels", {})) for w, s in pod_specs(docs)]
    if find(docs, "Deployment", "claimcheck-operator"):
        pods += [(f"operator-built Job/{j['metadata']['name']}", j["spec"]["template"]["spec"],
                  j["spec"]["template"]["metadata"]["labels"]) for j in built_jobs(docs)]
    return pods


def secrets_of(spec: dict[str, Any]) -> set[str]:
    """Every Secret a pod can read: envFrom, env valueFrom, secret and projected volumes."""
    names = set()
    for c in containers(spec):
        names |= {ref["secretRef"]["name"] for ref in c.get("envFrom", []) if "secretRef" in ref}
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for v in spec.get("volumes", []):
        if "secret" in v:
            names.add(v["secret"]["secretName"])
        for source in v.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


@pytest.mark.parametrize("scenario", APP_SCENARIOS, ids=scenario_id)
def test_every_pod_including_the_operators_jobs_is_restricted(scenario: tuple[Path, Path | None]) -> None:
    docs = render(*scenario)
    pods = all_pods(docs)
    if find(docs, "Deployment", "claimcheck-operator"):
        assert sum(1 for where, _, _ in pods if where.startswith("operator-built")) >= 3
    problems = [p for where, spec, _ in pods for p in restricted_problems(where, spec)]
    assert not problems, "\n".join(problems)
    for where, spec, _ in pods:
        # Only the pods that talk to the Kubernetes API hold a token: the operator and Prometheus (discovery).
        needs_token = where in ("Deployment/claimcheck-operator", "Deployment/claimcheck-prometheus")
        assert spec.get("automountServiceAccountToken") is False or needs_token, where
        for c in containers(spec):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get("limits", {})), where
            if c["image"].split("/")[-1].startswith("claimcheck"):  # the application image needs a writable /tmp
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, f"{where}: no writable /tmp"


def test_restricted_check_is_not_vacuous() -> None:
    job = built_jobs(render(APP))[0]
    spec = job["spec"]["template"]["spec"]
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del spec["securityContext"]["seccompProfile"]
    assert len(restricted_problems("x", spec)) == 2


@pytest.mark.parametrize("scenario", APP_SCENARIOS, ids=scenario_id)
def test_each_pod_mounts_only_its_roles_secret(scenario: tuple[Path, Path | None]) -> None:
    docs = render(*scenario)
    coordinators = [d for d in find(docs, "Deployment")
                    if d["metadata"]["labels"]["app.kubernetes.io/component"] == "coordinator"]
    assert coordinators
    expected = {f"Deployment/{d['metadata']['name']}": {"claimcheck-coordinator"} for d in coordinators}
    expected |= {"Deployment/claimcheck-operator": {"claimcheck-operator"}, "Job/claimcheck-provision": {"claimcheck-provision"}}
    config = operator_config(docs) if find(docs, "Deployment", "claimcheck-operator") else None
    if config:
        expected["operator-built Job/demo-producer"] = {"claimcheck-producer"}
        for group in config.recipients:
            expected[f"operator-built Job/demo-consumer-{group}"] = {f"claimcheck-recipient-{group}"}
    role_secrets = {d["metadata"]["name"] for d in find(docs, "Secret") if d["metadata"]["labels"].get("claimcheck.io/role")}
    seen = {}
    for where, spec, _ in all_pods(docs):
        mounted = secrets_of(spec)
        seen[where] = mounted
        assert not mounted & INFRA_ADMIN_SECRETS, f"{where} reads infrastructure credentials {mounted & INFRA_ADMIN_SECRETS}"
        if where in expected:
            assert mounted == expected[where], f"{where} reads {sorted(mounted)}"
        else:  # Prometheus, Grafana: no application role's Secret
            assert not mounted & role_secrets, f"{where} reads {sorted(mounted & role_secrets)}"
    assert {w for w in expected if w in seen} == set(expected) - ({"Deployment/claimcheck-operator"} if not config else set())
    # The administrator's credentials reach only the provisioning hook.
    assert [w for w, m in seen.items() if "claimcheck-provision" in m] == ["Job/claimcheck-provision"]


def test_no_infra_pod_reads_an_application_secret() -> None:
    for where, spec in pod_specs(render(INFRA)):
        assert not {s for s in secrets_of(spec) if s.startswith("claimcheck-") and not s.startswith("claimcheck-infra")}, where


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist) against a pod's labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        value, present = labels.get(e["key"]), e["key"] in labels
        ok = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


@pytest.mark.parametrize("monitoring", [False, True], ids=["plain", "monitoring"])
def test_network_policy_lets_only_the_operator_its_jobs_and_prometheus_reach_the_coordinator(monitoring: bool) -> None:
    docs = render(APP, APP / "ci" / "04-monitoring-values.yaml") if monitoring else render(APP)
    (policy,) = find(docs, "NetworkPolicy")
    pods = all_pods(docs)
    selected = [where for where, _, labels in pods if matches(policy["spec"]["podSelector"], labels)]
    assert selected == ["Deployment/claimcheck-coordinator"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    coordinator = one(docs, "Deployment", "claimcheck-coordinator")["spec"]["template"]["spec"]["containers"][0]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert {p["name"] for p in coordinator["ports"]} == {"http"}
    peers = rule["from"]
    assert all(set(peer) == {"podSelector"} for peer in peers), "same namespace only, no ipBlock by default"
    allowed = sorted(where for where, _, labels in pods if any(matches(peer["podSelector"], labels) for peer in peers))
    expected = ["Deployment/claimcheck-operator", "operator-built Job/demo-consumer-audit",
                "operator-built Job/demo-consumer-billing", "operator-built Job/demo-producer"]
    if monitoring:
        expected = sorted([*expected, "Deployment/claimcheck-prometheus"])
    assert allowed == expected


def test_network_policy_can_be_widened_or_turned_off() -> None:
    docs = render(APP, APP / "ci" / "02-external-services-values.yaml")
    (policy,) = find(docs, "NetworkPolicy")
    ingress_nginx = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert ingress_nginx in policy["spec"]["ingress"][0]["from"]
    assert not find(render(APP, sets=("networkPolicy.enabled=false",)), "NetworkPolicy")


def test_coordinator_bind_address_is_configurable() -> None:
    import base64

    docs = render(APP, sets=("config.httpHost=127.0.0.1",))
    assert base64.b64decode(one(docs, "Secret", "claimcheck-coordinator")["data"]["CLAIMCHECK_HTTP_HOST"]) == b"127.0.0.1"
