"""One pure builder per child object: ClaimCheckJob (as dict + typed spec) -> Job manifest (dict).

``build_all`` returns the children in creation order: consumers first, so every
recipient group is listening before the producer publishes.
"""

from __future__ import annotations

from typing import Any

from claimcheck_operator.builders.common import Owner
from claimcheck_operator.builders.consumer_job import build_consumer_job
from claimcheck_operator.builders.producer_job import build_producer_job
from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import RunSpec

__all__ = ["Owner", "build_all", "build_consumer_job", "build_producer_job"]


def build_all(owner: Owner, spec: RunSpec, config: OperatorConfig) -> list[dict[str, Any]]:
    """Every Job of one run, in creation order (consumers, then the producer)."""
    jobs = [build_consumer_job(owner, spec, recipient, config) for recipient in spec.recipients]
    jobs.append(build_producer_job(owner, spec, config))
    return jobs
