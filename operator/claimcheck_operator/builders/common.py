"""Parts shared by the Job builders: the owner's identity and the Job skeleton."""

from __future__ import annotations

import dataclasses
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
    backoff_limit: int = BACKOFF_LIMIT,
) -> dict[str, Any]:
    """A batch/v1 Job running ``claimcheck <args>`` with the application env Secret.

    ``restartPolicy: Never`` makes a crashing pod count against ``backoffLimit`` so a broken
    run ends as a failed Job the operator can report, instead of restarting forever. Every pod
    serves Prometheus metrics on ``METRICS_PORT`` (``--http-port`` is appended to ``args``).
    """
    container: dict[str, Any] = {
        "name": container_name,
        "image": image_for(spec, config),
        "command": ["claimcheck"],
        "args": [*args, "--http-port", str(METRICS_PORT)],
        "envFrom": [{"secretRef": {"name": config.app_env_secret}}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
    }
    if spec.resources:
        container["resources"] = dict(spec.resources)
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
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }
