"""The Kubernetes condition shape and the one rule all conditions share.

``lastTransitionTime`` changes only when ``status`` flips; a new reason or message with the
same status keeps the old time (as metav1.Condition and the cluster-operator do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypedDict

Status = Literal["True", "False", "Unknown"]


class Condition(TypedDict):
    type: str
    status: Status
    reason: str
    message: str
    lastTransitionTime: str


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Condition | None:
    """The condition of ``type_`` in a status' list, or None."""
    for condition in conditions or []:
        if condition.get("type") == type_:
            return Condition(
                type=type_,
                status=condition.get("status", "Unknown"),
                reason=str(condition.get("reason", "")),
                message=str(condition.get("message", "")),
                lastTransitionTime=str(condition.get("lastTransitionTime", "")),
            )
    return None


def make(type_: str, status: Status, reason: str, message: str, previous: Condition | None, now: str) -> Condition:
    """A condition whose ``lastTransitionTime`` is kept from ``previous`` unless the status flipped."""
    if previous is not None and previous["status"] == status and previous["lastTransitionTime"]:
        since = previous["lastTransitionTime"]
    else:
        since = now
    return Condition(type=type_, status=status, reason=reason, message=message, lastTransitionTime=since)
