"""Helpers every suite that talks to the local stack shares: deadlines, free ports, unique names."""

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    poll: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline.

    Exceptions listed in ``tolerate`` (a dependency that is down on purpose) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    value: Any = None
    last_error: BaseException | None = None
    while True:
        try:
            value, last_error = predicate(), None
        except tolerate as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"last error {last_error!r}" if last_error else f"last value {value!r}"
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {detail}")
        time.sleep(poll)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique(name: str) -> str:
    """A recipient or job name no other test run uses, so queues never share leftovers."""
    return f"{name}-{uuid.uuid4().hex[:8]}"
