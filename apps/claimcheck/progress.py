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
    url = f"{coordinator_url.rstrip('/')}/jobs/{urllib.parse.quote(job)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        log.debug("coordinator progress unavailable: %s", exc)
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
