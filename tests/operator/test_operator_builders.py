"""Pure builders, names and spec parsing: Job manifests from a ClaimCheckJob."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import kubernetes_validate
import pytest

from claimcheck_operator import naming
from claimcheck_operator.builders import Owner, build_all, build_consumer_job, build_producer_job
from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import parse_spec, spec_hash

CONFIG = OperatorConfig(app_image="img:1", secret_prefix="rel", recipients=("billing", "audit"),
                        image_pull_secrets=("regcred",))
OWNER = Owner(namespace="ns", name="demo")
SPEC: dict[str, Any] = {
    "producer": {"count": 100, "messageSize": "1MB", "verify": False, "parallelism": 3, "ratePerSecond": 20},
    "recipients": [{"name": "billing", "replicas": 2}, {"name": "audit"}],
}


def container(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return result


def test_producer_job() -> None:
    job = build_producer_job(OWNER, parse_spec(SPEC), CONFIG)
    assert job["metadata"]["name"] == "demo-producer"
    assert job["metadata"]["namespace"] == "ns"
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (1, 1)
    assert container(job)["command"] == ["claimcheck"]
    assert container(job)["args"] == [
        "producer", "--job", "ns.demo", "--count", "100", "--size", "1MB", "--recipients", "billing,audit",
        "--no-verify", "--parallelism", "3", "--rate", "20", "--http-port", "9102"]
    assert container(job)["image"] == "img:1"
    assert container(job)["envFrom"] == [{"secretRef": {"name": "rel-producer"}}]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert container(job)["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                           "limits": {"cpu": "1", "memory": "512Mi"}}


def test_consumer_job_parallelism_is_replicas() -> None:
    run = parse_spec(SPEC)
    job = build_consumer_job(OWNER, run, run.recipients[0], CONFIG)
    assert job["metadata"]["name"] == "demo-consumer-billing"
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (2, 2)
    assert container(job)["args"] == ["consumer", "--recipient", "billing", "--job", "ns.demo", "--expect", "100",
                                      "--http-port", "9102"]
    assert container(job)["envFrom"] == [{"secretRef": {"name": "rel-recipient-billing"}}]
    labels = job["metadata"]["labels"]
    assert labels == job["spec"]["template"]["metadata"]["labels"]
    assert labels["claimcheck.io/job"] == "demo"
    assert labels["claimcheck.io/recipient"] == "billing"
    assert labels["app.kubernetes.io/component"] == "consumer"
    assert labels["app.kubernetes.io/managed-by"] == "claimcheck-operator"
    assert labels["app.kubernetes.io/instance"] == "demo"


def test_spec_image_and_resources_override() -> None:
    spec = {**SPEC, "image": "mine:2", "resources": {"limits": {"memory": "256Mi"}}}
    for job in build_all(OWNER, parse_spec(spec), CONFIG):
        assert container(job)["image"] == "mine:2"
        assert container(job)["resources"] == {"limits": {"memory": "256Mi"}}


def test_consumers_are_created_before_the_producer() -> None:
    names = [j["metadata"]["name"] for j in build_all(OWNER, parse_spec(SPEC), CONFIG)]
    assert names == ["demo-consumer-billing", "demo-consumer-audit", "demo-producer"]


def test_no_rate_flag_when_unlimited() -> None:
    spec = {**SPEC, "producer": {**SPEC["producer"], "ratePerSecond": 0}}
    args = container(build_producer_job(OWNER, parse_spec(spec), CONFIG))["args"]
    assert "--rate" not in args


@pytest.mark.parametrize("verify", [True, False])
def test_producer_publishes_once_and_never_waits_with_the_cli_timeout(verify: bool) -> None:
    """A retried producer pod would publish the whole run again under the same job id, and
    --verify would give up after the CLI's 300 s: no retries, no --verify, whatever the spec says."""
    spec = {**SPEC, "producer": {**SPEC["producer"], "verify": verify}}
    job = build_producer_job(OWNER, parse_spec(spec), CONFIG)
    assert job["spec"]["backoffLimit"] == 0
    assert "--no-verify" in container(job)["args"] and "--verify" not in container(job)["args"]
    assert "--timeout" not in container(job)["args"]


def test_consumers_may_retry() -> None:
    run = parse_spec(SPEC)
    assert build_consumer_job(OWNER, run, run.recipients[0], CONFIG)["spec"]["backoffLimit"] == 3


def test_every_job_pod_serves_metrics_prometheus_finds() -> None:
    """The chart's Prometheus keeps pods annotated prometheus.io/scrape=true and scrapes
    prometheus.io/port; the CLI serves /metrics on --http-port."""
    for job in build_all(OWNER, parse_spec(SPEC), CONFIG):
        annotations = job["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "9102",
                               "prometheus.io/path": "/metrics"}
        args = container(job)["args"]
        assert args[args.index("--http-port") + 1] == annotations["prometheus.io/port"]
        assert container(job)["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]


def test_metrics_annotations_match_the_charts_scrape_config() -> None:
    monitoring = (Path(__file__).resolve().parents[2] / "charts" / "claimcheck" / "templates" / "monitoring.yaml").read_text()
    assert "__meta_kubernetes_pod_annotation_prometheus_io_scrape" in monitoring
    assert "__meta_kubernetes_pod_annotation_prometheus_io_port" in monitoring
    assert "__meta_kubernetes_pod_annotation_prometheus_io_path" in monitoring


def test_built_jobs_are_valid_batch_v1_jobs_after_adoption() -> None:
    owner: dict[str, Any] = {"apiVersion": "claimcheck.io/v1alpha1", "kind": "ClaimCheckJob",
             "metadata": {"name": "demo", "namespace": "ns", "uid": "0f0e", "labels": {"team": "x"}}}
    for job in build_all(OWNER, parse_spec({**SPEC, "resources": {"requests": {"cpu": "100m"}}}), CONFIG):
        kopf.adopt(job, owner=kopf.Body(owner), nested="spec.template")  # type: ignore[arg-type]
        kubernetes_validate.validate(job, "1.32", strict=True)
        assert job["metadata"]["ownerReferences"][0]["uid"] == "0f0e"
        assert job["spec"]["template"]["metadata"]["labels"]["team"] == "x"


def test_long_names_are_shortened_stably_and_uniquely() -> None:
    name = "a" * 60
    first, second = naming.consumer_job_name(name, "billing"), naming.consumer_job_name(name, "billinh")
    assert len(first) <= 63 and len(second) <= 63
    assert first != second
    assert first == naming.consumer_job_name(name, "billing")
    assert naming.labels("b" * 100, "producer")["claimcheck.io/job"] == naming.shorten("b" * 100)
    assert naming.shorten("short") == "short"


def test_defaults_are_applied() -> None:
    run = parse_spec({"producer": {"count": 1}, "recipients": [{"name": "a"}]})
    assert (run.producer.message_size, run.producer.verify, run.producer.parallelism, run.producer.rate_per_second) \
        == ("1MB", True, 1, 0)
    assert run.recipients[0].replicas == 1 and run.image == "" and dict(run.resources) == {}


@pytest.mark.parametrize("spec, field", [
    ({"producer": {"count": 0}, "recipients": [{"name": "a"}]}, "producer.count"),
    ({"producer": {}, "recipients": [{"name": "a"}]}, "producer.count"),
    ({"producer": {"count": 1, "messageSize": "big"}, "recipients": [{"name": "a"}]}, "messageSize"),
    ({"producer": {"count": 1}, "recipients": []}, "recipients"),
    ({"producer": {"count": 1}, "recipients": [{"name": "a"}, {"name": "a"}]}, "listed twice"),
    ({"producer": {"count": 1}, "recipients": [{"name": "A"}]}, "DNS label"),
    ({"producer": {"count": 1}, "recipients": [{"name": "a", "replicas": 0}]}, "replicas"),
    ({"producer": {"count": True}, "recipients": [{"name": "a"}]}, "producer.count"),
])
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_spec(spec)


def test_spec_hash_is_order_independent_and_change_sensitive() -> None:
    reordered = {"recipients": SPEC["recipients"], "producer": dict(reversed(list(SPEC["producer"].items())))}
    assert spec_hash(SPEC) == spec_hash(reordered)
    assert spec_hash(SPEC) != spec_hash({**SPEC, "image": "x"})


def test_every_job_pod_runs_under_the_restricted_profile_with_one_secret() -> None:
    """The restricted Pod Security Standard, a read-only root with /tmp as emptyDir, no service
    account token, the chart's pull secrets, resources, and exactly one Secret: its role's."""
    for job in build_all(OWNER, parse_spec(SPEC), CONFIG):
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                          "seccompProfile": {"type": "RuntimeDefault"}}
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
        (only,) = pod["containers"]
        assert only["securityContext"] == {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                           "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                                           "seccompProfile": {"type": "RuntimeDefault"}}
        assert only["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert {"cpu", "memory"} <= set(only["resources"]["requests"]) and {"cpu", "memory"} <= set(only["resources"]["limits"])
        secrets = [ref["secretRef"]["name"] for ref in only["envFrom"]]
        assert len(secrets) == 1 and "env" not in only and "initContainers" not in pod
        labels = job["metadata"]["labels"]
        role = labels["app.kubernetes.io/component"]
        expected = "rel-producer" if role == "producer" else f"rel-recipient-{labels['claimcheck.io/recipient']}"
        assert secrets == [expected]


def test_no_pull_secrets_when_none_configured() -> None:
    config = OperatorConfig(app_image="img:1", recipients=("billing", "audit"))
    assert all("imagePullSecrets" not in j["spec"]["template"]["spec"] for j in build_all(OWNER, parse_spec(SPEC), config))


def test_admission_refuses_unconfigured_groups_and_foreign_images() -> None:
    from claimcheck_operator.admission import IMAGE_NOT_ALLOWED, RECIPIENT_NOT_CONFIGURED, image_allowed, refusal

    assert refusal(parse_spec(SPEC), CONFIG) is None
    unknown = refusal(parse_spec({**SPEC, "recipients": [{"name": "billing"}, {"name": "payroll"}]}), CONFIG)
    assert unknown and unknown.reason == RECIPIENT_NOT_CONFIGURED and "payroll" in unknown.message
    nothing_configured = refusal(parse_spec(SPEC), OperatorConfig(app_image="img:1"))
    assert nothing_configured and "configured: none" in nothing_configured.message
    foreign = refusal(parse_spec({**SPEC, "image": "evil:1"}), CONFIG)
    assert foreign and foreign.reason == IMAGE_NOT_ALLOWED and "evil:1" in foreign.message
    # Empty allowlist: only the operator's own image (or none, which means it).
    assert image_allowed("", CONFIG) and image_allowed("img:1", CONFIG) and not image_allowed("img:2", CONFIG)
    listed = OperatorConfig(app_image="img:1", image_allowlist=("reg.example/cc:*", "other:1.0"))
    assert image_allowed("reg.example/cc:0.2.0", listed) and image_allowed("other:1.0", listed)
    assert not image_allowed("other:1.01", listed) and not image_allowed("reg.example/cc-evil:1", listed)
    assert not image_allowed("reg.example/cc", listed)
    assert not image_allowed("x", OperatorConfig(app_image="img:1", image_allowlist=("*",)))  # a bare * allows nothing


def test_config_from_env() -> None:
    config = OperatorConfig.from_env({
        "CLAIMCHECK_APP_IMAGE": "i:1", "CLAIMCHECK_OPERATOR_SECRET_PREFIX": "s",
        "CLAIMCHECK_OPERATOR_RECIPIENTS": "billing, audit", "CLAIMCHECK_OPERATOR_IMAGE_ALLOWLIST": "a:1,b:*",
        "CLAIMCHECK_OPERATOR_IMAGE_PULL_SECRETS": "r1,r2", "CLAIMCHECK_CONTROL_TOKEN": "tok",
        "CLAIMCHECK_OPERATOR_JOB_RESOURCES": '{"limits": {"cpu": "2", "memory": "1Gi"}}',
        "CLAIMCHECK_OPERATOR_JOB_RUN_AS_USER": "2000", "CLAIMCHECK_OPERATOR_JOB_RUN_AS_GROUP": "3000",
        "CLAIMCHECK_COORDINATOR_URL": "http://c:38080/", "CLAIMCHECK_STUCK_AFTER_SECONDS": "30",
    })
    assert config == OperatorConfig(app_image="i:1", secret_prefix="s", recipients=("billing", "audit"),
                                    image_allowlist=("a:1", "b:*"), image_pull_secrets=("r1", "r2"),
                                    job_resources={"limits": {"cpu": "2", "memory": "1Gi"}},
                                    job_run_as_user=2000, job_run_as_group=3000, control_token="tok",
                                    coordinator_url="http://c:38080", stuck_after_seconds=30.0)
    assert (config.producer_secret, config.recipient_secret("audit")) == ("s-producer", "s-recipient-audit")
    defaults = OperatorConfig.from_env({})
    assert (defaults.recipients, defaults.control_token, defaults.producer_secret) == ((), "", "claimcheck-producer")
    for key, value, message in [("CLAIMCHECK_OPERATOR_RECIPIENTS", "Billing", "DNS label"),
                                ("CLAIMCHECK_OPERATOR_JOB_RESOURCES", "{", "not JSON"),
                                ("CLAIMCHECK_OPERATOR_JOB_RESOURCES", '{"cpu": 1}', "requests and/or limits"),
                                ("CLAIMCHECK_OPERATOR_JOB_RUN_AS_USER", "0", "non-zero")]:
        with pytest.raises(ValueError, match=message):
            OperatorConfig.from_env({key: value})
    assert OperatorConfig.from_env({}).stuck_after_seconds == 600.0
    with pytest.raises(ValueError, match="CLAIMCHECK_STUCK_AFTER_SECONDS"):
        OperatorConfig.from_env({"CLAIMCHECK_STUCK_AFTER_SECONDS": "soon"})
    with pytest.raises(ValueError, match="greater than 0"):
        OperatorConfig.from_env({"CLAIMCHECK_STUCK_AFTER_SECONDS": "0"})
