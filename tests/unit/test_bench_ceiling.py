"""The benchmark's ceiling arithmetic (bench/results.py) on hand-made results: the extended ceiling adds
the per-byte work the guarantee needs to the limit's and the broker's CPU, never exceeds the limit, and
a results file from before the per-byte measurement still renders without it."""

import math
from typing import Any

import pytest

from bench.results import extended_ceiling, pass_cpu, repetition_ceilings, repetition_extended, required_pass_cpu

MiB = 1024 * 1024


def timed(*cpu_seconds: float) -> dict[str, Any]:
    return {"cpu_seconds": list(cpu_seconds), "wall_seconds": [2 * s for s in cpu_seconds]}


PASSES = {"gzip": timed(0.04, 0.05, 0.09), "sha256_payload": timed(0.01), "gunzip": timed(0.03),
          "sha256_object": timed(0.008), "spool": timed(0.007), "producer_whole": timed(0.075), "consumer_whole": timed(0.02)}


def entry(per_byte: bool = True) -> dict[str, Any]:
    """A 16 MiB size-sweep entry with two repetitions: the limit took 1.5 s of CPU beyond its start-up for
    10 objects at 10 objects/s (L = 0.15 s), the broker and ledger 0.5 s for 10 objects (B = 0.05 s)."""
    pipeline = {"count": 10, "objects_per_s": 3.0, "cpu": {"rabbitmq": 0.4, "postgresql": 0.1, "consumers": 9.0}}
    limit = {"count": 10, "objects_per_s": 10.0, "cpu": {"limit (all processes)": 2.0, "seaweedfs": 0.5}}
    result: dict[str, Any] = {"size": 16 * MiB, "groups": 2, "limit_startup_cpu": 1.0,
                              "pipeline": [pipeline, pipeline | {"objects_per_s": 2.0}], "limit": [limit, limit]}
    if per_byte:
        result["per_byte"] = {"size": 16 * MiB, "object_size": 12 * MiB, "samples": 3, "passes": PASSES}
    return result


def test_a_pass_costs_the_median_of_its_samples() -> None:
    assert pass_cpu(PASSES, "gzip") == pytest.approx(0.05)


def test_the_rest_of_a_whole_measurement_is_what_its_timed_parts_leave() -> None:
    """Only the passes the product makes count as parts: the object sha256 and the spool, timed to
    show what dropping them saved, are not subtracted."""
    assert pass_cpu(PASSES, "producer_rest") == pytest.approx(0.075 - 0.01 - 0.05)
    assert pass_cpu(PASSES, "consumer_rest") == 0.0  # noise below the sum of its parts reads as nothing


def test_a_pass_not_measured_is_nan() -> None:
    assert math.isnan(pass_cpu({}, "gzip"))


def test_the_required_work_is_one_gzip_and_sha256_plus_one_gunzip_and_sha256_per_group() -> None:
    assert required_pass_cpu(PASSES, 2) == pytest.approx(0.05 + 0.01 + 2 * (0.03 + 0.01))
    assert required_pass_cpu(PASSES, 1) == pytest.approx(0.05 + 0.01 + 0.03 + 0.01)


def test_the_extended_ceiling_spreads_all_the_cpu_over_the_cores() -> None:
    assert extended_ceiling(2, 10.0, own=0.15, extra=0.05, per_byte=0.14) == pytest.approx(2 / 0.34)


def test_the_extended_ceiling_never_exceeds_the_limit() -> None:
    assert extended_ceiling(2, 10.0, own=0.05, extra=0.02, per_byte=0.01) == 10.0


def test_each_repetition_gets_its_extended_ceiling_and_the_share_the_pipeline_reached() -> None:
    ceilings = repetition_ceilings(entry(), 2)
    assert [c.own for c in ceilings] == pytest.approx([0.15, 0.15])
    assert [c.extra for c in ceilings] == pytest.approx([0.05, 0.05])
    extended = repetition_extended(entry(), 2)
    rate = 2 / (0.15 + 0.05 + 0.14)
    assert [x.rate for x in extended] == pytest.approx([rate, rate])
    assert [x.reached for x in extended] == pytest.approx([3.0 / rate, 2.0 / rate])
    assert [x.of_limit for x in extended] == pytest.approx([rate / 10.0, rate / 10.0])


def test_a_failed_repetition_has_no_ceiling() -> None:
    failed = entry()
    failed["limit"][1] = failed["limit"][1] | {"error": "S3 limit run timed out"}
    assert len(repetition_extended(failed, 2)) == 1


def test_results_from_before_the_per_byte_measurement_have_no_extended_ceiling() -> None:
    assert repetition_extended(entry(per_byte=False), 2) == []
    assert len(repetition_ceilings(entry(per_byte=False), 2)) == 2
