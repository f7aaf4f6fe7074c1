"""Names and labels that tie a Job to its ClaimCheckJob.

Job names become the ``job-name`` label of their Pods, so they must fit in 63 characters;
a long name is cut and suffixed with a hash of the full name, so it stays unique and stable.
"""

from __future__ import annotations

import hashlib

MAX_NAME = 63
JOB_LABEL = "claimcheck.io/job"
RECIPIENT_LABEL = "claimcheck.io/recipient"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "claimcheck-operator"


def shorten(text: str, limit: int = MAX_NAME) -> str:
    """``text`` if it fits, else a prefix plus a 10-hex-digit hash of the whole text."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[: limit - 11].rstrip('-.')}-{digest}"


def job_id(namespace: str, name: str) -> str:
    """The job id the applications and the coordinator know this run by (``<ns>.<name>``)."""
    return f"{namespace}.{name}"


def producer_job_name(name: str) -> str:
    return shorten(f"{name}-producer")


def consumer_job_name(name: str, recipient: str) -> str:
    return shorten(f"{name}-consumer-{recipient}")


def labels(name: str, component: str, recipient: str | None = None) -> dict[str, str]:
    """Labels of a child Job and its Pods; every value fits a label value (63 chars)."""
    result = {
        "app.kubernetes.io/name": "claimcheck",
        "app.kubernetes.io/instance": shorten(name),
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": "claimcheck",
        MANAGED_BY_LABEL: MANAGED_BY,
        JOB_LABEL: shorten(name),
    }
    if recipient is not None:
        result[RECIPIENT_LABEL] = recipient
    return result


def ownership_labels(name: str) -> dict[str, str]:
    """The labels every Job of ClaimCheckJob ``name`` carries; with the ownerReference they mark it as ours."""
    return {JOB_LABEL: shorten(name), MANAGED_BY_LABEL: MANAGED_BY}
