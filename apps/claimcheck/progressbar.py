"""Progress a person can watch: a bar on a terminal, plain lines otherwise.

On a TTY the bar is tqdm's (objects, bytes/s, ETA, on stderr). Without one (a pod's log, CI,
a pipe) a bar's carriage returns would be noise, so a plain line is written at most every
``every`` seconds and at the end: ``published 40/100 objects (40%), 12.0 MiB, 3.1 objects/s``.
"""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Protocol

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from claimcheck.sizes import format_size


class Tick(Protocol):
    def __call__(self, payload_bytes: int = 0) -> None: ...


class _Lines:
    """The non-TTY progress: one line per interval."""

    def __init__(self, what: str, total: int, stream: IO[str], every: float) -> None:
        self._what, self._total, self._stream, self._every = what, total, stream, every
        self._done = 0
        self._bytes = 0
        self._started = time.monotonic()
        self._last = self._started

    def tick(self, payload_bytes: int = 0) -> None:
        self._done += 1
        self._bytes += payload_bytes
        now = time.monotonic()
        if now - self._last >= self._every or self._done == self._total:
            self._last = now
            self.line()

    def line(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        percent = f" ({100 * self._done // self._total}%)" if self._total else ""
        size = f", {format_size(self._bytes)}" if self._bytes else ""
        print(f"{self._what} {self._done}/{self._total} objects{percent}{size}, {self._done / elapsed:.1f} objects/s",
              file=self._stream, flush=True)


@contextmanager
def progress(what: str, total: int, stream: IO[str] | None = None, every: float = 5.0,
             tty: bool | None = None) -> Iterator[Tick]:
    """Yield a ``tick(payload_bytes)`` to call once per finished object."""
    stream = stream or sys.stderr
    if tty is None:
        tty = stream.isatty()
    if not tty:
        lines = _Lines(what, total, stream, every)
        yield lines.tick
        return
    # Log records go through tqdm.write while the bar is shown, so they do not tear it.
    with logging_redirect_tqdm(), tqdm(total=total, desc=what, unit="obj", file=stream, dynamic_ncols=True,
                                       smoothing=0.1) as bar:
        sent = [0]

        def tick(payload_bytes: int = 0) -> None:
            sent[0] += payload_bytes
            bar.set_postfix_str(format_size(sent[0]), refresh=False)
            bar.update(1)

        yield tick
