"""claimcheck-infra: each point of issue 4 on the rendered objects."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import INFRA, find, one, render


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(INFRA)


@pytest.fixture(scope="module")
def rmq(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "StatefulSet", "rmq")


def rmq_config(docs: list[dict[str, Any]]) -> str:
    return str(one(docs, "ConfigMap", "rmq-config")["data"]["rabbitmq.conf"])


def conf_value(conf: str, key: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(key)}\s*=\s*(\S+)\s*$", conf, re.M)
    return m[1] if m else None


def test_statefulset_rmq_has_three_replicas_in_parallel(rmq: dict[str, Any]) -> None:
    assert rmq["metadata"]["name"] == "rmq"
    assert rmq["spec"]["replicas"] == 3
    assert rmq["spec"]["podManagementPolicy"] == "Parallel"


def test_headless_service_publishes_not_ready_addresses(docs: list[dict[str, Any]], rmq: dict[str, Any]) -> None:
    svc = one(docs, "Service", rmq["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    pod_labels = rmq["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert {p["port"] for p in svc["spec"]["ports"]} >= {5672, 4369, 25672}


def test_pdb_allows_one_rabbitmq_pod_down(docs: list[dict[str, Any]], rmq: dict[str, Any]) -> None:
    pdb = one(docs, "PodDisruptionBudget", "rmq")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == rmq["spec"]["selector"]["matchLabels"]


def test_prestop_waits_for_quorum_then_drains(rmq: dict[str, Any]) -> None:
    container = next(c for c in rmq["spec"]["template"]["spec"]["containers"] if c["name"] == "rabbitmq")
    command = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "rabbitmq-upgrade await_online_quorum_plus_one" in command
    assert "rabbitmq-upgrade drain" in command
    assert command.index("await_online_quorum_plus_one") < command.index("drain")


def test_rabbitmq_probes(rmq: dict[str, Any]) -> None:
    container = next(c for c in rmq["spec"]["template"]["spec"]["containers"] if c["name"] == "rabbitmq")
    assert container["readinessProbe"]["tcpSocket"]["port"] == "amqp"
    assert "ping" in container["livenessProbe"]["exec"]["command"]


def test_persistent_volume_claim_templates(rmq: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    (claim,) = rmq["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    mounts = {m["name"]: m["mountPath"] for m in rmq["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/rabbitmq/mnesia"
    pg = one(docs, "StatefulSet", "claimcheck-infra-postgresql")
    assert pg["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pg_mounts = {m["name"]: m["mountPath"] for m in pg["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert pg_mounts["data"] == "/var/lib/postgresql/data"
    minio = one(docs, "StatefulSet", "claimcheck-infra-minio")
    assert minio["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_rabbitmq_config_partition_handling_queue_type_peer_discovery(docs: list[dict[str, Any]]) -> None:
    conf = rmq_config(docs)
    assert conf_value(conf, "cluster_partition_handling") == "pause_minority"
    assert conf_value(conf, "default_queue_type") == "quorum"
    assert conf_value(conf, "cluster_formation.peer_discovery_backend") == "rabbit_peer_discovery_k8s"
    # 4.1+: the seed is the pod with ordinal 0; the 3.x API-based keys are gone.
    assert conf_value(conf, "cluster_formation.k8s.ordinal_start") == "0"
    assert conf_value(conf, "cluster_formation.k8s.service_name") is None
    plugins = one(docs, "ConfigMap", "rmq-config")["data"]["enabled_plugins"]
    assert "rabbitmq_peer_discovery_k8s" in plugins


def test_memory_override_follows_the_limit(docs: list[dict[str, Any]]) -> None:
    # 1Gi limit * 0.8
    assert conf_value(rmq_config(docs), "total_memory_available_override_value") == str(int(1073741824 * 0.8))


def test_peer_discovery_needs_no_kubernetes_api(docs: list[dict[str, Any]], rmq: dict[str, Any]) -> None:
    """RabbitMQ 4.1+ derives the seed node from its own name: no Role, no API token."""
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    spec = rmq["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount", spec["serviceAccountName"])["automountServiceAccountToken"] is False


def test_node_names_match_peer_discovery(rmq: dict[str, Any]) -> None:
    env = {e["name"]: e.get("value") for e in rmq["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RABBITMQ_USE_LONGNAME"] == "true"
    assert env["RABBITMQ_NODENAME"] == "rabbit@$(MY_POD_NAME).rmq-headless.$(MY_POD_NAMESPACE).svc.cluster.local"


def test_erlang_cookie_and_default_user_come_from_secrets(docs: list[dict[str, Any]], rmq: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in rmq["spec"]["template"]["spec"]["volumes"]}
    assert volumes["erlang-cookie-secret"]["secret"]["secretName"] == "rmq-erlang-cookie"
    sources = volumes["config"]["projected"]["sources"]
    assert any(s.get("secret", {}).get("name") == "rmq-default-user" for s in sources)
    assert one(docs, "Secret", "rmq-erlang-cookie")["data"][".erlang.cookie"]


def test_haproxy_checks_amqp_and_lists_every_node(docs: list[dict[str, Any]]) -> None:
    cfg = one(docs, "ConfigMap", "claimcheck-infra-haproxy")["data"]["haproxy.cfg"]
    backend = re.split(r"^\s*backend rabbitmq_amqp$", cfg, flags=re.M)[1].split("\n\n", 1)[0]
    assert "option tcp-check" in backend
    # AMQP 0-9-1 protocol header, then a Connection.Start method frame (class 10, method 10).
    assert "tcp-check send-binary 414d515000000901" in backend
    found = re.search(r"tcp-check expect rbinary (\S+)", backend)
    assert found, backend
    expect = found[1]
    connection_start = "010000000001C7000A000A0009"  # frame type 1, channel 0, size, class 10, method 10
    assert re.match(expect, connection_start)
    assert not re.match(expect, "0800000000000000CE")  # a heartbeat frame is not a Connection.Start
    for i in range(3):
        assert f"server rmq-{i} rmq-{i}.rmq-headless.claimcheck.svc.cluster.local:5672" in backend
    assert "resolvers kubedns" in cfg and "init-addr" in cfg


def test_haproxy_is_the_single_amqp_and_management_endpoint(docs: list[dict[str, Any]]) -> None:
    svc = one(docs, "Service", "claimcheck-infra-haproxy")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"amqp": 5672, "management": 15672}
    deploy = one(docs, "Deployment", "claimcheck-infra-haproxy")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    cfg = one(docs, "ConfigMap", "claimcheck-infra-haproxy")["data"]["haproxy.cfg"]
    assert "nbsrv(rabbitmq_amqp) lt 1" in cfg


def test_minio_bucket_job_is_an_idempotent_hook(docs: list[dict[str, Any]]) -> None:
    job = one(docs, "Job", "claimcheck-infra-minio-bucket")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "mc --config-dir /tmp/mc mb --ignore-existing" in script
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BUCKET"]["value"] == "claimcheck"
    for role in ("PRODUCER", "CONSUMER", "COORDINATOR"):
        assert env[f"{role}_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "claimcheck-infra-minio"


def test_connection_secret_has_the_interface_variables(docs: list[dict[str, Any]]) -> None:
    secret = one(docs, "Secret", "claimcheck-infra-connection")
    assert set(secret["data"]) == {
        "CLAIMCHECK_AMQP_ENDPOINT", "CLAIMCHECK_AMQP_ADMIN_URL", "CLAIMCHECK_MANAGEMENT_URL",
        "CLAIMCHECK_S3_ENDPOINT_URL", "CLAIMCHECK_S3_REGION", "CLAIMCHECK_S3_BUCKET",
        "CLAIMCHECK_DATABASE_URL", "CLAIMCHECK_DATABASE_READER_URL",
    } | {f"CLAIMCHECK_S3_{role}_{key}" for role in ("PRODUCER", "CONSUMER", "COORDINATOR")
         for key in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")}


def test_five_nodes_scenario_scales_everything_together() -> None:
    docs = render(INFRA, INFRA / "ci" / "03-five-nodes-values.yaml")
    sts = one(docs, "StatefulSet", "broker")
    assert sts["spec"]["replicas"] == 5
    cfg = one(docs, "ConfigMap", "cc-haproxy")["data"]["haproxy.cfg"]
    assert cfg.count("server broker-") == 10  # AMQP and management backends
    conf = one(docs, "ConfigMap", "broker-config")["data"]["rabbitmq.conf"]
    assert conf_value(conf, "cluster_formation.target_cluster_size_hint") == "5"
    assert conf_value(conf, "consumer_timeout") == "3600000"
    affinity = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in affinity


def test_workloads_have_no_service_account_token_unless_needed(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            assert d["spec"]["template"]["spec"].get("automountServiceAccountToken") is False, d["metadata"]["name"]
    assert find(docs, "ServiceAccount", "rmq")
