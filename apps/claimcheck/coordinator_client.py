"""Reading a job's progress from the coordinator's HTTP endpoint."""

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Progress = dict[str, Any]


def fetch_progress(coordinator_url: str, job: str) -> Progress | None:
    """The coordinator's counts for ``job``, or None while it cannot be reached."""
    return _get(f"{coordinator_url.rstrip('/')}/jobs/{urllib.parse.quote(job)}")


def fetch_object(coordinator_url: str, object_id: str) -> Progress | None:
    """What the ledger knows of one object (``{"state": "unknown"}`` if nothing), or None while
    the coordinator cannot be reached."""
    return _get(f"{coordinator_url.rstrip('/')}/objects/{urllib.parse.quote(object_id)}", {"state": "unknown"})


def _get(url: str, not_found: Progress | None = None) -> Progress | None:
    """The JSON document at ``url``; ``not_found`` for a 404, None when there is no answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and not_found is not None:
            return not_found
        log.debug("coordinator answered %s for %s", exc.code, url)
        return None
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        log.debug("coordinator unavailable: %s", exc)
        return None


def wait_for(
    coordinator_url: str, job: str, done: Callable[[Progress], bool], timeout: float, poll: float = 0.25
) -> Progress | None:
    """Poll until ``done(progress)`` or ``timeout`` seconds pass; return the last progress seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fetch_progress(coordinator_url, job) or last
        if last is not None and done(last):
            return last
        if time.monotonic() >= deadline:
            return last
        time.sleep(poll)
