"""The coordinator's applier thread without services: order, settling on the caller's thread,
back-pressure, and a failure that reaches the connection's thread and drops what came after it."""

import queue
import threading
import time
from collections.abc import Callable

import pytest

from claimcheck.amqp_loop import DependencyDown
from claimcheck.ordered_worker import OrderedWorker

DEADLINE = 10.0


class ConnectionThread:
    """Stands in for the connection's thread: callbacks queue up and run where :meth:`run_pending` is called."""

    def __init__(self) -> None:
        self.callbacks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.open = True

    def call_back(self, callback: Callable[[], None]) -> bool:
        if self.open:
            self.callbacks.put(callback)
        return self.open

    def run_until(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not done():
            assert time.monotonic() < deadline, "the worker did not hand its results back in time"
            try:
                self.callbacks.get(timeout=0.05)()
            except queue.Empty:
                continue


def test_batches_are_worked_in_order_and_settled_on_the_connection_thread() -> None:
    connection = ConnectionThread()
    worked: list[int] = []
    settled: list[tuple[int, int, str]] = []

    def work(batch: int) -> int:
        time.sleep(0.001 * (batch % 3))  # uneven work must not reorder anything
        worked.append(batch)
        return batch * 10

    worker: OrderedWorker[int, int] = OrderedWorker(
        work, lambda batch, result: settled.append((batch, result, threading.current_thread().name)),
        connection.call_back, name="test-applier", depth=2)
    for batch in range(50):
        worker.submit(batch)
    connection.run_until(lambda: len(settled) == 50)
    worker.close()
    assert worked == list(range(50))
    assert settled == [(batch, batch * 10, threading.current_thread().name) for batch in range(50)]


def test_submit_waits_while_the_queue_is_full() -> None:
    connection = ConnectionThread()
    release = threading.Event()
    started = threading.Event()

    def work(batch: int) -> int:
        started.set()
        release.wait(DEADLINE)
        return batch

    worker: OrderedWorker[int, int] = OrderedWorker(work, lambda batch, result: None, connection.call_back,
                                                    name="test-applier", depth=1)
    worker.submit(1)  # being worked
    assert started.wait(DEADLINE)
    worker.submit(2)  # waits in the queue
    third = threading.Thread(target=worker.submit, args=(3,))
    third.start()
    third.join(0.3)
    assert third.is_alive(), "a third batch was taken while one was worked and one waited"
    release.set()
    third.join(DEADLINE)
    assert not third.is_alive()
    worker.close()


def test_a_failure_is_raised_once_on_the_next_hand_over_and_later_batches_are_dropped() -> None:
    connection = ConnectionThread()
    failing = threading.Event()
    failed = threading.Event()
    worked: list[int] = []
    settled: list[int] = []

    def work(batch: int) -> int:
        if batch == 2:
            failing.wait(DEADLINE)
            failed.set()
            raise DependencyDown("ledger unreachable: connection refused")
        worked.append(batch)
        return batch

    worker: OrderedWorker[int, int] = OrderedWorker(work, lambda batch, result: settled.append(batch),
                                                    connection.call_back, name="test-applier", depth=4)
    for batch in (1, 2, 3, 4):
        worker.submit(batch)
    failing.set()
    assert failed.wait(DEADLINE)
    with pytest.raises(DependencyDown, match="ledger unreachable"):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:  # raised at the first hand-over after the failure was recorded
            worker.submit(5)
            time.sleep(0.01)
    worker.raise_failure()  # once only: reconnecting starts afresh
    worker.submit(6)
    connection.run_until(lambda: 6 in settled)
    worker.close()
    assert worked[0] == 1 and worked[-1] == 6
    assert 3 not in worked and 4 not in worked, "batches handed in before the failure surfaced were worked"
    assert settled[0] == 1 and settled[-1] == 6


def test_a_result_for_a_connection_that_is_gone_is_not_settled() -> None:
    connection = ConnectionThread()
    connection.open = False
    worked = threading.Event()
    settled: list[int] = []

    def work(batch: int) -> int:
        worked.set()
        return batch

    worker: OrderedWorker[int, int] = OrderedWorker(work, lambda batch, result: settled.append(batch),
                                                    connection.call_back, name="test-applier")
    worker.submit(1)
    worker.close()
    assert worked.is_set()
    assert settled == []
