"""Operator settings, read from the environment.

``OperatorConfig`` is read once per operator start (in the startup handler) and kept in
kopf's operator-wide ``memo``. Only the timer interval is read at import time, because
kopf takes it in the decorator.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from claimcheck.localstack.ports import HOST, LOCAL

DEFAULT_STUCK_AFTER_SECONDS = 600.0
DEFAULT_RECONCILE_INTERVAL_SECONDS = 5.0
DEFAULT_COORDINATOR_URL = f"http://{HOST}:{LOCAL.coordinator}"  # a coordinator of the local stack (`make coordinator`)
DEFAULT_APP_IMAGE = "claimcheck:latest"
DEFAULT_SECRET_PREFIX = "claimcheck"
FINALIZER = "claimcheck.io/finalizer"
# Resources of every Job container unless the ClaimCheckJob sets spec.resources.
DEFAULT_JOB_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
# The application image's numeric user (images/Dockerfile: USER 10001:10001).
DEFAULT_JOB_UID = 10001
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _positive_float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{key}={raw!r} must be greater than 0")
    return value


def _list(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(key, "").split(",") if item.strip())


def _recipients(env: Mapping[str, str]) -> tuple[str, ...]:
    names = _list(env, "CLAIMCHECK_OPERATOR_RECIPIENTS")
    for name in names:
        if not _DNS_LABEL.match(name) or len(name) > 63:
            raise ValueError(f"CLAIMCHECK_OPERATOR_RECIPIENTS: {name!r} is not a DNS label")
    return names


def _resources(env: Mapping[str, str]) -> dict[str, Any]:
    raw = env.get("CLAIMCHECK_OPERATOR_JOB_RESOURCES", "").strip()
    if not raw:
        return copy.deepcopy(DEFAULT_JOB_RESOURCES)
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"CLAIMCHECK_OPERATOR_JOB_RESOURCES={raw!r} is not JSON") from None
    if not isinstance(value, dict) or not set(value) <= {"requests", "limits"}:
        raise ValueError("CLAIMCHECK_OPERATOR_JOB_RESOURCES must be a JSON object with requests and/or limits")
    return value


def _uid(env: Mapping[str, str], key: str) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return DEFAULT_JOB_UID
    if not raw.isdigit() or int(raw) == 0:
        raise ValueError(f"{key}={raw!r} must be a non-zero numeric id (the Jobs run as non-root)")
    return int(raw)


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """Everything the handlers need to know about the installation.

    Secrets are per role (charts/claimcheck): the producer Job mounts only
    ``<secret_prefix>-producer``, a consumer Job of group G only ``<secret_prefix>-recipient-G``.
    ``recipients`` are the groups the chart configured (each has its Secret, broker user and
    ACK key); a ClaimCheckJob naming another group is refused. ``image_allowlist`` lists the
    images a ClaimCheckJob may name in ``spec.image`` besides ``app_image`` (exact references,
    or prefixes ending in ``*``).
    """

    app_image: str = DEFAULT_APP_IMAGE
    secret_prefix: str = DEFAULT_SECRET_PREFIX
    recipients: tuple[str, ...] = ()
    image_allowlist: tuple[str, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    job_resources: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_JOB_RESOURCES))
    job_run_as_user: int = DEFAULT_JOB_UID
    job_run_as_group: int = DEFAULT_JOB_UID
    coordinator_url: str = DEFAULT_COORDINATOR_URL
    control_token: str = ""
    stuck_after_seconds: float = DEFAULT_STUCK_AFTER_SECONDS
    coordinator_timeout_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read ``CLAIMCHECK_*`` variables; raise ValueError naming the bad variable."""
        env = os.environ if env is None else env
        return cls(
            app_image=env.get("CLAIMCHECK_APP_IMAGE", "").strip() or DEFAULT_APP_IMAGE,
            secret_prefix=env.get("CLAIMCHECK_OPERATOR_SECRET_PREFIX", "").strip() or DEFAULT_SECRET_PREFIX,
            recipients=_recipients(env),
            image_allowlist=_list(env, "CLAIMCHECK_OPERATOR_IMAGE_ALLOWLIST"),
            image_pull_secrets=_list(env, "CLAIMCHECK_OPERATOR_IMAGE_PULL_SECRETS"),
            job_resources=_resources(env),
            job_run_as_user=_uid(env, "CLAIMCHECK_OPERATOR_JOB_RUN_AS_USER"),
            job_run_as_group=_uid(env, "CLAIMCHECK_OPERATOR_JOB_RUN_AS_GROUP"),
            coordinator_url=(env.get("CLAIMCHECK_COORDINATOR_URL", "").strip() or DEFAULT_COORDINATOR_URL).rstrip("/"),
            control_token=env.get("CLAIMCHECK_CONTROL_TOKEN", "").strip(),
            stuck_after_seconds=_positive_float(env, "CLAIMCHECK_STUCK_AFTER_SECONDS", DEFAULT_STUCK_AFTER_SECONDS),
        )

    @property
    def producer_secret(self) -> str:
        """The producer's Secret (its broker user, S3 put-only user, pointer signing key)."""
        return f"{self.secret_prefix}-producer"

    def recipient_secret(self, recipient: str) -> str:
        """Group ``recipient``'s Secret (its broker user, S3 get-only user, its own ACK key)."""
        return f"{self.secret_prefix}-recipient-{recipient}"


def reconcile_interval(env: Mapping[str, str] | None = None) -> float:
    """Seconds between two observations of one resource (``CLAIMCHECK_RECONCILE_INTERVAL_SECONDS``)."""
    env = os.environ if env is None else env
    return _positive_float(env, "CLAIMCHECK_RECONCILE_INTERVAL_SECONDS", DEFAULT_RECONCILE_INTERVAL_SECONDS)


def watch_namespaces(env: Mapping[str, str] | None = None) -> list[str]:
    """Namespaces to watch (``CLAIMCHECK_WATCH_NAMESPACES``, comma list); empty means cluster-wide."""
    env = os.environ if env is None else env
    return [ns.strip() for ns in env.get("CLAIMCHECK_WATCH_NAMESPACES", "").split(",") if ns.strip()]
