"""Prometheus metrics of the operator: reconciles by handler and result, ClaimCheckJobs by phase.

Served by ``claimcheck-operator`` on ``CLAIMCHECK_OPERATOR_METRICS_PORT`` (default 9100, 0 = off).
The phase gauge covers the resources this operator has observed since it started; a deleted
resource leaves it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PHASES = ("Pending", "Running", "Succeeded", "Failed")

RECONCILES = Counter(
    "claimcheck_operator_reconciles_total",
    "Handler runs, by handler (create, observe, delete) and result (changed: status or Jobs written, unchanged)",
    ["handler", "result"],
)
for _handler in ("create", "observe", "delete"):
    for _result in ("changed", "unchanged"):
        RECONCILES.labels(_handler, _result)

_phases: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def set_phase(namespace: str, name: str, phase: str | None) -> None:
    """Record a ClaimCheckJob's phase; None forgets it (deleted)."""
    with _lock:
        if phase is None:
            _phases.pop((namespace, name), None)
        else:
            _phases[(namespace, name)] = phase


class _PhaseCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        with _lock:
            phases = list(_phases.values())
        family = GaugeMetricFamily("claimcheck_operator_jobs", "ClaimCheckJobs by phase", labels=["phase"])
        for phase in sorted(set(PHASES) | set(phases)):
            family.add_metric([phase], phases.count(phase))
        yield family


REGISTRY.register(_PhaseCollector())
