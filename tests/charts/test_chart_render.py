"""helm lint --strict, helm template for every scenario, and offline schema validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .conftest import APP, APP_TEST_VALUES, INFRA, KUBE_VERSION, ROOT, SCENARIOS, helm, render, scenario_id


@pytest.mark.parametrize("chart", [INFRA, APP], ids=lambda c: c.name)
def test_helm_lint_strict(chart: Path) -> None:
    args = ["lint", "--strict", str(chart)] + (["-f", str(APP_TEST_VALUES)] if chart == APP else [])
    for values in sorted((chart / "ci").glob("*-values.yaml")):
        result = helm("lint", "--strict", str(chart), "-f", str(values), check=False)
        assert result.returncode == 0, f"{values.name}: {result.stdout}{result.stderr}"
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_chart_has_ci_scenarios() -> None:
    for chart in (INFRA, APP):
        assert len(list((chart / "ci").glob("*-values.yaml"))) >= 2, chart.name


@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_rendered_manifests_are_valid_kubernetes(scenario: tuple[Path, Path | None]) -> None:
    """Every object against the Kubernetes OpenAPI schemas, strict (unknown fields fail)."""
    chart, values = scenario
    docs = render(chart, values)
    assert docs, "nothing rendered"
    errors = []
    for doc in docs:
        if doc["apiVersion"].startswith("claimcheck.io/"):
            continue  # custom resources: validated against the CRD below
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_kubernetes_validate_rejects_a_misspelled_field() -> None:
    """The validator itself is strict: guards the test above against passing vacuously."""
    sts = next(d for d in render(INFRA) if d["kind"] == "StatefulSet")
    broken = {**sts, "spec": {**sts["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def _crd_schema() -> dict[str, Any]:
    crd_path = APP / "crds" / "claimcheckjobs.yaml"
    if not crd_path.exists():
        pytest.fail("charts/claimcheck/crds/claimcheckjobs.yaml is missing")
    crd = yaml.safe_load(crd_path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_crd_is_rendered_with_the_app_chart() -> None:
    crds = [d for d in render(APP) if d["kind"] == "CustomResourceDefinition"]
    assert [c["metadata"]["name"] for c in crds] == ["claimcheckjobs.claimcheck.io"]
    kubernetes_validate.validate(crds[0], KUBE_VERSION, strict=True)


@pytest.mark.parametrize("manifest", sorted((ROOT / "manifests").glob("claimcheckjob*.yaml")), ids=lambda p: p.name)
def test_example_custom_resources_match_the_crd(manifest: Path) -> None:
    schema = _crd_schema()
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == "claimcheck.io/v1alpha1" and doc["kind"] == "ClaimCheckJob"
        jsonschema.validate(doc, schema)


def test_crd_schema_rejects_an_invalid_custom_resource() -> None:
    schema = _crd_schema()
    bad = yaml.safe_load((ROOT / "manifests" / "claimcheckjob-example.yaml").read_text())
    bad["spec"]["producer"]["count"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize(
    ("chart", "sets", "message"),
    [
        (INFRA, ("rabbitmq.notAKey=1",), "notAKey"),
        (INFRA, ("rabbitmq.replicas=three",), "replicas"),
        (INFRA, ("haproxy.service.type=Ingress",), "type"),
        (APP, ("coordinator.unknown=true",), "unknown"),
        (APP, ("operator.replicas=2",), "replicas"),
        (APP, ("config.httpPort=http",), "httpPort"),
        (APP, ("config.amqpEndpoint=amqp://user:pass@host:5672/%2F",), "amqpEndpoint"),
        (APP, ("recipients[0].name=Billing",), "name"),
        (APP, ("signing.pointerSigningKey=k1:not-a-key",), "pointerSigningKey"),
    ],
    ids=["infra-unknown-key", "infra-wrong-type", "infra-bad-enum", "app-unknown-key", "app-two-operators", "app-wrong-type",
         "app-endpoint-with-credentials", "app-bad-group-name", "app-bad-pointer-key"],
)
def test_values_schema_rejects_bad_values(chart: Path, sets: tuple[str, ...], message: str) -> None:
    args = ["template", "x", str(chart)] + (["-f", str(APP_TEST_VALUES)] if chart == APP else [])
    for s in sets:
        args += ["--set", s]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"helm template accepted {sets}"
    assert "schema" in result.stderr and message in result.stderr, result.stderr


@pytest.mark.parametrize("chart", [INFRA, APP], ids=lambda c: c.name)
def test_values_schema_forbids_unknown_keys_everywhere(chart: Path) -> None:
    """Every object in values.schema.json with properties sets additionalProperties: false."""
    import json

    schema = json.loads((chart / "values.schema.json").read_text())
    loose = []

    def walk(node: dict[str, Any], path: str) -> None:
        if isinstance(node, dict) and "properties" in node:
            if node.get("additionalProperties") is not False:
                loose.append(path or "<root>")
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")

    walk(schema, "")
    assert not loose, loose


@pytest.mark.parametrize("chart", [INFRA, APP], ids=lambda c: c.name)
def test_every_values_key_is_documented(chart: Path) -> None:
    """A comment line directly above every key of values.yaml."""
    lines = (chart / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if ":" in stripped:
            above = lines[i - 1].strip() if i else ""
            if not above.startswith("#"):
                undocumented.append(f"{i + 1}: {stripped}")
    assert not undocumented, "\n".join(undocumented)
