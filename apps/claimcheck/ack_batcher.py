"""The ack step's transport: business ACKs of one replica's workers, published together.

Each worker that finished a payload calls :meth:`AckBatcher.confirm` and waits. One thread
publishes whatever is waiting as one signed :class:`~claimcheck.protocol.AckBatch` (a lone ACK
as a plain :class:`~claimcheck.protocol.Ack`) and waits for the broker's confirm; ACKs that
arrive meanwhile form the next batch. So under load one enqueue (a Raft command on three
nodes) and one coordinator settlement cover several objects, and an idle replica adds no delay:
nothing waits for a batch to fill.

A worker's ACK counts as sent only once its batch was confirmed: the error of a failed publish
reaches every worker of that batch, exactly as if each had published alone.
"""

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from claimcheck import topology
from claimcheck.protocol import MAX_ACKS_PER_BATCH, Ack, AckBatch, AckedObject, Pointer, now
from claimcheck.publisher import BrokerSession
from claimcheck.signing import Signer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Waiting:
    pointer: Pointer
    sent: "Future[None]"


class AckBatcher:
    """Publishes the business ACKs of ``recipient``'s replica ``consumer`` in batches."""

    def __init__(self, publisher: BrokerSession, signer: Signer, recipient: str, consumer: str,
                 max_batch: int = MAX_ACKS_PER_BATCH) -> None:
        self._publisher = publisher
        self._signer = signer
        self._recipient = recipient
        self._consumer = consumer
        self._max_batch = max(1, min(max_batch, MAX_ACKS_PER_BATCH))
        self._waiting: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"acks-{recipient}", daemon=True)
        self._lock = threading.Lock()
        self._state = "new"  # -> "running" -> "closed"
        self.batches = 0  # messages published, for tests and logs

    def confirm(self, pointer: Pointer, timeout: float | None = None) -> None:
        """Send this replica's ACK of ``pointer``; return once the broker confirmed it, else raise."""
        waiting = _Waiting(pointer, Future())
        with self._lock:
            if self._state == "closed":
                raise RuntimeError("the ACK publisher is closed")
            if self._state == "new":
                self._thread.start()
                self._state = "running"
            self._waiting.put(waiting)
        waiting.sent.result(timeout)

    def close(self) -> None:
        """Stop the publishing thread once what is waiting was published."""
        with self._lock:
            running, self._state = self._state == "running", "closed"
            if running:
                self._waiting.put(None)
        if running:
            self._thread.join(timeout=30)
        self._publisher.close()

    def _run(self) -> None:
        while True:
            first = self._waiting.get()
            if first is None:
                return
            batch = [first]
            closing = False
            while len(batch) < self._max_batch:
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            self._publish(batch)
            if closing:
                return

    def _publish(self, batch: list[_Waiting]) -> None:
        """One confirmed message for ``batch``; its outcome is every waiting worker's."""
        # A pointer redelivered while its first copy still waits would confirm one object twice.
        unique = list({waiting.pointer.object_id: waiting.pointer for waiting in batch}.values())
        try:
            body, message_id = self._encode(unique)
            self._publisher.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, body, message_id=message_id,
                                    headers=self._signer.sign(body))
        except BaseException as exc:  # noqa: BLE001 - handed to the workers, which decide what it means
            for waiting in batch:
                waiting.sent.set_exception(exc)
            return
        self.batches += 1
        for waiting in batch:
            waiting.sent.set_result(None)

    def _encode(self, pointers: list[Pointer]) -> tuple[bytes, str]:
        if len(pointers) == 1:
            (pointer,) = pointers
            ack = Ack(object_id=pointer.object_id, job=pointer.job, recipient=self._recipient,
                      payload_sha256=pointer.payload_sha256, consumer=self._consumer, acked_at=now())
            return ack.encode(), f"{pointer.object_id}.{self._recipient}"
        batch = AckBatch(recipient=self._recipient, consumer=self._consumer, acked_at=now(),
                         acks=tuple(AckedObject(object_id=p.object_id, job=p.job, payload_sha256=p.payload_sha256)
                                    for p in pointers))
        return batch.encode(), f"{pointers[0].object_id}+{len(pointers) - 1}.{self._recipient}"
