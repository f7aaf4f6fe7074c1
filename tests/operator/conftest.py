"""Fixtures for the operator tests: a fake API server, the coordinator stand-in, the running operator."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The timer interval is read by kopf's decorator when the handlers are imported: import them
# here with a fast interval, then put the environment back for the rest of the session.
_saved = os.environ.get("CLAIMCHECK_RECONCILE_INTERVAL_SECONDS")
os.environ["CLAIMCHECK_RECONCILE_INTERVAL_SECONDS"] = "0.2"
import claimcheck_operator.handlers  # noqa: E402,F401

if _saved is None:
    del os.environ["CLAIMCHECK_RECONCILE_INTERVAL_SECONDS"]
else:
    os.environ["CLAIMCHECK_RECONCILE_INTERVAL_SECONDS"] = _saved

from kopf.testing import KopfRunner  # noqa: E402

from tests.operator.operator_harness import (  # noqa: E402
    CONFIGURED_RECIPIENTS,
    CONTROL_TOKEN,
    CoordinatorStandIn,
    FakeCluster,
    OperatorFactory,
    kubeconfig_for,
)


@pytest.fixture()
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as fake:
        yield fake


@pytest.fixture()
def coordinator() -> Iterator[CoordinatorStandIn]:
    with CoordinatorStandIn() as stand_in:
        yield stand_in


@pytest.fixture()
def operator_env(
    cluster: FakeCluster, coordinator: CoordinatorStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment of the operator process, pointing at the fake cluster and the stand-in."""
    with kubeconfig_for(cluster.url, str(tmp_path / "kubeconfig")) as path:
        env = {
            "KUBECONFIG": path,
            "CLAIMCHECK_APP_IMAGE": "registry.example/claimcheck:test",
            "CLAIMCHECK_OPERATOR_SECRET_PREFIX": "cc",
            "CLAIMCHECK_OPERATOR_RECIPIENTS": CONFIGURED_RECIPIENTS,
            "CLAIMCHECK_OPERATOR_IMAGE_ALLOWLIST": "registry.example/claimcheck:*,other.example/cc:1.0",
            "CLAIMCHECK_OPERATOR_IMAGE_PULL_SECRETS": "regcred",
            "CLAIMCHECK_CONTROL_TOKEN": CONTROL_TOKEN,
            "CLAIMCHECK_COORDINATOR_URL": coordinator.url,
            "CLAIMCHECK_STUCK_AFTER_SECONDS": "600",
        }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return env


@pytest.fixture()
def start_operator(operator_env: dict[str, str]) -> OperatorFactory:
    """Start (and, on leaving the block, stop) the operator; usable several times to test restarts."""

    @contextlib.contextmanager
    def run() -> Iterator[KopfRunner]:
        args = ["run", "--standalone", "--all-namespaces", "--verbose", "-m", "claimcheck_operator.handlers"]
        with KopfRunner(args, timeout=30) as runner:
            yield runner
        assert runner.exit_code == 0, runner.output
        assert runner.exception is None, runner.exception

    return run
