"""When a client recovered from a fault, from the times of its confirmed events."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """One injected fault: when it started and when the component was back (if restored)."""

    label: str
    at: float
    restored_at: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def recovery_of(times: list[float], fault: float, restored: float | None) -> dict[str, Any]:
    """How one client's stream of confirmed events (``times``) went through a fault.

    A stall is a gap between two consecutive events that starts between 2 s before the fault
    and 1 s after its repair (or after the fault, if nothing was repaired) and lasts at least
    0.5 s and 4x the client's median gap in the 10 s before the fault. With a stall, the client
    recovered at its end: ``resumed_s`` seconds after the fault. Without one the client kept
    going, and ``resumed_s`` is simply the time to its next confirmed event.
    """
    times = sorted(times)
    after = [t for t in times if t > fault]
    if not after:
        return {"resumed_s": None, "stall_s": None, "note": "no confirmed event after the fault"}
    before = [t for t in times if fault - 10 <= t <= fault]
    gaps_before = sorted(b - a for a, b in zip(before, before[1:], strict=False))
    median = gaps_before[len(gaps_before) // 2] if gaps_before else 0.0
    threshold = max(0.5, 4 * median)
    latest_start = (restored if restored is not None else fault) + 1.0
    best: tuple[float, float] | None = None
    for a, b in zip(times, times[1:], strict=False):
        if b <= fault or not fault - 2.0 <= a <= latest_start:
            continue
        if best is None or b - a > best[1] - best[0]:
            best = (a, b)
    entry: dict[str, float | None]
    if best is not None and best[1] - best[0] >= threshold:
        resumed = best[1]
        entry = {"resumed_s": round(resumed - fault, 3), "stall_s": round(best[1] - best[0], 3)}
    else:
        resumed = after[0]
        entry = {"resumed_s": round(resumed - fault, 3), "stall_s": None}
    if restored is not None:
        entry["after_repair_s"] = round(resumed - restored, 3) if resumed > restored else None
    entry["median_gap_before_s"] = round(median, 3)
    return entry
