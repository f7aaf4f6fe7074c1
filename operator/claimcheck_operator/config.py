"""Operator settings, read from the environment.

``OperatorConfig`` is read once per operator start (in the startup handler) and kept in
kopf's operator-wide ``memo``. Only the timer interval is read at import time, because
kopf takes it in the decorator.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

DEFAULT_STUCK_AFTER_SECONDS = 600.0
DEFAULT_RECONCILE_INTERVAL_SECONDS = 5.0
DEFAULT_COORDINATOR_URL = "http://127.0.0.1:38080"
DEFAULT_APP_IMAGE = "claimcheck:latest"
DEFAULT_APP_ENV_SECRET = "claimcheck-env"
FINALIZER = "claimcheck.io/finalizer"


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


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """Everything the handlers need to know about the installation."""

    app_image: str = DEFAULT_APP_IMAGE
    app_env_secret: str = DEFAULT_APP_ENV_SECRET
    coordinator_url: str = DEFAULT_COORDINATOR_URL
    stuck_after_seconds: float = DEFAULT_STUCK_AFTER_SECONDS
    coordinator_timeout_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read ``CLAIMCHECK_*`` variables; raise ValueError naming the bad variable."""
        env = os.environ if env is None else env
        return cls(
            app_image=env.get("CLAIMCHECK_APP_IMAGE", "").strip() or DEFAULT_APP_IMAGE,
            app_env_secret=env.get("CLAIMCHECK_APP_ENV_SECRET", "").strip() or DEFAULT_APP_ENV_SECRET,
            coordinator_url=(env.get("CLAIMCHECK_COORDINATOR_URL", "").strip() or DEFAULT_COORDINATOR_URL).rstrip("/"),
            stuck_after_seconds=_positive_float(env, "CLAIMCHECK_STUCK_AFTER_SECONDS", DEFAULT_STUCK_AFTER_SECONDS),
        )


def reconcile_interval(env: Mapping[str, str] | None = None) -> float:
    """Seconds between two observations of one resource (``CLAIMCHECK_RECONCILE_INTERVAL_SECONDS``)."""
    env = os.environ if env is None else env
    return _positive_float(env, "CLAIMCHECK_RECONCILE_INTERVAL_SECONDS", DEFAULT_RECONCILE_INTERVAL_SECONDS)


def watch_namespaces(env: Mapping[str, str] | None = None) -> list[str]:
    """Namespaces to watch (``CLAIMCHECK_WATCH_NAMESPACES``, comma list); empty means cluster-wide."""
    env = os.environ if env is None else env
    return [ns.strip() for ns in env.get("CLAIMCHECK_WATCH_NAMESPACES", "").split(",") if ns.strip()]
