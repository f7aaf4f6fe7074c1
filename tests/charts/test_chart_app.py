"""claimcheck application chart: coordinator, operator, env Secret, RBAC."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from claimcheck.signing import Verifier

from .conftest import APP, APP_TEST_VALUES, ROOT, find, helm, one, render

COMMON = {"CLAIMCHECK_AMQP_URL", "CLAIMCHECK_S3_ENDPOINT_URL", "CLAIMCHECK_S3_ACCESS_KEY_ID",
          "CLAIMCHECK_S3_SECRET_ACCESS_KEY", "CLAIMCHECK_S3_REGION", "CLAIMCHECK_S3_BUCKET",
          "CLAIMCHECK_COORDINATOR_URL", "CLAIMCHECK_COORDINATOR_SHARDS", "CLAIMCHECK_LOG_LEVEL"}
# What each role's Secret holds (the interface of issue 12), and nothing more.
ROLE_VARIABLES = {
    "claimcheck-producer": COMMON | {"CLAIMCHECK_POINTER_SIGNING_KEY", "CLAIMCHECK_LEDGER_SIGNING_KEY"},
    "claimcheck-recipient-billing": COMMON | {"CLAIMCHECK_POINTER_VERIFY_KEYS", "CLAIMCHECK_ACK_SIGNING_KEY"},
    "claimcheck-recipient-audit": COMMON | {"CLAIMCHECK_POINTER_VERIFY_KEYS", "CLAIMCHECK_ACK_SIGNING_KEY"},
    "claimcheck-coordinator": COMMON | {"CLAIMCHECK_DATABASE_URL", "CLAIMCHECK_POINTER_VERIFY_KEYS",
                                        "CLAIMCHECK_ACK_VERIFY_KEYS", "CLAIMCHECK_COORDINATOR_KEY",
                                        "CLAIMCHECK_LEDGER_VERIFY_KEYS",
                                        "CLAIMCHECK_CONTROL_TOKENS", "CLAIMCHECK_HTTP_HOST", "CLAIMCHECK_HTTP_PORT"},
    "claimcheck-operator": {"CLAIMCHECK_CONTROL_TOKEN"},
    "claimcheck-reader": {"CLAIMCHECK_DATABASE_URL", "CLAIMCHECK_LOG_LEVEL"},
    "claimcheck-provision": {"CLAIMCHECK_AMQP_URL", "CLAIMCHECK_MANAGEMENT_URL", "CLAIMCHECK_BROKER_USERS",
                             "CLAIMCHECK_COORDINATOR_SHARDS", "CLAIMCHECK_LOG_LEVEL"},
}


def env_of(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret", name)["data"].items()}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(APP)


def test_one_secret_per_role_with_exactly_its_variables(docs: list[dict[str, Any]]) -> None:
    secrets = {d["metadata"]["name"]: set(d["data"]) for d in find(docs, "Secret")
               if d["metadata"]["labels"].get("claimcheck.io/role")}
    assert secrets == ROLE_VARIABLES
    assert not [d for d in find(docs, "Secret") if "CLAIMCHECK_HMAC_KEYS" in d.get("data", {})]


def test_signing_keys_are_where_they_belong(docs: list[dict[str, Any]]) -> None:
    producer, billing, audit = (env_of(docs, f"claimcheck-{r}") for r in ("producer", "recipient-billing", "recipient-audit"))
    coordinator = env_of(docs, "claimcheck-coordinator")
    assert producer["CLAIMCHECK_POINTER_SIGNING_KEY"].startswith("ci1:")
    assert billing["CLAIMCHECK_POINTER_VERIFY_KEYS"] == audit["CLAIMCHECK_POINTER_VERIFY_KEYS"] == \
        coordinator["CLAIMCHECK_POINTER_VERIFY_KEYS"] != producer["CLAIMCHECK_POINTER_SIGNING_KEY"]
    # Each group its own ACK key; the coordinator verifies every group's, bound to the group.
    assert billing["CLAIMCHECK_ACK_SIGNING_KEY"] != audit["CLAIMCHECK_ACK_SIGNING_KEY"]
    assert coordinator["CLAIMCHECK_ACK_VERIFY_KEYS"].split(",") == [
        f"billing:{billing['CLAIMCHECK_ACK_SIGNING_KEY']}", f"audit:{audit['CLAIMCHECK_ACK_SIGNING_KEY']}"]
    # Control: the operator sends the first token the coordinator accepts.
    tokens = coordinator["CLAIMCHECK_CONTROL_TOKENS"].split(",")
    assert env_of(docs, "claimcheck-operator")["CLAIMCHECK_CONTROL_TOKEN"] == tokens[0] and len(tokens[0]) >= 32
    assert coordinator["CLAIMCHECK_HTTP_HOST"] == "0.0.0.0"


def test_each_role_has_its_own_broker_and_s3_user(docs: list[dict[str, Any]]) -> None:
    users = {}
    for name in ("producer", "coordinator", "recipient-billing", "recipient-audit"):
        url = urlsplit(env_of(docs, f"claimcheck-{name}")["CLAIMCHECK_AMQP_URL"])
        assert url.hostname == "claimcheck-infra-haproxy.claimcheck.svc.cluster.local" and url.path == "/%2F"
        users[name] = (url.username or "", url.password or "")
    assert {u for u, _ in users.values()} == {"claimcheck-producer", "claimcheck-coordinator",
                                              "claimcheck-recipient-billing", "claimcheck-recipient-audit"}
    assert len({p for _, p in users.values()}) == 4 and all(len(p) >= 32 for _, p in users.values())
    provision = env_of(docs, "claimcheck-provision")
    assert sorted(provision["CLAIMCHECK_BROKER_USERS"].split(",")) == sorted(
        f"{role}={user}:{password}" for role, (user, password) in
        {"producer": users["producer"], "coordinator": users["coordinator"],
         "recipient.billing": users["recipient-billing"], "recipient.audit": users["recipient-audit"]}.items())


def test_generated_credentials_differ_per_install_and_values_win() -> None:
    def coordinator(*sets: str) -> dict[str, str]:
        return env_of(render(APP, sets=sets, fresh=True), "claimcheck-coordinator")

    first, second = coordinator(), coordinator()
    for key in ("CLAIMCHECK_COORDINATOR_KEY", "CLAIMCHECK_CONTROL_TOKENS", "CLAIMCHECK_ACK_VERIFY_KEYS", "CLAIMCHECK_AMQP_URL"):
        assert first[key] != second[key], key
    given = coordinator("credentials.controlTokens=new-token-0123456789abcdefghij\\,old-token-0123456789abcdefghij",
                        "credentials.coordinatorKey=c2:0123456789abcdefXYZ")
    assert given["CLAIMCHECK_CONTROL_TOKENS"] == "new-token-0123456789abcdefghij,old-token-0123456789abcdefghij"
    assert given["CLAIMCHECK_COORDINATOR_KEY"] == "c2:0123456789abcdefXYZ"


def test_the_ledger_key_is_shared_by_producers_and_coordinators_only_and_rotates() -> None:
    docs = render(APP, fresh=True)
    producer, coordinator = env_of(docs, "claimcheck-producer"), env_of(docs, "claimcheck-coordinator")
    assert coordinator["CLAIMCHECK_LEDGER_VERIFY_KEYS"] == producer["CLAIMCHECK_LEDGER_SIGNING_KEY"]
    assert Verifier.parse(ledger_keys=coordinator["CLAIMCHECK_LEDGER_VERIFY_KEYS"])  # parses as the application will
    assert all("CLAIMCHECK_LEDGER_SIGNING_KEY" not in env_of(docs, name) for name in
               ("claimcheck-recipient-billing", "claimcheck-recipient-audit", "claimcheck-operator"))
    rotating = render(APP, sets=("credentials.ledgerKey=l2:0123456789abcdefNEW",
                                 "credentials.ledgerVerifyKeys=l1:0123456789abcdefOLD"), fresh=True)
    assert env_of(rotating, "claimcheck-producer")["CLAIMCHECK_LEDGER_SIGNING_KEY"] == "l2:0123456789abcdefNEW"
    assert (env_of(rotating, "claimcheck-coordinator")["CLAIMCHECK_LEDGER_VERIFY_KEYS"]
            == "l2:0123456789abcdefNEW,l1:0123456789abcdefOLD")


def test_coordinator_deployment(docs: list[dict[str, Any]]) -> None:
    deploy = one(docs, "Deployment", "claimcheck-coordinator")
    assert deploy["spec"]["replicas"] == 2
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["claimcheck", "coordinator"]
    assert container["envFrom"] == [{"secretRef": {"name": "claimcheck-coordinator"}}]
    assert container["ports"] == [{"name": "http", "containerPort": 38080}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (init,) = spec["initContainers"]
    assert init["command"] == ["claimcheck", "migrate"]
    assert init["envFrom"] == container["envFrom"]
    assert container["env"] == [{"name": "CLAIMCHECK_COORDINATOR_SHARD_IDS", "value": "0"}]
    # One shard keeps the selector installed releases have (a Deployment's selector is immutable).
    assert "claimcheck.io/shard" not in deploy["spec"]["selector"]["matchLabels"]
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    svc = one(docs, "Service", "claimcheck-coordinator")
    assert svc["spec"]["ports"][0]["port"] == 38080
    assert one(docs, "PodDisruptionBudget", "claimcheck-coordinator")["spec"]["minAvailable"] == 1


def test_operator_deployment(docs: list[dict[str, Any]]) -> None:
    deploy = one(docs, "Deployment", "claimcheck-operator")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["claimcheck-operator"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CLAIMCHECK_APP_IMAGE"] == container["image"]
    assert env["CLAIMCHECK_OPERATOR_SECRET_PREFIX"] == "claimcheck"
    assert env["CLAIMCHECK_OPERATOR_RECIPIENTS"] == "billing,audit"
    assert env["CLAIMCHECK_OPERATOR_IMAGE_ALLOWLIST"] == "" and env["CLAIMCHECK_OPERATOR_IMAGE_PULL_SECRETS"] == ""
    assert json.loads(env["CLAIMCHECK_OPERATOR_JOB_RESOURCES"])["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert env["CLAIMCHECK_COORDINATOR_URL"] == "http://claimcheck-coordinator.claimcheck.svc.cluster.local:38080"
    assert env["CLAIMCHECK_WATCH_NAMESPACES"] == ""
    assert env["CLAIMCHECK_OPERATOR_LIVENESS"] == "http://0.0.0.0:8080/healthz"
    token = next(e for e in container["env"] if e["name"] == "CLAIMCHECK_CONTROL_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "claimcheck-operator", "key": "CLAIMCHECK_CONTROL_TOKEN"}
    assert "envFrom" not in container
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert spec["serviceAccountName"] == "claimcheck-operator"
    assert one(docs, "ServiceAccount", "claimcheck-operator")


def test_provisioning_is_a_pre_install_hook_with_the_admin_credentials(docs: list[dict[str, Any]]) -> None:
    job = one(docs, "Job", "claimcheck-provision")
    secret = one(docs, "Secret", "claimcheck-provision")
    for obj in (job, secret):
        annotations = obj["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {"before-hook-creation", "hook-succeeded"}
    weight = [int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in (secret, job)]
    assert weight[0] < weight[1], "the Secret must exist before the Job"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["claimcheck", "provision", "--recipients", "billing,audit"]
    assert container["envFrom"] == [{"secretRef": {"name": "claimcheck-provision"}}]
    assert not find(render(APP, sets=("broker.provision=false",)), "Job", "claimcheck-provision")


def _rules_file() -> list[dict[str, Any]]:
    path = ROOT / "operator" / "rbac-rules.yaml"
    if not path.exists():
        pytest.fail("operator/rbac-rules.yaml is missing: the chart's RBAC must equal the operator's declared rules")
    doc = yaml.safe_load(path.read_text())
    rules: list[dict[str, Any]] = doc["rules"] if isinstance(doc, dict) else doc
    return rules


def _expand(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", []) for verb in rule.get("verbs", [])}


def test_chart_rbac_rules_are_the_operators_rules() -> None:
    chart_copy = yaml.safe_load((APP / "files" / "rbac-rules.yaml").read_text())
    chart_copy = chart_copy["rules"] if isinstance(chart_copy, dict) else chart_copy
    assert _expand(chart_copy) == _expand(_rules_file()), \
        "charts/claimcheck/files/rbac-rules.yaml differs from operator/rbac-rules.yaml: copy it over"


@pytest.mark.parametrize("values", [None, APP / "ci" / "01-namespaced-values.yaml"], ids=["clusterwide", "namespaced"])
def test_rendered_rbac_is_no_wider_than_the_operator_needs(values: Path | None) -> None:
    docs = render(APP, values)
    roles = find(docs, "ClusterRole") + find(docs, "Role")
    assert roles
    allowed = _expand(_rules_file())
    for role in roles:
        granted = _expand(role["rules"])
        assert "*" not in {v for _, _, v in granted} | {r for _, r, _ in granted} | {g for g, _, _ in granted}
        assert granted <= allowed, f"{role['kind']}/{role['metadata']['name']} grants {sorted(granted - allowed)}"
        assert all(not rule.get("nonResourceURLs") for rule in role["rules"])
    bindings = find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding")
    assert len(bindings) == len(roles)
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "claimcheck-operator", "namespace": "claimcheck"}]


def test_namespaced_operator_gets_roles_not_cluster_roles() -> None:
    docs = render(APP, APP / "ci" / "01-namespaced-values.yaml")
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in find(docs, "Role")) == ["claimcheck", "team-b"]
    container = one(docs, "Deployment", "claimcheck-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CLAIMCHECK_WATCH_NAMESPACES"] == "claimcheck,team-b"


def test_external_services_scenario_uses_given_endpoints() -> None:
    docs = render(APP, APP / "ci" / "02-external-services-values.yaml")
    producer = env_of(docs, "claimcheck-producer")
    assert producer["CLAIMCHECK_AMQP_URL"].startswith("amqps://claimcheck-producer:")
    assert producer["CLAIMCHECK_AMQP_URL"].endswith("@broker.example.com:5671/%2F")
    assert (producer["CLAIMCHECK_S3_ACCESS_KEY_ID"], producer["CLAIMCHECK_S3_REGION"]) == ("AKIAPRODUCER", "eu-west-1")
    assert env_of(docs, "claimcheck-recipient-archive-eu-1")["CLAIMCHECK_S3_ACCESS_KEY_ID"] == "AKIACONSUMER"
    coordinator = env_of(docs, "claimcheck-coordinator")
    assert coordinator["CLAIMCHECK_S3_ACCESS_KEY_ID"] == "AKIACOORDINATOR"
    assert coordinator["CLAIMCHECK_LOG_LEVEL"] == "DEBUG" and coordinator["CLAIMCHECK_HTTP_HOST"] == "::"
    # The audit group rotates its ACK key: it signs with k2, the coordinator accepts k2 and k1.
    assert env_of(docs, "claimcheck-recipient-audit")["CLAIMCHECK_ACK_SIGNING_KEY"] == "k2:example-only-new-audit-key"
    verify = coordinator["CLAIMCHECK_ACK_VERIFY_KEYS"].split(",")
    assert "audit:k2:example-only-new-audit-key" in verify and "audit:k1:example-only-old-audit-key" in verify
    assert env_of(docs, "claimcheck-reader")["CLAIMCHECK_DATABASE_URL"].startswith("postgresql://app_reader:")
    assert env_of(docs, "claimcheck-provision")["CLAIMCHECK_AMQP_URL"].startswith("amqps://admin:")
    operator = one(docs, "Deployment", "claimcheck-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["CLAIMCHECK_OPERATOR_RECIPIENTS"] == "billing,audit,archive-eu-1"
    assert env["CLAIMCHECK_OPERATOR_IMAGE_ALLOWLIST"] == "registry.example.com/claimcheck@sha256:*"
    assert env["CLAIMCHECK_OPERATOR_IMAGE_PULL_SECRETS"] == "registry-pull"


def test_scaled_scenario_runs_a_deployment_per_shard_behind_one_service() -> None:
    docs = render(APP, APP / "ci" / "03-scaled-values.yaml")
    coordinators = [one(docs, "Deployment", f"claimcheck-coordinator-shard-{shard}") for shard in range(3)]
    assert not find(docs, "Deployment", "claimcheck-coordinator")
    selectors = []
    for shard, coord in enumerate(coordinators):
        assert coord["spec"]["replicas"] == 4  # one active consumer per shard queue, three standing by
        pod = coord["spec"]["template"]
        assert "initContainers" not in pod["spec"]
        (container,) = pod["spec"]["containers"]
        assert container["env"] == [{"name": "CLAIMCHECK_COORDINATOR_SHARD_IDS", "value": str(shard)}]
        selector = coord["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()
        pdb = one(docs, "PodDisruptionBudget", f"claimcheck-coordinator-shard-{shard}")
        assert pdb["spec"]["selector"]["matchLabels"] == selector
        selectors.append(selector)
    # No Deployment's selector matches another's pods; the Service reaches them all.
    for shard, selector in enumerate(selectors):
        for other, coord in enumerate(coordinators):
            matches = selector.items() <= coord["spec"]["template"]["metadata"]["labels"].items()
            assert matches == (shard == other)
    service = one(docs, "Service", "claimcheck-coordinator")["spec"]["selector"]
    assert all(service.items() <= coord["spec"]["template"]["metadata"]["labels"].items() for coord in coordinators)
    shards = {base64.b64decode(one(docs, "Secret", name)["data"]["CLAIMCHECK_COORDINATOR_SHARDS"]).decode()
              for name in ("claimcheck-coordinator", "claimcheck-producer")}
    assert shards == {"3"}
    assert one(docs, "Deployment", "claimcheck-operator")["spec"]["replicas"] == 0


@pytest.mark.parametrize(("sets", "message"), [
    (("--set-json", 'recipients=[{"name": "audit"}, {"name": "audit"}]'), 'group "audit" is listed twice'),
    (("--set", "signing.pointerVerifyKeys=ci1:BfEYxu7LNnMVQiK6NOI0nqA-S9MPMaVvB_maRlJew6o=\\,k2:short"), "pointerVerifyKeys"),
], ids=["duplicate-group", "bad-verify-key"])
def test_bad_configuration_fails_the_render(sets: tuple[str, ...], message: str) -> None:
    args = ["template", "claimcheck", str(APP), "-f", str(APP_TEST_VALUES), *sets]
    result = helm(*args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
