"""claimcheck application chart: coordinator, operator, env Secret, RBAC."""

from __future__ import annotations

import pytest
import yaml

from .conftest import APP, ROOT, find, one, render

INTERFACE_VARIABLES = {
    "CLAIMCHECK_AMQP_URL", "CLAIMCHECK_S3_ENDPOINT_URL", "CLAIMCHECK_S3_ACCESS_KEY_ID",
    "CLAIMCHECK_S3_SECRET_ACCESS_KEY", "CLAIMCHECK_S3_REGION", "CLAIMCHECK_S3_BUCKET", "CLAIMCHECK_DATABASE_URL",
    "CLAIMCHECK_COORDINATOR_URL", "CLAIMCHECK_HTTP_PORT", "CLAIMCHECK_LOG_LEVEL", "CLAIMCHECK_HMAC_KEYS",
}


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return render(APP)


def test_env_secret_holds_every_interface_variable(docs: list[dict]) -> None:
    assert set(one(docs, "Secret", "claimcheck-env")["data"]) == INTERFACE_VARIABLES


def test_hmac_keys_are_generated_per_install_unless_given() -> None:
    import base64

    def keys(*sets: str) -> str:
        data = one(render(APP, sets=sets, fresh=True), "Secret", "claimcheck-env")["data"]
        return base64.b64decode(data["CLAIMCHECK_HMAC_KEYS"]).decode()

    first, second = keys(), keys()
    assert first != second and first.startswith("k1:") and len(first) == 43
    assert keys("config.hmacKeys=new:0123456789abcdefXYZ\\,old:0123456789abcdefOLD") == (
        "new:0123456789abcdefXYZ,old:0123456789abcdefOLD"
    )


def test_coordinator_deployment(docs: list[dict]) -> None:
    deploy = one(docs, "Deployment", "claimcheck-coordinator")
    assert deploy["spec"]["replicas"] == 2
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["claimcheck", "coordinator"]
    assert container["envFrom"] == [{"secretRef": {"name": "claimcheck-env"}}]
    assert container["ports"] == [{"name": "http", "containerPort": 38080}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (init,) = spec["initContainers"]
    assert init["command"] == ["claimcheck", "migrate"]
    assert init["envFrom"] == container["envFrom"]
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    svc = one(docs, "Service", "claimcheck-coordinator")
    assert svc["spec"]["ports"][0]["port"] == 38080
    assert one(docs, "PodDisruptionBudget", "claimcheck-coordinator")["spec"]["minAvailable"] == 1


def test_operator_deployment(docs: list[dict]) -> None:
    deploy = one(docs, "Deployment", "claimcheck-operator")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    spec = deploy["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["claimcheck-operator"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLAIMCHECK_APP_ENV_SECRET"] == "claimcheck-env"
    assert env["CLAIMCHECK_APP_IMAGE"] == container["image"]
    assert env["CLAIMCHECK_COORDINATOR_URL"] == "http://claimcheck-coordinator.claimcheck.svc.cluster.local:38080"
    assert env["CLAIMCHECK_WATCH_NAMESPACES"] == ""
    assert env["CLAIMCHECK_OPERATOR_LIVENESS"] == "http://0.0.0.0:8080/healthz"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert spec["serviceAccountName"] == "claimcheck-operator"
    assert one(docs, "ServiceAccount", "claimcheck-operator")


def _rules_file() -> list[dict]:
    path = ROOT / "operator" / "rbac-rules.yaml"
    if not path.exists():
        pytest.fail("operator/rbac-rules.yaml is missing: the chart's RBAC must equal the operator's declared rules")
    doc = yaml.safe_load(path.read_text())
    return doc["rules"] if isinstance(doc, dict) else doc


def _expand(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", []) for verb in rule.get("verbs", [])}


def test_chart_rbac_rules_are_the_operators_rules() -> None:
    chart_copy = yaml.safe_load((APP / "files" / "rbac-rules.yaml").read_text())
    chart_copy = chart_copy["rules"] if isinstance(chart_copy, dict) else chart_copy
    assert _expand(chart_copy) == _expand(_rules_file()), \
        "charts/claimcheck/files/rbac-rules.yaml differs from operator/rbac-rules.yaml: copy it over"


@pytest.mark.parametrize("values", [None, APP / "ci" / "01-namespaced-values.yaml"], ids=["clusterwide", "namespaced"])
def test_rendered_rbac_is_no_wider_than_the_operator_needs(values) -> None:
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
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CLAIMCHECK_WATCH_NAMESPACES"] == "claimcheck,team-b"


def test_external_services_scenario_uses_given_endpoints() -> None:
    import base64

    docs = render(APP, APP / "ci" / "02-external-services-values.yaml")
    env = {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret", "claimcheck-env")["data"].items()}
    assert env["CLAIMCHECK_AMQP_URL"].startswith("amqps://app:")
    assert env["CLAIMCHECK_S3_REGION"] == "eu-west-1"
    assert env["CLAIMCHECK_LOG_LEVEL"] == "DEBUG"


def test_scaled_scenario() -> None:
    docs = render(APP, APP / "ci" / "03-scaled-values.yaml")
    coord = one(docs, "Deployment", "claimcheck-coordinator")
    assert coord["spec"]["replicas"] == 4
    assert "initContainers" not in coord["spec"]["template"]["spec"]
    assert one(docs, "Deployment", "claimcheck-operator")["spec"]["replicas"] == 0
