"""Every image the charts render exists where it is pulled from, pinned; RabbitMQ's config fits 4.x.

The image list is taken from every rendered value set (defaults, every ci/*-values.yaml, the
kind values of scripts/, monitoring on), so a new workload or scenario is checked without
touching this file. Whether a digest still resolves can only be seen from a registry; the
pins and where they were confirmed are in docs/kubernetes.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import APP, INFRA, ROOT, SCENARIOS, containers, one, pod_specs, render, scenario_id

# Repositories that no longer serve anonymous pulls (MinIO left Docker Hub in 2026).
GONE = {"docker.io/minio/minio", "docker.io/minio/mc"}
# Tags that move: a pod pulled today and one pulled tomorrow would run different software.
FLOATING = {"latest", "stable", "edge", "main", "master", "nightly", "mainline", "current", "lts"}
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REFERENCE = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._/:-]*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
                       r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")

VALUE_SETS = SCENARIOS + [
    (INFRA, ROOT / "scripts" / "kind-infra-values.yaml"),
    (APP, ROOT / "scripts" / "kind-app-values.yaml"),
]


def canonical_repository(repo: str) -> str:
    """docker.io/library/x for x, docker.io/a/b for a/b; other registries as written."""
    first = repo.split("/", 1)[0]
    if "." not in first and ":" not in first and first != "localhost":
        repo = f"docker.io/{repo}" if "/" in repo else f"docker.io/library/{repo}"
    return repo.replace("index.docker.io/", "docker.io/")


def image_problems(reference: str) -> list[str]:
    """Why a reference would not pull the same, existing image every time (empty: fine)."""
    m = REFERENCE.match(reference)
    if not m:
        return [f"{reference!r} is not an image reference"]
    problems = []
    repo, tag = canonical_repository(m["repo"]), m["tag"]
    if repo in GONE:
        problems.append(f"{reference}: {repo} is gone (MinIO's images are archived on quay.io/minio)")
    if not tag:
        problems.append(f"{reference}: no tag (the runtime would pull `latest`, or a person cannot tell the release)")
    elif tag.lower() in FLOATING:
        problems.append(f"{reference}: floating tag {tag!r}")
    return problems


def rendered_images(chart: Path, values: Path | None) -> dict[str, str]:
    sets = ("monitoring.enabled=true",) if chart == APP else ()
    docs = render(chart, values, sets=sets)
    images = {f"{where}/{c['name']}": c["image"] for where, spec in pod_specs(docs) for c in containers(spec)}
    for deploy in (d for d in docs if d["kind"] == "Deployment"):
        for c in deploy["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                if env["name"] == "CLAIMCHECK_APP_IMAGE":  # what the operator's Jobs run
                    images[f"Deployment/{deploy['metadata']['name']}/env/CLAIMCHECK_APP_IMAGE"] = env["value"]
    return images


@pytest.mark.parametrize("scenario", VALUE_SETS, ids=scenario_id)
def test_every_image_reference_is_pinned_and_pullable(scenario: tuple[Path, Path | None]) -> None:
    images = rendered_images(*scenario)
    assert images, "no image rendered"
    problems = [p for where, ref in sorted(images.items()) for p in (f"{where}: {x}" for x in image_problems(ref))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("reference, problem", [
    ("minio/minio:RELEASE.2025-09-07T16-13-09Z", "gone"),
    ("docker.io/minio/mc:RELEASE.2025-08-13T08-35-41Z", "gone"),
    ("index.docker.io/minio/minio@sha256:" + "1" * 64, "gone"),
    ("rabbitmq", "no tag"),
    ("quay.io/minio/minio@sha256:" + "1" * 64, "no tag"),
    ("grafana/grafana:latest", "floating"),
    ("haproxy:lts", "floating"),
    ("Not A Reference", "not an image reference"),
])
def test_the_image_check_rejects(reference: str, problem: str) -> None:
    """The check above can fail: each kind of bad reference is caught."""
    assert any(problem in p for p in image_problems(reference)), image_problems(reference)


@pytest.mark.parametrize("reference", [
    "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z@sha256:" + "1" * 64,
    "rabbitmq:4.3.4-management", "registry.example.com:5000/team/claimcheck:0.1.0", "postgres:16",
])
def test_the_image_check_accepts(reference: str) -> None:
    assert image_problems(reference) == []


def test_default_infra_images_are_pinned_by_tag_and_digest() -> None:
    """The infra chart's defaults name a release and the exact bytes of it."""
    images = rendered_images(INFRA, None)
    for where, ref in images.items():
        if "postgresql" in where:
            continue  # the official postgres image keeps its major tag; see docs/kubernetes.md
        m = REFERENCE.match(ref)
        assert m and m["tag"] and m["digest"] and DIGEST.match(m["digest"]), f"{where}: {ref}"
    assert images["StatefulSet/claimcheck-infra-minio/minio"].startswith("quay.io/minio/minio:RELEASE.")
    assert images["Job/claimcheck-infra-minio-bucket/mc"].startswith("quay.io/minio/mc:RELEASE.")
    rabbitmq = REFERENCE.match(images["StatefulSet/rmq/rabbitmq"])
    assert rabbitmq and rabbitmq["repo"] == "rabbitmq"
    assert re.fullmatch(r"4\.\d+\.\d+-management", rabbitmq["tag"] or ""), rabbitmq["tag"]
    haproxy = REFERENCE.match(images["Deployment/claimcheck-infra-haproxy/haproxy"])
    assert haproxy and re.match(r"3\.4\.\d+", haproxy["tag"] or ""), "HAProxy: the current LTS branch (3.4)"


# --- rabbitmq.conf against RabbitMQ 4.3 -------------------------------------------------------
# Keys read from the cuttlefish schemas of rabbitmq-server v4.3.4 (deps/rabbit, rabbitmq_management,
# rabbitmq_prometheus, rabbitmq_peer_discovery_common and _k8s priv/schema). A key RabbitMQ does
# not know stops the node at boot; the k8s ones listed as deprecated are accepted and ignored.
RABBITMQ_4_3_KEYS = {
    "cluster_name", "cluster_formation.peer_discovery_backend", "cluster_formation.target_cluster_size_hint",
    "cluster_formation.k8s.ordinal_start", "cluster_formation.k8s.seed_node",
    "cluster_formation.node_cleanup.interval", "cluster_formation.node_cleanup.only_log_warning",
    "cluster_partition_handling", "default_queue_type", "queue_leader_locator", "loopback_users.guest",
    "listeners.tcp.default", "management.tcp.port", "prometheus.tcp.port", "log.console", "log.console.level",
    "log.file", "total_memory_available_override_value", "vm_memory_high_watermark.relative",
    "disk_free_limit.absolute", "max_message_size", "consumer_timeout",
}
IGNORED_SINCE_4_1 = {
    "cluster_formation.k8s.host", "cluster_formation.k8s.port", "cluster_formation.k8s.scheme",
    "cluster_formation.k8s.token_path", "cluster_formation.k8s.cert_path", "cluster_formation.k8s.namespace_path",
    "cluster_formation.k8s.service_name", "cluster_formation.k8s.address_type", "cluster_formation.k8s.hostname_suffix",
}
MAX_MESSAGE_SIZE_LIMIT = 536870912  # the schema's validator: 0 < size <= 512 MiB


def conf_keys(conf: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return {k.strip(): v.strip() for k, v in pairs}


INFRA_SETS = [s for s in VALUE_SETS if s[0] == INFRA]


@pytest.mark.parametrize("scenario", INFRA_SETS, ids=scenario_id)
def test_every_rabbitmq_conf_key_exists_in_4_3(scenario: tuple[Path, Path | None]) -> None:
    docs = render(*scenario)
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
                  and "rabbitmq.conf" in d["data"])
    keys = conf_keys(config["data"]["rabbitmq.conf"])
    assert set(keys) <= RABBITMQ_4_3_KEYS, f"unknown to RabbitMQ 4.3: {sorted(set(keys) - RABBITMQ_4_3_KEYS)}"
    assert not set(keys) & IGNORED_SINCE_4_1, "3.x peer discovery keys are ignored by 4.1+"


def test_the_key_list_belongs_to_the_pinned_release() -> None:
    """RABBITMQ_4_3_KEYS was checked against 4.3.x: a move to another minor must re-check it."""
    rabbitmq = REFERENCE.match(rendered_images(INFRA, None)["StatefulSet/rmq/rabbitmq"])
    assert rabbitmq and (rabbitmq["tag"] or "").startswith("4.3."), "re-check RABBITMQ_4_3_KEYS for the new release"


def test_max_message_size_is_128_kib() -> None:
    conf = one(render(INFRA), "ConfigMap", "rmq-config")["data"]["rabbitmq.conf"]
    size = int(conf_keys(conf)["max_message_size"])
    assert size == 131072 == 128 * 1024
    assert 0 < size <= MAX_MESSAGE_SIZE_LIMIT
    assert size > 64 * 1024, "bodies between 64 and 128 KiB must still reach the components"


def test_max_message_size_outside_the_brokers_range_is_rejected() -> None:
    from .conftest import helm

    result = helm("template", "x", str(INFRA), "--set", f"rabbitmq.maxMessageSize={MAX_MESSAGE_SIZE_LIMIT + 1}", check=False)
    assert result.returncode != 0 and "maxMessageSize" in result.stderr
