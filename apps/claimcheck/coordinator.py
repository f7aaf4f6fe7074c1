"""Count and delete steps: the coordinator, the only writer of the ledger.

It consumes two queues: its copy of every pointer (to learn each object's recipient set) and
the business ACKs. Each message is applied to the ledger in one transaction and acknowledged to
the broker only after that commit. Objects the ledger marks due are deleted by a separate
deleter thread holding a lease, so a crash between the decision and the S3 delete is repaired
by whichever coordinator picks the expired lease up. Several replicas may run at once.
"""

import logging
import os
import re
import socket
import threading
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import psycopg2
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from claimcheck import metrics, store, topology
from claimcheck.broker import BrokerSession
from claimcheck.config import Settings
from claimcheck.consuming import ConsumerLoop, Delivery, DependencyDown
from claimcheck.deadletter import dead_letter
from claimcheck.httpapi import Response, Route, routes_for, serve
from claimcheck.ledger import Applied, DeleteTask, Ledger, Outcome
from claimcheck.protocol import Ack, InvalidMessage, Pointer
from claimcheck.schema import migrate
from claimcheck.signing import decode_signed
from claimcheck.sweeper import sweep

log = logging.getLogger(__name__)

DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
REJECTED = {Outcome.FOREIGN: "foreign_recipient", Outcome.MISMATCH: "mismatch"}


class Coordinator:
    """One coordinator replica: consumer loop, deleter thread and HTTP endpoint."""

    def __init__(self, settings: Settings, prefetch: int = 1000, lease_seconds: float = 30.0) -> None:
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._settings = settings
        self._lease_seconds = lease_seconds
        self._keyring = settings.keyring()
        self._ledger = Ledger(settings.database_url)
        self._publisher = BrokerSession(settings.amqp_url, topology.declare, settings.confirm_timeout)
        self._loop = ConsumerLoop(
            settings.amqp_url,
            topology.declare,
            [topology.COORDINATOR_POINTER_QUEUE, topology.ACK_QUEUE],
            prefetch,
            self._handle,
            gate=self._ledger_down,
            after_read=self._flush,
        )
        self._prefetch = prefetch
        self._batch: list[tuple[Delivery, Pointer | Ack]] = []
        self._due = threading.Event()
        self._http_ledgers = threading.local()
        metrics.coordinator_metrics()

    def run(self, stop: threading.Event, http_port: int | None = None) -> None:
        """Serve until ``stop`` is set."""
        migrate(self._settings.database_url)
        if http_port is not None:
            metrics.register_ledger_collector(self._settings.database_url)
        server = serve(http_port, self._routes()) if http_port is not None else None
        deleter = threading.Thread(target=self._delete_loop, args=(stop,), name="deleter", daemon=True)
        deleter.start()
        threading.Thread(target=self._sweep_loop, args=(stop,), name="sweeper", daemon=True).start()
        log.info("coordinator %s started", self.owner)
        try:
            self._loop.run(stop)
        finally:
            deleter.join(timeout=10)
            if server is not None:
                server.shutdown()
            self._publisher.close()
            self._ledger.close()

    # -- count -----------------------------------------------------------------------------

    def _handle(self, delivery: Delivery) -> None:
        """Decode and verify now; apply with the rest of this read from the broker (see _flush)."""
        kind: type[Pointer] | type[Ack] = Pointer if delivery.queue == topology.COORDINATOR_POINTER_QUEUE else Ack
        try:
            message = decode_signed(self._keyring, delivery.body, delivery.properties.headers, kind)
        except InvalidMessage as exc:
            self._reject(delivery, exc.category, exc.reason)
            return
        self._batch.append((delivery, message))
        if len(self._batch) >= self._prefetch:
            self._flush()

    def _flush(self) -> None:
        """Apply the buffered messages in one transaction, then ack or dead-letter each.

        Broker acks follow the commit, so a crash in between only causes redeliveries, which
        the ledger absorbs.
        """
        # Deliveries from a connection that died meanwhile are redelivered; leave them to that.
        batch, self._batch = [(d, m) for d, m in self._batch if d.channel.is_open], []
        if not batch:
            return
        results = self._apply([message for _, message in batch])
        counted: list[Delivery] = []
        for (delivery, message), applied in zip(batch, results, strict=True):
            metrics.LEDGER_MESSAGES.labels(message.type, applied.outcome.value).inc()
            if isinstance(message, Ack):
                metrics.count_ack(message.recipient, applied.outcome.value)
            if applied.outcome in REJECTED:
                self._reject(delivery, REJECTED[applied.outcome], applied.detail)
                continue
            counted.append(delivery)
            if applied.delete_decided:
                log.debug("object %s of job %s confirmed by every recipient; deleting", message.object_id, message.job,
                         extra={"object_id": message.object_id, "job": message.job})
                self._due.set()
        # Every delivery up to the last one is now settled (rejects were acked one by one above),
        # so one multiple-ack per channel settles the rest.
        if counted:
            counted[-1].ack_through()

    def _apply(self, messages: list[Pointer | Ack]) -> list[Applied]:
        """Apply with short retries; a longer outage pauses consuming (see DependencyDown)."""
        try:
            return self._apply_retrying(messages)
        except DB_ERRORS as exc:
            raise DependencyDown(f"ledger unreachable: {exc}".strip()) from exc

    @retry(
        retry=retry_if_exception_type(DB_ERRORS),
        wait=wait_random_exponential(multiplier=0.2, max=2),
        stop=stop_after_delay(10),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    def _apply_retrying(self, messages: list[Pointer | Ack]) -> list[Applied]:
        try:
            return self._ledger.apply(messages)
        except DB_ERRORS:
            self._ledger.close()
            raise

    def _ledger_down(self) -> str | None:
        try:
            self._ledger.ping()
        except DB_ERRORS as exc:
            self._ledger.close()
            return f"ledger unreachable: {exc}".strip()
        return None

    def _reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        metrics.DEAD_LETTERS.labels("coordinator", reason).inc()
        dead_letter(self._publisher, delivery, f"{reason}: {detail}")

    # -- delete ----------------------------------------------------------------------------

    def _delete_loop(self, stop: threading.Event) -> None:
        ledger = Ledger(self._settings.database_url)
        s3 = store.client(self._settings)
        while not stop.is_set():
            try:
                tasks = ledger.claim_deletions(self.owner, self._lease_seconds, limit=store.MAX_KEYS_PER_DELETE)
                for bucket in sorted({task.bucket for task in tasks}):
                    self._delete_batch(ledger, s3, bucket, [task for task in tasks if task.bucket == bucket])
            except DB_ERRORS as exc:
                # Also from mark_deleted/release_deletion: a lease this pass could not record
                # expires and the (idempotent) S3 delete is retried then.
                log.warning("ledger unavailable for deletions: %s", exc)
                ledger.close()
                stop.wait(1.0)
                continue
            if not tasks:
                self._due.wait(1.0)
                self._due.clear()
        ledger.close()

    def _delete_batch(self, ledger: Ledger, s3: Any, bucket: str, tasks: list[DeleteTask]) -> None:
        try:
            refused = store.delete_many(s3, bucket, [task.key for task in tasks])
        except Exception as exc:  # noqa: BLE001 - any S3 failure is retried later
            refused = {task.key: str(exc) for task in tasks}
        for task in tasks:
            if task.key in refused:
                metrics.DELETE_FAILURES.inc()
                log.warning("deleting s3://%s/%s failed, will retry: %s", bucket, task.key, refused[task.key])
                ledger.release_deletion(task, self.owner, refused[task.key])
        deleted = ledger.mark_deleted([task for task in tasks if task.key not in refused], self.owner)
        finished = datetime.now(timezone.utc)
        for task in deleted:
            metrics.DELETES.inc()
            if task.published_at is not None:
                metrics.PUBLISH_TO_DELETE_SECONDS.observe(max((finished - task.published_at).total_seconds(), 0.0))
            log.info("deleted s3://%s/%s", bucket, task.key, extra={"object_id": task.object_id})

    def _sweep_loop(self, stop: threading.Event) -> None:
        ledger = Ledger(self._settings.database_url)
        s3 = store.client(self._settings)
        while not stop.wait(self._settings.sweep_interval_seconds):
            try:
                sweep(s3, ledger, self._settings.s3_bucket, self._settings.sweep_grace_seconds)
            except Exception as exc:  # noqa: BLE001 - the next pass retries
                log.warning("orphan sweep failed, will retry: %s", exc)
                ledger.close()
        ledger.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _http_ledger(self) -> Ledger:
        ledger = getattr(self._http_ledgers, "ledger", None)
        if ledger is None:
            ledger = self._http_ledgers.ledger = Ledger(self._settings.database_url)
        return ledger

    def _routes(self) -> list[Route]:
        def readiness() -> str | None:
            try:
                self._http_ledger().ping()
            except DB_ERRORS as exc:
                self._http_ledger().close()
                return f"ledger unreachable: {exc}".strip()
            return None if self._loop.connected.is_set() else "not consuming from the broker"

        def job(match: re.Match[str]) -> Response:
            return 200, asdict(self._http_ledger().job_progress(match["job"]))

        def cancel(match: re.Match[str]) -> Response:
            cancelled = self._http_ledger().cancel_job(match["job"])
            log.warning("job %s cancelled: %d pending objects will be deleted", match["job"], cancelled)
            self._due.set()
            return 200, {"job": match["job"], "cancelled": cancelled}

        job_path = re.compile(r"^/jobs/(?P<job>[A-Za-z0-9._-]+)$")
        return routes_for(readiness, [("GET", job_path, job), ("DELETE", job_path, cancel)])
