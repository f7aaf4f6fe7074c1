"""Every PromQL expression of the dashboard parses and returns data from the local Prometheus
after a real run through the local stack."""

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.observability.observability_support import ObservedRun, prom_query, wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "claimcheck" / "dashboards" / "claimcheck.json"


def expressions() -> list[tuple[str, str]]:
    document = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            found.extend((panel["title"], target["expr"]) for target in panel.get("targets", []))

    walk(document["panels"])
    return found


def test_dashboard_has_expressions() -> None:
    assert len(expressions()) >= 20


@pytest.fixture(scope="module")
def scraped(observed_run: ObservedRun) -> ObservedRun:
    """Prometheus has scraped the run's final counts from every component, twice."""
    instance = f"127.0.0.1:{observed_run.coordinator_port}"

    def final_deletes_scraped() -> bool:
        result = prom_query(f'count_over_time(claimcheck_coordinator_deletes_total{{instance="{instance}"}}[1m])')
        query = f'claimcheck_coordinator_deletes_total{{instance="{instance}"}} == {observed_run.count}'
        return bool(result["result"]) and float(result["result"][0]["value"][1]) >= 2 and bool(prom_query(query)["result"])

    wait_until(final_deletes_scraped, 60, "Prometheus to scrape the run's coordinator", poll=0.5)
    for port in [observed_run.producer_port, *observed_run.consumer_ports.values()]:
        wait_until(functools.partial(_scraped, port), 60,
                   f"Prometheus to scrape 127.0.0.1:{port}", poll=0.5)
    return observed_run


@pytest.mark.parametrize(("title", "expr"), expressions(), ids=[f"{t}:{e[:60]}" for t, e in expressions()])
def test_dashboard_expression_returns_data(scraped: ObservedRun, title: str, expr: str) -> None:
    wait_until(lambda: prom_query(expr)["result"], 30, f"data for {expr!r} (panel {title!r})", poll=1.0)


def _scraped(port: int) -> bool:
    return bool(prom_query(f'up{{instance="127.0.0.1:{port}"}} == 1')["result"])
