"""Reading the benchmark's results JSON: the repetitions that count, rates, ratios and CPU shares
that both the document (bench/report.py) and the plots (bench/plots.py) are made of."""

import math
import statistics
from typing import Any

from bench import profiling
from bench.stats import percentile

MiB = 1024 * 1024


KiB = 1024


COMPONENTS = ("producer", "consumers", "coordinator", "rabbitmq", "postgresql", "seaweedfs")


def ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [run for run in runs if not run.get("error")]


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def rates(runs: list[dict[str, Any]], key: str = "objects_per_s") -> list[float]:
    return [run[key] for run in runs if not run.get("error") and finite(run.get(key))]


def paired_ratios(entry: dict[str, Any], key: str = "objects_per_s") -> list[float]:
    """Pipeline over limit, repetition by repetition (they ran back to back)."""
    pairs = zip(entry.get("pipeline", []), entry.get("limit", []), strict=False)
    return [pipe[key] / limit[key] for pipe, limit in pairs
            if not pipe.get("error") and not limit.get("error") and finite(pipe.get(key)) and finite(limit.get(key))
            and limit[key]]


def latency_at(runs: list[dict[str, Any]], key: str, q: float) -> list[float]:
    return [percentile(run[key], q) for run in ok(runs) if run.get(key)]


def cpu_per_object(runs: list[dict[str, Any]], component: str) -> float:
    values = [run["cpu"].get(component, 0.0) / run["count"] for run in ok(runs) if run.get("cpu")]
    return statistics.median(values) if values else math.nan


def repetition_ceilings(entry: dict[str, Any], cores: int) -> list[tuple[float, float, float, float]]:
    """Per repetition: (B, L, limit cores busy, ceiling) as bench/report.py (_ceiling_lines) explains; B and L in CPU s/object."""
    startup = entry.get("limit_startup_cpu")
    out = []
    for pipe, limit in zip(entry.get("pipeline", []), entry.get("limit", []), strict=False):
        if (startup is None or pipe.get("error") or limit.get("error") or not pipe.get("cpu")
                or not finite(limit.get("objects_per_s"))):
            continue
        extra = (pipe["cpu"].get("rabbitmq", 0.0) + pipe["cpu"].get("postgresql", 0.0)) / pipe["count"]
        busy = max(0.0, sum(limit["cpu"].values()) - startup) / limit["count"] * limit["objects_per_s"]
        own = min(busy, cores) / limit["objects_per_s"]  # above `cores` is accounting noise, see _ceiling_lines
        out.append((extra, own, busy, cores / (own + extra) / limit["objects_per_s"]))
    return out


def ceiling_percent(entry: dict[str, Any], cores: int) -> list[float]:
    """The ceiling per repetition, in %."""
    return [100 * c[3] for c in repetition_ceilings(entry, cores)]


def busy_shares(counts: dict[str, int]) -> dict[str, float]:
    busy = {key: value for key, value in counts.items() if key != profiling.IDLE}
    total = sum(busy.values())
    return {key: value / total for key, value in busy.items()} if total else {}
