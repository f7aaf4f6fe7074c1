"""Fixtures of the fault-injection suite: the real local stack (``make up``), restored after
every scenario, and one :class:`Scenario` per test whose processes are all killed afterwards.

Each scenario prints its measured recovery as one ``RECOVERY {json}`` line (visible with
``pytest -s``); the terminal summary prints them all as a table.
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from claimcheck.config import Settings
from claimcheck.migrate import migrate
from tests import testkit
from tests.faults.fault_harness.checks import diagnostics
from tests.faults.fault_harness.ledger import LedgerProbe
from tests.faults.fault_harness.scenario import Scenario
from tests.faults.fault_harness.stack import restore_stack
from tests.testkit import require_stack

RECOVERIES: list[dict[str, Any]] = []


s3 = testkit.s3  # the shared session fixture


@pytest.fixture(scope="session")
def settings() -> Settings:
    config = Settings()
    restarted = restore_stack()
    if restarted:
        print(f"fault suite: restarted {', '.join(restarted)} before the first scenario")
    require_stack(config)
    migrate(config.database_url)
    return config


@pytest.fixture(scope="session")
def ledger(settings: Settings) -> LedgerProbe:
    return LedgerProbe(settings.database_url)


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest, tmp_path: Any, settings: Settings, s3: Any, ledger: LedgerProbe
) -> Iterator[Scenario]:
    """A scenario's job and processes; afterwards every process is stopped, the stack restored
    (all nodes up, cluster of 3, HAProxy, PostgreSQL and S3 running) and the queues deleted."""
    shards: int = getattr(request, "param", 1)  # parametrized indirectly: SHARDED in test_faults
    name = request.node.originalname.removeprefix("test_") + ("" if shards == 1 else f"-{shards}-shards")
    instance = Scenario(name, tmp_path, settings, ledger, s3, shards)
    yield instance
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        print(f"\n{name}: logs in {tmp_path}\n{diagnostics(instance)}")
    try:
        instance.stop_all()
    finally:
        restarted = restore_stack()
        if restarted:
            print(f"{name}: teardown restarted {', '.join(restarted)}")
        instance.delete_queues()
    for recovery in instance.recoveries:
        line = {**recovery, "passed": not failed}
        RECOVERIES.append(line)
        print(f"\nRECOVERY {json.dumps(line, sort_keys=True)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _client(entry: dict[str, Any] | None) -> str:
    """``resumed (stall)`` of one client, or ``resumed`` if it did not stall."""
    if not entry or entry.get("resumed_s") is None:
        return "-"
    stall = entry.get("stall_s")
    return _seconds(entry["resumed_s"]) + (f" ({stall:.2f})" if stall is not None else "")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECOVERIES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("measured recovery: s from fault to next confirmed event (longest stall)")
    write(f"{'scenario [fault]':<58} {'outage':>6} {'producer':>13} {'consumers*':>13} {'coordinator':>13}")
    for row in RECOVERIES:
        consumers = row.get("consumers", {})
        slowest = max(consumers.values(), key=lambda e: e.get("resumed_s") or 0.0, default=None)
        label = f"{row['scenario']} [{row['fault']}]"
        write(
            f"{label[:58]:<58} {_seconds(row.get('outage_s')):>6} {_client(row.get('producer')):>13} "
            f"{_client(slowest):>13} {_client(row.get('coordinator')):>13}"
            + ("" if row.get("passed", True) else "  (scenario FAILED)")
        )
    write("* consumers: the slowest replica")
