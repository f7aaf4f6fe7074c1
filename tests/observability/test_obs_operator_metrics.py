"""The operator's metrics: ClaimCheckJobs by phase, reconciles by handler and result."""

from prometheus_client import REGISTRY

from claimcheck_operator import metrics


def test_jobs_by_phase_follow_the_recorded_phases() -> None:
    metrics.set_phase("ns", "a", "Running")
    metrics.set_phase("ns", "b", "Running")
    metrics.set_phase("ns", "b", "Succeeded")
    metrics.set_phase("ns", "c", "Failed")
    metrics.set_phase("ns", "c", None)
    try:
        for phase, count in {"Running": 1, "Succeeded": 1, "Failed": 0, "Pending": 0}.items():
            assert REGISTRY.get_sample_value("claimcheck_operator_jobs", {"phase": phase}) == count
        assert REGISTRY.get_sample_value(
            "claimcheck_operator_reconciles_total", {"handler": "observe", "result": "unchanged"}) is not None
    finally:
        metrics.set_phase("ns", "a", None)
        metrics.set_phase("ns", "b", None)
