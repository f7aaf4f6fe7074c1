"""Client of the coordinator's HTTP endpoint (docs/interfaces.md: ``GET /jobs/<job>``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from claimcheck_operator.observe import Progress, parse_progress


class CoordinatorError(Exception):
    """The coordinator could not be asked; the message says why, for status and Events."""


def _url(base: str, job: str) -> str:
    return f"{base.rstrip('/')}/jobs/{urllib.parse.quote(job, safe='')}"


def fetch_progress(base_url: str, job: str, timeout: float) -> Progress:
    """Counts for ``job``; a 404 means the coordinator has seen nothing of it yet (all zero)."""
    url = _url(base_url, job)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return Progress()
        raise CoordinatorError(f"GET {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CoordinatorError(f"GET {url} failed: {reason}") from None
    try:
        return parse_progress(payload)
    except ValueError as exc:
        raise CoordinatorError(str(exc)) from None


def forget_job(base_url: str, job: str, timeout: float, token: str = "") -> str:
    """Ask the coordinator to drop a deleted run's pending objects (``DELETE /jobs/<job>``).

    ``token`` (``CLAIMCHECK_CONTROL_TOKEN``) is sent as ``Authorization: Bearer <token>``: the
    coordinator cancels a run only for a caller holding one of its ``CLAIMCHECK_CONTROL_TOKENS``.
    Returns a short outcome; 404/405/501 mean "nothing to do / not supported" and are not
    errors, so deleting a ClaimCheckJob never hangs on an older coordinator. 401/403 are errors
    that name the token, never print it.
    """
    url = _url(base_url, job)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method="DELETE", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"coordinator answered HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405, 501):
            return f"coordinator answered HTTP {exc.code}"
        if exc.code in (401, 403):
            held = "a token the coordinator does not accept" if token else "no CLAIMCHECK_CONTROL_TOKEN"
            raise CoordinatorError(f"DELETE {url} answered HTTP {exc.code}: the operator sent {held}") from None
        raise CoordinatorError(f"DELETE {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CoordinatorError(f"DELETE {url} failed: {getattr(exc, 'reason', exc)}") from None
