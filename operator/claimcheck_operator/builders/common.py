"""Parts shared by the Job builders: the owner's identity and the Job skeleton."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import RunSpec

# A failing consumer pod is retried a few times (its work is idempotent: a verified object is
# ACKed again at most), then the Job is Failed and so is the run.
BACKOFF_LIMIT = 3
# Port of the /metrics endpoint every Job pod serves (``--http-port``); the pods carry the
# prometheus.io/* annotations the chart's Prometheus discovers them by.
METRICS_PORT = 9102


@dataclasses.dataclass(frozen=True)
class Owner:
    """The ClaimCheckJob a child belongs to."""

    namespace: str
    name: str


def image_for(spec: RunSpec, config: OperatorConfig) -> str:
    return spec.image or config.app_image


def metrics_annotations() -> dict[str, str]:
    """The annotations the chart's Prometheus keeps a pod by (charts/claimcheck/templates/monitoring.yaml)."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT), "prometheus.io/path": "/metrics"}


def pod_security_context(config: OperatorConfig) -> dict[str, Any]:
    """The restricted Pod Security profile at pod level: a numeric non-root user, RuntimeDefault seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": config.job_run_as_user,
        "runAsGroup": config.job_run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The restricted profile per container, plus a read-only root filesystem (/tmp is an emptyDir)."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def job_manifest(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    container_name: str,
    args: list[str],
    parallelism: int,
    spec: RunSpec,
    config: OperatorConfig,
    secret_name: str,
    backoff_limit: int = BACKOFF_LIMIT,
) -> dict[str, Any]:
    """A batch/v1 Job running ``claimcheck <args>`` with one role's Secret (``secret_name``) and nothing else.

    ``restartPolicy: Never`` makes a crashing pod count against ``backoffLimit`` so a broken
    run ends as a failed Job the operator can report, instead of restarting forever. Every pod
    serves Prometheus metrics on ``METRICS_PORT`` (``--http-port`` is appended to ``args``).
    The pod runs under the restricted Pod Security profile with a read-only root filesystem
    and an emptyDir on /tmp, has no service account token (it never talks to the Kubernetes
    API), and pulls with the chart's imagePullSecrets.
    """
    container: dict[str, Any] = {
        "name": container_name,
        "image": image_for(spec, config),
        "command": ["claimcheck"],
        "args": [*args, "--http-port", str(METRICS_PORT)],
        "envFrom": [{"secretRef": {"name": secret_name}}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": dict(spec.resources) if spec.resources else json.loads(json.dumps(dict(config.job_resources))),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(config),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in config.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "parallelism": parallelism,
            "completions": parallelism,
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": dict(labels), "annotations": metrics_annotations()},
                "spec": pod_spec,
            },
        },
    }
