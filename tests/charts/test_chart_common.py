"""Rules every rendered workload follows, in every scenario of both charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import APP, INFRA, SCENARIOS, containers, one, pod_specs, render, restricted_problems, scenario_id

FIXED_CREDENTIALS = Path(__file__).with_name("fixed-credentials-values.yaml")
REQUIRED_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "helm.sh/chart"}


@pytest.fixture(params=SCENARIOS, ids=scenario_id)
def scenario_docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    chart, values = request.param
    return render(chart, values)


def test_restricted_pod_security(scenario_docs: list[dict[str, Any]]) -> None:
    """The restricted Pod Security Standard: non-root, RuntimeDefault seccomp, no escalation, no capabilities."""
    problems = [p for where, spec in pod_specs(scenario_docs) for p in restricted_problems(where, spec)]
    assert not problems, "\n".join(problems)


def test_resources_on_every_container(scenario_docs: list[dict[str, Any]]) -> None:
    missing = []
    for where, spec in pod_specs(scenario_docs):
        for c in containers(spec):
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(kind, {})):
                    missing.append(f"{where}/{c['name']}: {kind}")
    assert not missing, "\n".join(missing)


def test_probes_on_every_container(scenario_docs: list[dict[str, Any]]) -> None:
    missing = []
    for where, spec in pod_specs(scenario_docs):
        for c in containers(spec, init=False):
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    missing.append(f"{where}/{c['name']}: {probe}")
    assert not missing, "\n".join(missing)


def test_standard_labels_and_stable_selectors(scenario_docs: list[dict[str, Any]]) -> None:
    problems = []
    for d in scenario_docs:
        if d["kind"] == "CustomResourceDefinition":
            continue
        labels = d["metadata"].get("labels", {})
        if not set(labels) >= REQUIRED_LABELS:
            problems.append(f"{d['kind']}/{d['metadata']['name']}: labels {sorted(REQUIRED_LABELS - set(labels))}")
        selector = None
        if d["kind"] in ("Deployment", "StatefulSet"):
            selector = d["spec"]["selector"]["matchLabels"]
            pod_labels = d["spec"]["template"]["metadata"]["labels"]
            if not selector.items() <= pod_labels.items():
                problems.append(f"{d['kind']}/{d['metadata']['name']}: selector does not match its pods")
        elif d["kind"] == "Service" and "selector" in d["spec"]:
            selector = d["spec"]["selector"]
        elif d["kind"] == "PodDisruptionBudget":
            selector = d["spec"]["selector"]["matchLabels"]
        if selector is not None:
            # Only labels that never change on upgrade: no version, no chart (a coordinator shard's
            # number is fixed for its Deployment's life).
            allowed = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                       "claimcheck.io/shard"}
            if not set(selector) <= allowed or not {"app.kubernetes.io/name", "app.kubernetes.io/instance"} <= set(selector):
                problems.append(f"{d['kind']}/{d['metadata']['name']}: selector {selector}")
    assert not problems, "\n".join(problems)


def test_services_select_pods_of_one_component(scenario_docs: list[dict[str, Any]]) -> None:
    """Each Service's selector matches the pod templates of one component: one workload, or the
    coordinator's Deployments, one per shard."""
    templates = {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["metadata"]["labels"]
                 for d in scenario_docs if d["kind"] in ("Deployment", "StatefulSet")}
    for svc in (d for d in scenario_docs if d["kind"] == "Service"):
        matches = [n for n, labels in templates.items() if svc["spec"]["selector"].items() <= labels.items()]
        components = {templates[n].get("app.kubernetes.io/component") for n in matches}
        assert matches and len(components) == 1, f"Service {svc['metadata']['name']} selects {matches}"
        assert len(matches) == 1 or components == {"coordinator"}, f"Service {svc['metadata']['name']} selects {matches}"


def test_workloads_roll_on_config_or_secret_change(scenario_docs: list[dict[str, Any]]) -> None:
    """Pods carry checksums of the ConfigMaps/Secrets they read, so `helm upgrade` rolls them."""
    for d in scenario_docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            annotations = d["spec"]["template"]["metadata"].get("annotations", {})
            assert any(k.startswith("checksum/") for k in annotations), f"{d['kind']}/{d['metadata']['name']}"


def _images(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {f"{where}/{c['name']}": c["image"] for where, spec in pod_specs(docs) for c in containers(spec)}


def test_default_images_are_official_upstream() -> None:
    images = set(_images(render(INFRA)).values())
    repos = {i.split("@", 1)[0].rsplit(":", 1)[0] for i in images}
    assert repos == {"rabbitmq", "haproxy", "quay.io/minio/minio", "quay.io/minio/mc", "postgres"}
    assert not any("bitnami" in i for i in images)
    assert all(":" in i and not i.endswith(":latest") for i in images)


def test_image_overrides_take_effect() -> None:
    images = _images(render(INFRA, INFRA / "ci" / "02-images-values.yaml"))
    rabbitmq = ("mirror.example.com/library/rabbitmq:4.3.4-management"
                "@sha256:4e628d3cbc61ef45c5918e19bb9844874410d96d4ced897ced7d072d63ad555c")
    assert images["StatefulSet/rmq/rabbitmq"] == images["StatefulSet/rmq/setup"] == rabbitmq
    assert images["Deployment/claimcheck-infra-haproxy/haproxy"] == "mirror.example.com/library/haproxy:3.4"
    assert images["StatefulSet/claimcheck-infra-minio/minio"] == (
        "mirror.example.com/minio/minio:RELEASE.2025-09-07T16-13-09Z@sha256:" + "0" * 64)
    assert images["Job/claimcheck-infra-minio-bucket/mc"] == (
        "mirror.example.com/minio/mc:RELEASE.2025-08-13T08-35-41Z"
        "@sha256:a7fe349ef4bd8521fb8497f55c6042871b2ae640607cf99d9bede5e9bdf11727")
    assert images["StatefulSet/claimcheck-infra-postgresql/postgresql"] == "mirror.example.com/library/postgres:16.4"
    for where, spec in pod_specs(render(INFRA, INFRA / "ci" / "02-images-values.yaml")):
        assert spec["imagePullSecrets"] == [{"name": "mirror-pull"}], where

    app = render(APP, sets=("image.repository=reg.example.com/cc", "image.tag=9.9.9"))
    assert set(_images(app).values()) == {"reg.example.com/cc:9.9.9"}
    operator = one(app, "Deployment", "claimcheck-operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["CLAIMCHECK_APP_IMAGE"] == "reg.example.com/cc:9.9.9"


def test_app_image_defaults_to_the_chart_app_version() -> None:
    chart = (APP / "Chart.yaml").read_text()
    app_version = next(line.split(":", 1)[1].strip().strip('"') for line in chart.splitlines()
                       if line.startswith("appVersion:"))
    assert set(_images(render(APP)).values()) == {f"claimcheck:{app_version}"}


@pytest.mark.parametrize(
    ("chart", "sets", "kind", "name"),
    [
        (INFRA, ("rabbitmq.extraConfig=consumer_timeout = 1",), "StatefulSet", "rmq"),
        (INFRA, ("haproxy.checkIntervalSeconds=9",), "Deployment", "claimcheck-infra-haproxy"),
        (APP, ("config.logLevel=DEBUG",), "Deployment", "claimcheck-coordinator"),
        (APP, ("credentials.controlTokens=another-control-token-0123456789",), "Deployment", "claimcheck-operator"),
    ],
    ids=["rabbitmq-config", "haproxy-config", "coordinator-env", "operator-env"],
)
def test_changed_values_change_the_pod_template(chart: Path, sets: tuple[str, ...], kind: str, name: str) -> None:
    """A `helm upgrade` that changes config changes the pod template, so the workload rolls
    (with every generated credential fixed, so only the change itself can move the checksum)."""
    fixed = FIXED_CREDENTIALS if chart == APP else None
    before = one(render(chart, fixed), kind, name)["spec"]["template"]["metadata"]["annotations"]
    if fixed:  # nothing random is left: a second render is the same
        assert before == one(render(chart, fixed, fresh=True), kind, name)["spec"]["template"]["metadata"]["annotations"]
    after = one(render(chart, fixed, sets=sets), kind, name)["spec"]["template"]["metadata"]["annotations"]
    assert {k: v for k, v in before.items() if k.startswith("checksum/")} != \
        {k: v for k, v in after.items() if k.startswith("checksum/")}


@pytest.mark.parametrize(
    ("chart", "sets", "kind", "name", "path", "expected"),
    [
        (INFRA, ("rabbitmq.replicas=5",), "StatefulSet", "rmq", ("spec", "replicas"), 5),
        (INFRA, ("haproxy.replicas=3",), "Deployment", "claimcheck-infra-haproxy", ("spec", "replicas"), 3),
        (APP, ("coordinator.replicas=5",), "Deployment", "claimcheck-coordinator", ("spec", "replicas"), 5),
        (INFRA, ("rabbitmq.resources.limits.memory=2Gi",), "StatefulSet", "rmq",
         ("spec", "template", "spec", "containers", 0, "resources", "limits", "memory"), "2Gi"),
        (APP, ("image.tag=0.9.0",), "Deployment", "claimcheck-coordinator",
         ("spec", "template", "spec", "containers", 0, "image"), "claimcheck:0.9.0"),
    ],
    ids=["rmq-replicas", "haproxy-replicas", "coordinator-replicas", "rmq-resources", "app-tag"],
)
def test_upgrade_values_reach_the_workload(chart: Path, sets: tuple[str, ...], kind: str, name: str,
                                           path: tuple[str | int, ...], expected: object) -> None:
    node: Any = one(render(chart, sets=sets), kind, name)
    for key in path:
        node = node[key]
    assert node == expected
