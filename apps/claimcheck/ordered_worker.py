"""The slow half of a batching consumer on a thread of its own, batches still in delivery order.

A consumer that reads a batch, writes it to a database and only then reads the next one leaves
its CPU idle for every round trip and commit. Here the connection's thread hands each batch to
one worker thread and goes back to reading and decoding the next batch while the worker writes
this one. The worker takes batches strictly one after the other, in the order they were handed
in, and gives each result back to the connection's thread (``call_back``), where the deliveries
are settled: a channel is never touched from two threads, and acknowledgements still follow
the durable write in delivery order, so a consumer acking ``multiple`` stays correct.

If the work fails (the database went away), the failure is raised on the connection's thread
at its next hand-over, exactly as if the work had run there; batches handed in meanwhile are
dropped unworked, since their deliveries go back to the queue with the connection.
"""

import logging
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

B = TypeVar("B")
R = TypeVar("R")

# How often a hand-over waiting for room looks again whether the worker has failed meanwhile.
_POLL_SECONDS = 0.05


class OrderedWorker(Generic[B, R]):
    """``work`` each batch on one thread, in order; ``settle`` its result on the connection's thread.

    At most ``depth`` batches wait besides the one being worked, so the connection's thread
    stays at most that far ahead of what is durable (and the broker's prefetch bounds it too).
    """

    def __init__(self, work: Callable[[B], R], settle: Callable[[B, R], None],
                 call_back: Callable[[Callable[[], None]], bool], name: str, depth: int = 1) -> None:
        self._work = work
        self._settle = settle
        self._call_back = call_back
        self._waiting: queue.Queue[tuple[int, B] | None] = queue.Queue(maxsize=depth)
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        # Batches are numbered by hand-over era: a failure ends an era when the caller hears of it,
        # and every batch handed in during a failed era is dropped.
        self._era = 0
        self._dropped_through = -1
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, batch: B) -> None:
        """Queue ``batch`` behind the ones before it, waiting while the queue is full.

        Raises (once) what the worker's last batch failed with: the caller then drops its
        connection, and every delivery not settled yet is redelivered.
        """
        while True:
            self.raise_failure()
            try:
                self._waiting.put((self._era, batch), timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def raise_failure(self) -> None:
        """Raise what the worker failed with since the last call, if anything."""
        with self._lock:
            failure, self._failure = self._failure, None
            if failure is not None:
                self._era += 1
        if failure is not None:
            raise failure

    def close(self, timeout: float = 10.0) -> None:
        """Let the worker finish what was handed in, then end it."""
        try:
            self._waiting.put(None, timeout=timeout)
        except queue.Full:
            log.warning("%s did not take its last batches within %.0f s", self._thread.name, timeout)
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._waiting.get()) is not None:
            era, batch = item
            with self._lock:
                dropped = era <= self._dropped_through
            if dropped:  # the connection these deliveries came on is being dropped
                continue
            try:
                result = self._work(batch)
            except Exception as exc:  # noqa: BLE001 - handed to the connection's thread, which decides
                with self._lock:
                    self._failure, self._dropped_through = exc, era
                continue
            if not self._call_back(partial(self._settle, batch, result)):
                log.debug("connection gone before a batch was settled; its deliveries are redelivered")
