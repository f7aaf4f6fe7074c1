"""Whether the operator may run a ClaimCheckJob at all: configured recipient groups, allowed image.

Pure checks, made before any Job exists. A refused run is ``Failed`` with one of the reasons
below and gets no Jobs: a group without a configured Secret would have no broker user and no
ACK key, and an arbitrary image would run someone else's code with the application's secrets.
"""

from __future__ import annotations

import dataclasses

from claimcheck_operator.config import OperatorConfig
from claimcheck_operator.spec import RunSpec

RECIPIENT_NOT_CONFIGURED = "RecipientNotConfigured"
IMAGE_NOT_ALLOWED = "ImageNotAllowed"
REASONS = (RECIPIENT_NOT_CONFIGURED, IMAGE_NOT_ALLOWED)


@dataclasses.dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def image_allowed(image: str, config: OperatorConfig) -> bool:
    """The operator's own image, an exact allowlist entry, or a match of an entry ending in ``*``."""
    if not image or image == config.app_image:
        return True
    for entry in config.image_allowlist:
        if entry.endswith("*") and len(entry) > 1:
            if image.startswith(entry[:-1]):
                return True
        elif image == entry:
            return True
    return False


def refusal(run: RunSpec, config: OperatorConfig) -> Refusal | None:
    """Why this run must not start, or None."""
    unknown = [name for name in run.recipient_names if name not in config.recipients]
    if unknown:
        configured = ", ".join(config.recipients) or "none"
        groups = ", ".join(unknown)
        return Refusal(
            RECIPIENT_NOT_CONFIGURED,
            f"recipient group(s) {groups} not configured (configured: {configured}); "
            "add them to the chart's `recipients` value and upgrade, so they get a Secret, a broker user and an ACK key",
        )
    if not image_allowed(run.image, config):
        allowed = ", ".join([config.app_image, *config.image_allowlist])
        return Refusal(
            IMAGE_NOT_ALLOWED,
            f"spec.image {run.image} is not allowed (allowed: {allowed}); "
            "add it to the chart's `operator.imageAllowlist` value or leave spec.image empty",
        )
    return None
