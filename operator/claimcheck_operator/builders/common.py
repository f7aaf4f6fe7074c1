"""Parts shared by the Job builders: the owner's identity and the Job skeleton."""

from __future__ import annotations

import dataclasses
from typing import Any

from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import RunSpec

# A failing pod is retried a few times, then the Job is Failed and so is the run.
BACKOFF_LIMIT = 3


@dataclasses.dataclass(frozen=True)
class Owner:
    """The ClaimCheckJob a child belongs to."""

    namespace: str
    name: str


def image_for(spec: RunSpec, config: OperatorConfig) -> str:
    return spec.image or config.app_image


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
) -> dict[str, Any]:
    """A batch/v1 Job running ``claimcheck <args>`` with the application env Secret.

    ``restartPolicy: Never`` makes a crashing pod count against ``backoffLimit`` so a broken
    run ends as a failed Job the operator can report, instead of restarting forever.
    """
    container: dict[str, Any] = {
        "name": container_name,
        "image": image_for(spec, config),
        "command": ["claimcheck"],
        "args": args,
        "envFrom": [{"secretRef": {"name": config.app_env_secret}}],
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
            "backoffLimit": BACKOFF_LIMIT,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }
