"""Consume, verify and ack steps: one replica of a recipient group (:class:`Consumer` is the library's).

The connection thread only decodes pointers and acknowledges; the slow part (download,
decompress, verify, process, publish the business ACK and wait for its confirm) runs in worker
threads, each with a publishing connection of its own, so heartbeats keep flowing and confirms
are awaited in parallel. Only after the business ACK is confirmed by the broker is the
pointer's delivery acknowledged: a crash at any point makes the broker redeliver the pointer,
and the ledger absorbs the duplicate ACK. A pointer batch's objects are each judged as if they
had come alone; its delivery is settled once, when the last is decided (:func:`settlement.combine`).

Nothing a publisher sends can stop a replica: a pointer that cannot be judged, for whatever
reason, is dead-lettered alone (``internal: <error>``) and consuming goes on.
"""

import importlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import IO, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from claimcheck import metrics, store, topology
from claimcheck.ack_batcher import AckBatcher
from claimcheck.amqp_loop import ConsumerLoop, Delivery, DependencyDown
from claimcheck.config import Settings
from claimcheck.coordinator_client import fetch_object, fetch_progress
from claimcheck.deadletter import dead_letter
from claimcheck.httpapi import routes_for, serve
from claimcheck.protocol import RECIPIENT_QUEUE_KINDS, InvalidMessage, Pointer, PointerBatch, brief, check_envelope
from claimcheck.publisher import RETRYABLE, BrokerRefused, BrokerSession
from claimcheck.settlement import AckNotPublished, Action, AlreadySettled, Settlement, combine, settle
from claimcheck.signing import decode_signed

log = logging.getLogger(__name__)

Hook = Callable[[Pointer, IO[bytes]], None]


def noop_hook(pointer: Pointer, payload: IO[bytes]) -> None:
    """The default processing hook: the payload was verified, nothing more to do."""


def load_hook(spec: str) -> Hook:
    """Import a hook given as ``package.module:function``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"invalid hook {spec!r}: expected module:function")
    hook = getattr(importlib.import_module(module_name), attribute)
    if not callable(hook):
        raise ValueError(f"hook {spec!r} is not callable")
    return hook  # type: ignore[no-any-return]


@dataclass
class ConsumerStats:
    """What this replica did, printed as JSON when it exits."""

    recipient: str
    consumer: str
    verified: int = 0
    acked: int = 0
    dead_lettered: int = 0
    verified_by_job: dict[str, int] = field(default_factory=dict)


class RecipientConsumer:
    """Consumes one recipient group's queue; several replicas share it."""

    def __init__(self, settings: Settings, recipient: str, hook: Hook = noop_hook, workers: int = 4) -> None:
        self.name = f"{recipient}@{socket.gethostname()}-{os.getpid()}"
        self.stats = ConsumerStats(recipient, self.name)
        self._settings = settings
        self._recipient = recipient
        self._hook = hook
        # The default hook reads nothing: verify each payload without keeping a copy of it.
        self._keep_payload = hook is not noop_hook
        self._verifier = settings.consumer_verifier(recipient)
        self._ack_signer = settings.ack_signer(recipient)
        self._s3 = store.client(settings)
        self._storage = store.StorageOptions.from_settings(settings)
        self._declare = lambda channel: topology.declare_for_recipient(channel, recipient, settings.coordinator_shards)
        self._publisher = BrokerSession(settings.amqp_url, self._declare, settings.confirm_timeout)
        # Workers' ACKs, published together (one broker message for whatever is waiting).
        self._acks = AckBatcher(BrokerSession(settings.amqp_url, self._declare, settings.confirm_timeout),
                                self._ack_signer, recipient, self.name, shards=settings.coordinator_shards)
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"verify-{recipient}")
        metrics.recipient_metrics(recipient)
        self._loop = ConsumerLoop(
            settings.amqp_url,
            self._declare,
            [topology.recipient_queue(recipient)],
            # Four times the workers: besides the pointers being processed, those whose ACK is
            # lingering or in flight hold a slot, and a worker that finishes finds the next
            # pointer already here instead of waiting for the broker to send one.
            4 * workers,
            self._on_pointer,
            gate=self._storage_down,
        )

    @property
    def consuming(self) -> threading.Event:
        """Set while this replica is connected and consuming its queue (declared by then)."""
        return self._loop.connected

    def run(self, stop: threading.Event, http_port: int | None = None) -> None:
        """Consume until ``stop`` is set; with ``http_port``, serve health, readiness and metrics."""
        log.info("consumer %s started", self.name)
        server = serve(http_port, routes_for(self._readiness, [])) if http_port is not None else None
        try:
            self._loop.run(stop)
        finally:
            self._workers.shutdown(wait=True, cancel_futures=True)
            self._acks.close()
            self._publisher.close()
            if server is not None:
                server.shutdown()

    def _storage_down(self) -> str | None:
        try:
            self._s3.head_bucket(Bucket=self._settings.s3_bucket)
        except (BotoCoreError, ClientError) as exc:
            return f"S3 unreachable: {exc}"
        return None

    def _readiness(self) -> str | None:
        return self._storage_down() or (None if self._loop.connected.is_set() else "not consuming from the broker")

    def _on_pointer(self, delivery: Delivery) -> None:
        received = metrics.RECEIVED.labels(self._recipient)
        try:
            message = decode_signed(self._verifier, delivery.body, delivery.properties.headers, *RECIPIENT_QUEUE_KINDS,
                                    bucket=self._settings.s3_bucket, key_prefix=self._settings.s3_key_prefix)
        except InvalidMessage as exc:
            received.inc()
            self._reject(delivery, exc.category, exc.reason)
            return
        except Exception as exc:  # whatever a message does, it is set aside alone
            received.inc()
            log.exception("judging a pointer failed")
            self._reject(delivery, "internal", brief(repr(exc), 300))
            return
        pointers = message.each() if isinstance(message, PointerBatch) else [message]
        received.inc(len(pointers))  # each pointer a batch carried; a message that is none counts once
        if self._recipient not in message.recipients:
            self._reject(delivery, "foreign_recipient", f"pointer does not name recipient {self._recipient!r}")
            return
        parts = _Parts(delivery, len(pointers))
        # A batch comes back whole when one of its objects must be tried again: the others were
        # most likely confirmed already, and are not processed a second time if the ledger says so.
        recheck = len(pointers) > 1 and (delivery.redelivered or delivery.delivery_count > 0)
        for pointer in pointers:
            processed = self._workers.submit(self._verify_and_process, pointer, recheck)
            processed.add_done_callback(partial(self._send_ack, parts, pointer))

    def _verify_and_process(self, pointer: Pointer, recheck: bool = False) -> None:
        """On a worker: verify (downloading a stored payload), then run the hook; with ``recheck``,
        first ask the coordinator whether this group's confirmation of the object was counted
        (:class:`AlreadySettled` if so; processed as usual if it cannot be asked)."""
        if recheck:
            status = fetch_object(self._settings.coordinator_url, pointer.object_id)
            if status is not None and self._recipient in status.get("confirmed_by", []):
                raise AlreadySettled(f"object {pointer.object_id} of a redelivered batch: {self._recipient} "
                                     "confirmed it before")
        started = time.monotonic()
        try:
            payload = store.open_verified(self._s3, pointer, self._storage, keep=self._keep_payload)
        except store.ObjectMissing as missing:
            self._explain_missing(pointer, missing)
        with payload:
            metrics.DOWNLOAD_SECONDS.labels(self._recipient).observe(time.monotonic() - started)
            metrics.VERIFIED.labels(self._recipient).inc()
            with metrics.PROCESSING_SECONDS.labels(self._recipient).time():
                self._hook(pointer, payload)

    def _send_ack(self, parts: "_Parts", pointer: Pointer, processed: "Future[None]") -> None:
        """Once the worker is done: once every object of the delivery was processed, hand their
        business ACKs over together (one message, see ack_batcher) and settle each when it was
        confirmed. The worker does not wait for the ACK: it takes the next pointer while ACKs
        travel together. A cancelled worker (the replica is stopping) leaves the delivery
        unsettled, for the broker to deliver again."""
        if processed.cancelled():
            return
        error = processed.exception()
        if error is not None:
            self._settle_later(parts, pointer, error)
        done = parts.processed(None if error is not None else pointer)
        if not done:
            return
        try:
            sent = self._acks.submit_all(done)
        except Exception as exc:  # noqa: BLE001 - the ACK publisher closed: settled like a failed ACK
            for each in done:
                self._settle_later(parts, each, self._ack_error(each, exc))
            return
        for each, confirmed in zip(done, sent, strict=True):
            confirmed.add_done_callback(partial(self._ack_confirmed, parts, each))

    def _ack_confirmed(self, parts: "_Parts", pointer: Pointer, confirmed: "Future[None]") -> None:
        self._settle_later(parts, pointer, self._ack_error(pointer, confirmed.exception()))

    @staticmethod
    def _ack_error(pointer: Pointer, error: BaseException | None) -> BaseException | None:
        if error is None or isinstance(error, BrokerRefused):
            return error  # a refusal stops the replica with the broker's reason (see _settle)
        # The publisher already retried; the pointer goes back.
        return AckNotPublished(f"business ACK for object {pointer.object_id} not confirmed: {error}")

    def _settle_later(self, parts: "_Parts", pointer: Pointer, error: BaseException | None) -> None:
        self._loop.call_threadsafe(lambda: self._finish(parts, pointer, error))

    def _explain_missing(self, pointer: Pointer, missing: store.ObjectMissing) -> NoReturn:
        """Raise :class:`AlreadySettled` if the ledger is done with the object, else ``missing`` again.

        Asks the coordinator: a pointer redelivered after this group's ACK was counted and the
        object deleted (a replica died between the ACK's confirm and the pointer's ack) must not
        end as a dead letter. If the coordinator cannot be asked, the pointer is dead-lettered
        as missing (harmless: the object is gone either way), saying so.
        """
        status = fetch_object(self._settings.coordinator_url, pointer.object_id)
        if status is None:
            raise store.ObjectMissing(f"{missing} (the coordinator could not be asked whether it was settled)")
        if status.get("state") == "deleted" and (self._recipient in status.get("confirmed_by", [])
                                                  or status.get("cancelled")):
            why = "its run was cancelled" if status.get("cancelled") else f"{self._recipient} confirmed it before"
            raise AlreadySettled(f"object {pointer.object_id} was deleted: {why}")
        raise missing

    def _finish(self, parts: "_Parts", pointer: Pointer, error: BaseException | None) -> None:
        """On the connection thread: settle the pointer according to what its worker and its ACK did."""
        try:
            self._settle(parts, pointer, error)
        except DependencyDown:
            raise
        except Exception as exc:  # a delivery that cannot be settled is set aside alone
            if not isinstance(exc, (*RETRYABLE, BrokerRefused)):
                log.exception("settling object %s failed", pointer.object_id)
                if not parts.settled:
                    parts.settled = True
                    self._reject(parts.delivery, "internal", brief(repr(exc), 300))
            else:
                raise

    def _settle(self, parts: "_Parts", pointer: Pointer, error: BaseException | None) -> None:
        """Decide the object with :func:`settlement.settle`; once every object the delivery carried
        is decided, carry out what :func:`settlement.combine` makes of their decisions, then count them."""
        delivery = parts.delivery
        decided = settle(error, delivery.delivery_count, pointer.object_id)
        if parts.settled:  # a stop or a failure settled the delivery already
            self._account(pointer, decided)
            return
        if decided.stop is not None:
            parts.settled = True
            delivery.requeue()
            self._account(pointer, decided)
            raise decided.stop  # on the connection's thread: the loop stops (or pauses) with this one-line cause
        parts.decided.append((pointer, decided))
        if len(parts.decided) < parts.count:
            return
        parts.settled = True
        whole = combine([each for _, each in parts.decided])
        if whole.action is Action.DEAD_LETTER:
            self._reject(delivery, whole.reason, whole.detail)
        elif whole.action is Action.RETRY:
            delivery.requeue()
        else:
            delivery.ack()
        for each_pointer, each in parts.decided:
            self._account(each_pointer, each)

    def _account(self, pointer: Pointer, decided: Settlement) -> None:
        """Count and log what became of one object."""
        where = {"object_id": pointer.object_id, "job": pointer.job, "recipient": self._recipient}
        if decided.action is Action.ACKNOWLEDGE:
            self.stats.verified += 1
            self.stats.verified_by_job[pointer.job] = self.stats.verified_by_job.get(pointer.job, 0) + 1
            self.stats.acked += 1
            log.info("verified and acked object %s of job %s", pointer.object_id, pointer.job, extra=where)
        elif decided.action is Action.DEAD_LETTER:
            if decided.reason == "integrity":
                metrics.CHECKSUM_FAILURES.labels(self._recipient).inc()
            return  # counted with its delivery's dead letter (_reject)
        elif decided.detail:
            log.log(logging.INFO if decided.action is Action.ALREADY_SETTLED else logging.WARNING, "%s", decided.detail,
                    extra=where)
        if decided.action is not Action.STOP:
            metrics.CONSUMED.labels(self._recipient, decided.action.value).inc()

    def _reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        if not delivery.channel.is_open:
            return  # the broker delivers it again, and that delivery is judged (and dead-lettered) once
        self.stats.dead_lettered += 1
        metrics.CONSUMED.labels(self._recipient, "dead_lettered").inc()
        metrics.DEAD_LETTERS.labels("consumer", reason).inc()
        dead_letter(self._publisher, delivery, f"{reason}: {detail}")


@dataclass
class _Parts:
    """The pointers one delivery carried (one, or a pointer batch's).

    Worker threads report each processed object (:meth:`processed`, under a lock); the
    connection's thread records each decision and settles the delivery once, when the last
    object is decided.
    """

    delivery: Delivery
    count: int
    decided: list[tuple[Pointer, Settlement]] = field(default_factory=list)
    settled: bool = False
    _processed: int = 0
    _to_confirm: list[Pointer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def processed(self, pointer: Pointer | None) -> list[Pointer]:
        """Record one processed object (``pointer``, or None if it failed); once every object of
        the delivery is processed, the ones to confirm, else nothing."""
        with self._lock:
            self._processed += 1
            if pointer is not None:
                self._to_confirm.append(pointer)
            return self._to_confirm if self._processed == self.count else []


def wait_for_job(coordinator_url: str, job: str, expect: int, stop: threading.Event, poll: float = 0.5) -> None:
    """Set ``stop`` once the coordinator reports ``expect`` objects of ``job`` deleted."""
    while not stop.wait(poll):
        progress = fetch_progress(coordinator_url, job)
        if progress is not None and progress["deleted"] >= expect:
            stop.set()


@dataclass(frozen=True)
class Message:
    """One verified payload, as a :class:`Consumer`'s handler sees it.

    ``payload`` is a binary stream, rewound, of bytes whose size and sha256 matched the signed
    pointer before the handler was called (large payloads are spooled to a temporary file, so
    memory stays flat). ``inline`` says whether the payload travelled inside the pointer.
    """

    pointer: Pointer
    payload: IO[bytes]

    @property
    def object_id(self) -> str:
        return self.pointer.object_id

    @property
    def job(self) -> str:
        return self.pointer.job

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.pointer.recipients

    @property
    def content_type(self) -> str:
        return self.pointer.content_type

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.pointer.metadata or {})

    @property
    def size(self) -> int:
        return self.pointer.payload_size

    @property
    def sha256(self) -> str:
        return self.pointer.payload_sha256

    @property
    def inline(self) -> bool:
        return self.pointer.is_inline

    def read(self) -> bytes:
        """The whole payload (for small ones; stream ``payload`` for large ones)."""
        return self.payload.read()


Handler = Callable[[Message], None]


class Consumer:
    """One replica of recipient group ``recipient``: calls ``handler`` with each verified payload.

    The business ACK is sent only after ``handler`` returned; if it raises, the payload counts
    as not processed: the pointer goes back to the queue, is dead-lettered
    (``processing_failed``) after the queue's delivery limit, and is never acknowledged.
    Up to ``workers`` payloads are verified and handled at once, each on a worker thread, so
    ``handler`` must be thread-safe when ``workers`` > 1.
    """

    def __init__(self, recipient: str, handler: Handler, *, workers: int = 4, settings: Settings | None = None) -> None:
        config = settings or Settings()
        check_envelope("job", [recipient], "application/octet-stream", None, config.allowed_recipients())
        self._replica = RecipientConsumer(config, recipient, lambda pointer, stream: handler(Message(pointer, stream)),
                                          workers)

    @property
    def consuming(self) -> threading.Event:
        """Set while connected and consuming (the group's queue is declared by then)."""
        return self._replica.consuming

    @property
    def stats(self) -> ConsumerStats:
        """What this replica did so far."""
        return self._replica.stats

    def run(self, stop: threading.Event, http_port: int | None = None) -> None:
        """Consume until ``stop`` is set (blocking); with ``http_port``, serve health, readiness and metrics.

        Raises :class:`claimcheck.publisher.BrokerRefused` when the broker refuses for good.
        """
        self._replica.run(stop, http_port)
