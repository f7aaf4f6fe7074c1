"""Which Kubernetes Events a status change deserves: one per phase change and per condition flip."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from claimcheck_operator.conditions.base import find

# Condition states a person should look at: (type, status); plus a Job that went missing.
_WARNINGS = {("Failed", "True"), ("SpecApplied", "False"), ("AllDeleted", "Unknown")}


_QUIET_INITIAL = {("Failed", "False"), ("SpecApplied", "True")}


def _is_warning(condition: Mapping[str, Any]) -> bool:
    return (condition["type"], condition["status"]) in _WARNINGS or condition["reason"] == "JobMissing"


@dataclasses.dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def transitions(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[Event]:
    """Events for what changed between two statuses; nothing for unchanged ones."""
    events: list[Event] = []
    for condition in current.get("conditions") or []:
        before = find(previous.get("conditions"), condition["type"])
        if before is not None and before["status"] == condition["status"]:
            continue
        if before is None and (condition["type"], condition["status"]) in _QUIET_INITIAL:
            continue  # the expected initial state is not news
        kind: Literal["Normal", "Warning"] = "Warning" if _is_warning(condition) else "Normal"
        events.append(Event(kind, condition["reason"], f"{condition['type']} is {condition['status']}: {condition['message']}"))
    phase, before_phase = current.get("phase"), previous.get("phase")
    if phase and phase != before_phase:
        failed = find(current.get("conditions"), "Failed")
        detail = f": {failed['message']}" if phase == "Failed" and failed else ""
        events.append(Event("Warning" if phase == "Failed" else "Normal", f"Phase{phase}",
                            f"phase {before_phase or 'none'} -> {phase}{detail}"))
    return events
