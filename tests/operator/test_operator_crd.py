"""The ClaimCheckJob CRD: valid for Kubernetes, and its schema accepts the examples and rejects the invalid ones.

Without an API server, the schema is checked with jsonschema after a conversion: x-kubernetes-*
keys are dropped, except the list-map keys, whose uniqueness is enforced by a small extra
keyword (the API server rejects duplicate recipient names the same way). CEL rules cannot run
here: the tests check that they are declared.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import claimcheck_operator.spec as spec_module

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "claimcheck" / "crds" / "claimcheckjobs.yaml"
VALID = sorted((ROOT / "manifests").glob("claimcheckjob*.yaml"))
INVALID = sorted((Path(__file__).parent / "examples" / "invalid").glob("*.yaml"))


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def version_schema(crd: Mapping[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def to_jsonschema(node: Any) -> Any:
    """Structural schema -> JSON Schema: drop x-kubernetes-*, keep list-map keys as ``x-map-keys``."""
    if isinstance(node, dict):
        out = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if node.get("x-kubernetes-list-type") == "map":
            out["x-map-keys"] = node["x-kubernetes-list-map-keys"]
        if node.get("x-kubernetes-list-type") == "set":
            out["uniqueItems"] = True
        return out
    if isinstance(node, list):
        return [to_jsonschema(v) for v in node]
    return node


def _map_keys(validator: Any, keys: list[str], instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entry for key {dict(zip(keys, key, strict=True))}")
        seen.add(key)


Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-map-keys": _map_keys})  # type: ignore[no-untyped-call]


def validator() -> Any:
    schema = to_jsonschema(version_schema(load_crd()))
    Validator.check_schema(schema)
    return Validator(schema, format_checker=jsonschema.FormatChecker())


def test_crd_is_a_valid_kubernetes_object_in_strict_mode() -> None:
    kubernetes_validate.validate(load_crd(), "1.32", strict=True)


def test_crd_names_scope_and_status_subresource() -> None:
    crd = load_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "claimcheckjobs.claimcheck.io"
    assert (crd["spec"]["group"], crd["spec"]["scope"]) == ("claimcheck.io", "Namespaced")
    assert (names["kind"], names["plural"], names["shortNames"]) == ("ClaimCheckJob", "claimcheckjobs", ["ccj"])
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_phase_counts_and_age() -> None:
    (version,) = load_crd()["spec"]["versions"]
    default = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert default == [
        ("Phase", ".status.phase"), ("Published", ".status.published"),
        ("Deleted", ".status.deleted"), ("Age", ".metadata.creationTimestamp"),
    ]


def test_spec_is_immutable_by_a_cel_rule_with_a_message() -> None:
    spec = version_schema(load_crd())["properties"]["spec"]
    (rule,) = spec["x-kubernetes-validations"]
    assert rule["rule"] == "self == oldSelf"
    assert "immutable" in rule["message"] and "recreate" in rule["message"]


def test_recipients_are_a_map_keyed_by_name() -> None:
    recipients = version_schema(load_crd())["properties"]["spec"]["properties"]["recipients"]
    assert recipients["x-kubernetes-list-type"] == "map"
    assert recipients["x-kubernetes-list-map-keys"] == ["name"]
    assert recipients["minItems"] == 1
    assert "name" in recipients["items"]["required"]


def test_crd_and_operator_agree_on_size_pattern_and_defaults() -> None:
    spec = version_schema(load_crd())["properties"]["spec"]["properties"]
    producer = spec["producer"]["properties"]
    assert producer["messageSize"]["pattern"] == spec_module.SIZE_PATTERN.pattern
    assert spec["recipients"]["items"]["properties"]["name"]["pattern"] == spec_module.DNS_LABEL.pattern
    defaults = {f.name: f.default for f in dataclasses.fields(spec_module.ProducerSpec) if f.name != "count"}
    assert defaults == {
        "message_size": producer["messageSize"]["default"], "verify": producer["verify"]["default"],
        "parallelism": producer["parallelism"]["default"], "rate_per_second": producer["ratePerSecond"]["default"],
    }
    replicas = spec["recipients"]["items"]["properties"]["replicas"]["default"]
    assert spec_module.Recipient(name="x").replicas == replicas


def test_there_are_examples_both_ways() -> None:
    assert any(p.name == "claimcheckjob-example.yaml" for p in VALID)
    assert len(INVALID) >= 8


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_example_validates_and_parses(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    validator().validate(manifest)
    assert (manifest["apiVersion"], manifest["kind"]) == ("claimcheck.io/v1alpha1", "ClaimCheckJob")
    spec_module.parse_spec(manifest["spec"])  # the operator accepts what the schema accepts


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_rejected(path: Path) -> None:
    text = path.read_text()
    expected = next(line.split("# expect: ", 1)[1] for line in text.splitlines() if line.startswith("# expect: "))
    messages = [error.message for error in validator().iter_errors(yaml.safe_load(text))]
    assert len(messages) == 1 and expected in messages[0], f"{path.name}: {messages}"


@pytest.mark.parametrize("size", ["1", "64KB", "1MB", "1MiB", "2GB", "1.5 MiB", "512B", "10GiB"])
def test_size_forms_accepted(size: str) -> None:
    manifest = yaml.safe_load((ROOT / "manifests" / "claimcheckjob-minimal.yaml").read_text())
    manifest["spec"]["producer"]["messageSize"] = size
    validator().validate(manifest)


@pytest.mark.parametrize("size", ["1TB", "MB", "1 mb", "-1MB", "1.MB", "1e6", "1MB ", ""])
def test_size_forms_rejected(size: str) -> None:
    manifest = yaml.safe_load((ROOT / "manifests" / "claimcheckjob-minimal.yaml").read_text())
    bad = copy.deepcopy(manifest)
    bad["spec"]["producer"]["messageSize"] = size
    assert list(validator().iter_errors(bad))
