"""The producer Job: generates, uploads and publishes ``count`` pointers once.

Once means: ``backoffLimit: 0`` (a retried pod would publish the whole run again under the
same job id) and ``--no-verify`` (the operator judges completion from the coordinator's
ledger, so the pod does not wait for deletion with the CLI's own timeout). ``spec.producer.verify``
is accepted for compatibility and does not change the Job.
"""

from __future__ import annotations

from typing import Any

from claimcheck_operator import naming
from claimcheck_operator.builders.common import Owner, job_manifest
from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import RunSpec

# A failed producer pod is not retried: a new pod would start the run over and publish
# duplicates under the same job id. The run is then Failed, with the pod's reason.
PRODUCER_BACKOFF_LIMIT = 0


def producer_args(owner: Owner, spec: RunSpec) -> list[str]:
    """``claimcheck producer`` arguments as in docs/interfaces.md."""
    producer = spec.producer
    args = [
        "producer",
        "--job", naming.job_id(owner.namespace, owner.name),
        "--count", str(producer.count),
        "--size", producer.message_size,
        "--recipients", ",".join(spec.recipient_names),
        "--no-verify",
        "--parallelism", str(producer.parallelism),
    ]
    if producer.rate_per_second > 0:
        # Only passed when a limit is set: 0 (unlimited) is the producer's own default.
        args += ["--rate", str(producer.rate_per_second)]
    return args


def build_producer_job(owner: Owner, spec: RunSpec, config: OperatorConfig) -> dict[str, Any]:
    """One pod (completions = parallelism = 1); the producer parallelises internally.

    The pod gets only the producer's Secret: its broker user (write to the pointer exchange),
    the put-only S3 user and the pointer signing key.
    """
    return job_manifest(
        name=naming.producer_job_name(owner.name),
        namespace=owner.namespace,
        labels=naming.labels(owner.name, "producer"),
        container_name="producer",
        args=producer_args(owner, spec),
        parallelism=1,
        spec=spec,
        config=config,
        secret_name=config.producer_secret,
        backoff_limit=PRODUCER_BACKOFF_LIMIT,
    )
