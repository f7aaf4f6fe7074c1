"""One consumer Job per recipient group: ``replicas`` pods sharing the group's queue."""

from __future__ import annotations

from typing import Any

from claimcheck_operator import naming
from claimcheck_operator.builders.common import Owner, job_manifest
from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import Recipient, RunSpec


def consumer_args(owner: Owner, spec: RunSpec, recipient: Recipient) -> list[str]:
    """``claimcheck consumer`` arguments; each pod exits 0 once all ``count`` objects are deleted."""
    return [
        "consumer",
        "--recipient", recipient.name,
        "--job", naming.job_id(owner.namespace, owner.name),
        "--expect", str(spec.producer.count),
    ]


def build_consumer_job(owner: Owner, spec: RunSpec, recipient: Recipient, config: OperatorConfig) -> dict[str, Any]:
    """parallelism = completions = replicas: every replica must exit 0 for the Job to complete.

    The pods get only this group's Secret: its broker user, the get-only S3 user, the pointer
    verification keys and this group's own ACK signing key.
    """
    return job_manifest(
        name=naming.consumer_job_name(owner.name, recipient.name),
        namespace=owner.namespace,
        labels=naming.labels(owner.name, "consumer", recipient.name),
        container_name="consumer",
        args=consumer_args(owner, spec, recipient),
        parallelism=recipient.replicas,
        spec=spec,
        config=config,
        secret_name=config.recipient_secret(recipient.name),
    )
