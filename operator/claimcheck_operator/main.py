"""Console script ``claimcheck-operator``: run kopf with this package's handlers."""

from __future__ import annotations

import argparse
import os
import sys

import kopf
import prometheus_client

from claimcheck_operator import handlers  # noqa: F401  (registers the handlers)
from claimcheck_operator.config import OperatorConfig, watch_namespaces

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


def main(argv: list[str] | None = None) -> int:
    """Check the settings, then run until SIGTERM.

    ``CLAIMCHECK_WATCH_NAMESPACES`` (comma list) limits the operator to those namespaces;
    empty means cluster-wide. ``CLAIMCHECK_OPERATOR_LIVENESS`` is kopf's liveness endpoint.
    """
    argparse.ArgumentParser(
        prog="claimcheck-operator",
        description="Reconcile ClaimCheckJob resources into producer and consumer Jobs. "
        "Configured by environment: CLAIMCHECK_APP_IMAGE, CLAIMCHECK_OPERATOR_RECIPIENTS, "
        "CLAIMCHECK_OPERATOR_SECRET_PREFIX, CLAIMCHECK_OPERATOR_IMAGE_ALLOWLIST, CLAIMCHECK_OPERATOR_IMAGE_PULL_SECRETS, "
        "CLAIMCHECK_OPERATOR_JOB_RESOURCES, CLAIMCHECK_OPERATOR_JOB_RUN_AS_USER, CLAIMCHECK_OPERATOR_JOB_RUN_AS_GROUP, "
        "CLAIMCHECK_CONTROL_TOKEN, "
        "CLAIMCHECK_COORDINATOR_URL, CLAIMCHECK_WATCH_NAMESPACES, CLAIMCHECK_STUCK_AFTER_SECONDS, "
        "CLAIMCHECK_OPERATOR_LIVENESS, CLAIMCHECK_OPERATOR_METRICS_PORT, CLAIMCHECK_LOG_LEVEL (see docs/operator.md).",
    ).parse_args(argv)
    try:
        OperatorConfig.from_env()
    except ValueError as exc:
        print(f"claimcheck-operator: {exc}", file=sys.stderr)
        return 2
    level = os.environ.get("CLAIMCHECK_LOG_LEVEL", "INFO").upper()
    kopf.configure(debug=level == "DEBUG", quiet=level in ("WARNING", "ERROR", "CRITICAL"))
    namespaces = watch_namespaces()
    metrics_port = int(os.environ.get("CLAIMCHECK_OPERATOR_METRICS_PORT", "9100") or 0)
    if metrics_port:
        prometheus_client.start_http_server(metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=os.environ.get("CLAIMCHECK_OPERATOR_LIVENESS", DEFAULT_LIVENESS) or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
