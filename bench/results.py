"""Reading the benchmark's results JSON: the repetitions that count, rates, ratios and CPU shares
that both the document (bench/report.py) and the plots (bench/plots.py) are made of."""

import math
import statistics
from typing import Any, NamedTuple

from bench import profiling
from bench.passes import WHOLE
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


def sharded_ratios(coordinator: dict[str, Any]) -> list[float]:
    """ACKs/s of the sharded drain over the single-shard drain, repetition by repetition (they alternated)."""
    pairs = zip(coordinator.get("drains", []), coordinator.get("sharded", {}).get("drains", []), strict=False)
    return [many["acks_per_s"] / one["acks_per_s"] for one, many in pairs
            if not one.get("error") and not many.get("error") and finite(one.get("acks_per_s"))
            and finite(many.get("acks_per_s")) and one["acks_per_s"]]


def latency_at(runs: list[dict[str, Any]], key: str, q: float) -> list[float]:
    return [percentile(run[key], q) for run in ok(runs) if run.get(key)]


def cpu_per_object(runs: list[dict[str, Any]], component: str) -> float:
    values = [run["cpu"].get(component, 0.0) / run["count"] for run in ok(runs) if run.get("cpu")]
    return statistics.median(values) if values else math.nan


class Ceiling(NamedTuple):
    """One repetition's ceiling from CPU accounting, as bench/report.py (_ceiling_lines) explains."""

    extra: float  # B: RabbitMQ + PostgreSQL CPU s/object in the pipeline run
    own: float  # L: the limit run's CPU s/object (processes without start-up, plus the S3 server)
    busy: float  # cores the limit run kept busy over its timed span
    share: float  # cores / (L + B) as a share of the limit's objects/s
    limit_rate: float  # the limit's objects/s
    pipeline_rate: float  # the pipeline's objects/s in the same repetition


def repetition_ceilings(entry: dict[str, Any], cores: int) -> list[Ceiling]:
    """Per repetition that has both runs and the limit's start-up CPU, its :class:`Ceiling`."""
    startup = entry.get("limit_startup_cpu")
    out = []
    for pipe, limit in zip(entry.get("pipeline", []), entry.get("limit", []), strict=False):
        if (startup is None or pipe.get("error") or limit.get("error") or not pipe.get("cpu")
                or not finite(limit.get("objects_per_s"))):
            continue
        extra = (pipe["cpu"].get("rabbitmq", 0.0) + pipe["cpu"].get("postgresql", 0.0)) / pipe["count"]
        busy = max(0.0, sum(limit["cpu"].values()) - startup) / limit["count"] * limit["objects_per_s"]
        own = min(busy, cores) / limit["objects_per_s"]  # above `cores` is accounting noise, see _ceiling_lines
        out.append(Ceiling(extra, own, busy, cores / (own + extra) / limit["objects_per_s"], limit["objects_per_s"],
                           pipe.get("objects_per_s", math.nan)))
    return out


def ceiling_percent(entry: dict[str, Any], cores: int) -> list[float]:
    """The ceiling per repetition, in %."""
    return [100 * c.share for c in repetition_ceilings(entry, cores)]


# -- the product's per-byte work (bench/passes.py) -------------------------------------------------

# What the guarantee needs per object: the producer compresses and hashes the payload once; every
# recipient group decompresses it (bounded) and hashes it once.
REQUIRED_PRODUCER = ("gzip", "sha256_payload")
REQUIRED_PER_GROUP = ("gunzip", "sha256_payload")


def pass_cpu(passes: dict[str, Any], key: str) -> float:
    """Median CPU seconds of one pass over one payload; for a ``*_rest`` key, its whole measurement
    minus the passes timed alone in it. NaN when not measured."""
    if key in WHOLE:
        whole, parts = WHOLE[key]
        return max(0.0, pass_cpu(passes, whole) - sum(pass_cpu(passes, part) for part in parts))
    samples = passes.get(key, {}).get("cpu_seconds") or []
    return statistics.median(samples) if samples else math.nan


def pass_mib_per_s(passes: dict[str, Any], key: str, size: int) -> float:
    """Wall-clock payload MiB/s of one pass over a payload of ``size`` bytes (median over its samples)."""
    samples = passes.get(key, {}).get("wall_seconds") or []
    return size / MiB / statistics.median(samples) if samples and statistics.median(samples) else math.nan


def required_pass_cpu(passes: dict[str, Any], groups: int) -> float:
    """CPU seconds per object of the per-byte work the guarantee requires, with ``groups`` recipient groups."""
    return (sum(pass_cpu(passes, key) for key in REQUIRED_PRODUCER)
            + groups * sum(pass_cpu(passes, key) for key in REQUIRED_PER_GROUP))


def extended_ceiling(cores: int, limit_rate: float, own: float, extra: float, per_byte: float) -> float:
    """Objects/s the pipeline cannot exceed: ``cores`` spent on the limit's S3 work (``own``), the broker's
    and ledger's (``extra``) and the required per-byte passes (``per_byte``), all CPU s/object; and
    never more than the limit itself, which does strictly less."""
    return min(limit_rate, cores / (own + extra + per_byte))


class Extended(NamedTuple):
    """One repetition's extended ceiling (:func:`extended_ceiling`)."""

    rate: float  # objects/s
    reached: float  # the pipeline's objects/s as a share of it
    of_limit: float  # it as a share of the limit's objects/s


def repetition_extended(entry: dict[str, Any], cores: int) -> list[Extended]:
    """Per repetition, its :class:`Extended` ceiling; empty for a results file from before the per-byte measurement."""
    measured = (entry.get("per_byte") or {}).get("passes")
    per_byte = required_pass_cpu(measured, entry["groups"]) if measured else math.nan
    if not finite(per_byte):
        return []
    ceilings = [(c, extended_ceiling(cores, c.limit_rate, c.own, c.extra, per_byte)) for c in repetition_ceilings(entry, cores)]
    return [Extended(rate, c.pipeline_rate / rate, rate / c.limit_rate) for c, rate in ceilings]


def busy_shares(counts: dict[str, int]) -> dict[str, float]:
    busy = {key: value for key, value in counts.items() if key != profiling.IDLE}
    total = sum(busy.values())
    return {key: value / total for key, value in busy.items()} if total else {}
