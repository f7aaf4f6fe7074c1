"""Count and delete steps: the coordinator, the only writer of the ledger.

It consumes two queues: its copy of every pointer (to learn each object's recipient set), with
the producers' intents and the sweeper's barriers, and the business ACKs. Each read from the
broker is applied to the ledger in one transaction and acknowledged only after that commit;
the transaction runs on a thread of its own (:mod:`claimcheck.ordered_worker`) while the next
read is decoded and verified, and reads are applied and acknowledged in the order they came.
Objects the ledger marks due are deleted by a separate deleter thread holding a lease, so a
crash between the decision and the S3 delete is repaired by whichever coordinator picks the
expired lease up. Several replicas may run at once.

Nothing a publisher sends can stop it: a message that cannot be judged, for whatever reason,
is dead-lettered alone (``internal: <error>``) and consuming goes on.
"""

import hmac
import logging
import os
import queue
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING

import psycopg2
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from claimcheck import metrics, store, topology
from claimcheck.amqp_loop import ConsumerLoop, Delivery, DependencyDown
from claimcheck.config import Settings
from claimcheck.deadletter import dead_letter
from claimcheck.httpapi import Request, Response, Route, routes_for, serve
from claimcheck.judgement import Applied, Message, Outcome
from claimcheck.ledger import DeleteTask, Ledger
from claimcheck.migrate import migrate
from claimcheck.ordered_worker import OrderedWorker
from claimcheck.protocol import (
    ACK_QUEUE_KINDS,
    JOB_PATTERN,
    OBJECT_ID_PATTERN,
    POINTER_QUEUE_KINDS,
    Ack,
    AckBatch,
    AckQueueMessage,
    Barrier,
    IntentBatch,
    InvalidMessage,
    PointerBatch,
    PointerQueueMessage,
    brief,
)
from claimcheck.publisher import BrokerSession
from claimcheck.signing import decode_signed
from claimcheck.sweeper import PointerQueueBarrier, sweep

if TYPE_CHECKING:  # the stubs of the client boto3 builds (dev extras), for the checker only
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)

DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
REJECTED = {Outcome.FOREIGN: "foreign_recipient", Outcome.MISMATCH: "mismatch"}
# Ledger connections the HTTP endpoint may hold at once, whatever the number of requests: the
# consuming path and the deleter have connections of their own that requests cannot take.
HTTP_LEDGER_CONNECTIONS = 4


class Coordinator:
    """One coordinator replica: consumer loop, deleter thread and HTTP endpoint."""

    def __init__(self, settings: Settings, prefetch: int = 1000, lease_seconds: float = 30.0) -> None:
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._settings = settings
        self._s3: S3Client = store.client(settings)
        # Short, so a crashed coordinator's deletes are taken over quickly; renewed while an S3
        # delete is in flight (_renewing), so it never expires while its owner is still deleting.
        self._lease_seconds = lease_seconds
        self._verifier = settings.coordinator_verifier()
        self._control_tokens = [token.encode() for token in settings.accepted_control_tokens()]
        self._ledger = Ledger(settings.database_url, "claimcheck-coordinator")  # the applier thread's
        self._gate_ledger = Ledger(settings.database_url, "claimcheck-coordinator-gate")
        declare = partial(topology.declare_for_coordinator, shards=settings.coordinator_shards)
        self._publisher = BrokerSession(settings.amqp_url, declare, settings.confirm_timeout)
        shards = settings.owned_shards()
        self._pointer_queues = frozenset(topology.coordinator_pointer_queue(shard) for shard in shards)
        self._loop = ConsumerLoop(
            settings.amqp_url,
            declare,
            [queue for queue, _, _ in topology.coordinator_queues(shards)],
            prefetch,
            self._handle,
            gate=self._ledger_down,
            after_read=self._flush,
        )
        self._prefetch = prefetch
        self._batch: list[tuple[Delivery, Message]] = []
        self._applier: OrderedWorker[list[tuple[Delivery, Message]], list[Applied | Exception]] | None = None
        self._due = threading.Event()
        self._http_ledgers = LedgerPool(settings.database_url, HTTP_LEDGER_CONNECTIONS, "claimcheck-coordinator-http")
        self._deleter: threading.Thread | None = None
        self._deleter_problem: str | None = None
        metrics.coordinator_metrics()

    def run(self, stop: threading.Event, http_port: int | None = None) -> None:
        """Serve until ``stop`` is set."""
        migrate(self._settings.database_url)
        if http_port is not None:
            metrics.register_ledger_collector(self._settings.database_url)
        server = serve(http_port, self._routes(), self._settings.http_host) if http_port is not None else None
        self._deleter = threading.Thread(target=self._delete_loop, args=(stop,), name="deleter", daemon=True)
        self._deleter.start()
        threading.Thread(target=self._sweep_loop, args=(stop,), name="sweeper", daemon=True).start()
        self._applier = OrderedWorker(self._apply_each_alone_if_needed, self._settle, self._loop.call_threadsafe,
                                      name="ledger-applier")
        log.info("coordinator %s started", self.owner)
        try:
            self._loop.run(stop)
        finally:
            stop.set()  # the loop may have ended on a refusal: the deleter and sweeper stop with it
            self._applier.close()
            self._deleter.join(timeout=10)
            if server is not None:
                server.shutdown()
            self._publisher.close()
            self._ledger.close()
            self._http_ledgers.close()

    # -- count -----------------------------------------------------------------------------

    def _handle(self, delivery: Delivery) -> None:
        """Decode and verify now; apply with the rest of this read from the broker (see _flush)."""
        kinds: tuple[type[PointerQueueMessage | AckQueueMessage], ...] = (
            POINTER_QUEUE_KINDS if delivery.queue in self._pointer_queues else ACK_QUEUE_KINDS)
        try:
            message = decode_signed(self._verifier, delivery.body, delivery.properties.headers, *kinds,
                                    bucket=self._settings.s3_bucket, key_prefix=self._settings.s3_key_prefix)
        except InvalidMessage as exc:
            self._reject(delivery, exc.category, exc.reason)
            return
        except Exception as exc:  # whatever a message does, it is set aside alone
            log.exception("judging a message from %s failed", delivery.queue)
            self._reject(delivery, "internal", brief(repr(exc), 300))
            return
        # A batch of pointers, ACKs or intents is applied object by object, exactly like single ones.
        self._batch.extend((delivery, one) for one in (
            message.each() if isinstance(message, PointerBatch | AckBatch | IntentBatch) else [message]))
        if len(self._batch) >= self._prefetch:
            self._flush()

    def _flush(self) -> None:
        """Hand the buffered messages to the applier thread, which applies them in one
        transaction; :meth:`_settle` then acks or dead-letters each delivery.

        Broker acks follow the commit, so a crash in between only causes redeliveries, which
        the ledger absorbs. Raises the applier's :class:`DependencyDown` (the ledger is gone),
        so the loop drops the connection and waits for the ledger.
        """
        assert self._applier is not None
        # Deliveries from a connection that died meanwhile are redelivered; leave them to that.
        batch, self._batch = [(d, m) for d, m in self._batch if d.channel.is_open], []
        if batch:
            self._applier.submit(batch)
        else:
            self._applier.raise_failure()

    def _settle(self, batch: list[tuple[Delivery, Message]], outcomes: list[Applied | Exception]) -> None:
        """On the connection's thread, once ``batch`` is committed: count, then ack or dead-letter.

        A delivery that carried several ACKs or intents is dead-lettered (once) if any of them
        was refused; the others stay applied, and applying them again is harmless. Deliveries
        of a connection that died while they were applied are left alone: the broker redelivers
        them (with single active consumer, maybe to a standby replica), and that application
        counts, refuses and dead-letters them, so nothing is counted or dead-lettered twice.
        """
        refusals: dict[int, tuple[str, str]] = {}  # id(delivery) -> the first refusal of its messages
        for (delivery, message), applied in zip(batch, outcomes, strict=True):
            if isinstance(applied, Applied) and applied.delete_decided and not isinstance(message, Barrier):
                log.debug("object %s of job %s is due for deletion (%s)", message.object_id, message.job,
                          applied.outcome.value, extra={"object_id": message.object_id, "job": message.job})
                self._due.set()  # committed either way: the deleter need not wait for its next look
            if not delivery.channel.is_open:
                continue
            if isinstance(applied, Exception):
                refusals.setdefault(id(delivery), ("internal", brief(repr(applied), 300)))
                continue
            metrics.LEDGER_MESSAGES.labels(message.type, applied.outcome.value).inc()
            if isinstance(message, Ack):
                metrics.count_ack(message.recipient, applied.outcome.value)
            if applied.outcome in REJECTED:
                detail = applied.detail if isinstance(message, Barrier) else f"object {message.object_id}: {applied.detail}"
                refusals.setdefault(id(delivery), (REJECTED[applied.outcome], detail))
        counted: list[Delivery] = []
        for delivery in {id(delivery): delivery for delivery, _ in batch}.values():  # each delivery once, in order
            if not delivery.channel.is_open:
                continue
            if id(delivery) in refusals:
                self._reject(delivery, *refusals[id(delivery)])
            else:
                counted.append(delivery)
        # Every delivery up to the last one is now settled (rejects were acked one by one above),
        # so one multiple-ack per channel settles the rest.
        if counted:
            counted[-1].ack_through()

    def _apply_each_alone_if_needed(self, batch: list[tuple[Delivery, Message]]) -> list[Applied | Exception]:
        """The batch in one transaction; if that fails for any reason but the ledger being down,
        each message in a transaction of its own, so that one poison message fails alone."""
        messages = [message for _, message in batch]
        try:
            return list(self._apply(messages))
        except DependencyDown:
            raise
        except Exception:  # found below, message by message
            log.exception("applying a batch of %d messages failed; applying them one by one", len(messages))
        outcomes: list[Applied | Exception] = []
        for message in messages:
            try:
                outcomes.extend(self._apply([message]))
            except DependencyDown:
                raise
            except Exception as exc:  # noqa: BLE001 - this message is the poison: dead-lettered alone
                outcomes.append(exc)
        return outcomes

    def _apply(self, messages: list[Message]) -> list[Applied]:
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
    def _apply_retrying(self, messages: list[Message]) -> list[Applied]:
        try:
            return self._ledger.apply(messages)
        except DB_ERRORS:
            self._ledger.close()
            raise

    def _ledger_down(self) -> str | None:
        try:
            self._gate_ledger.ping()
        except DB_ERRORS as exc:
            return f"ledger unreachable: {exc}".strip()
        finally:  # asked only before (re)connecting: no connection held idle in between
            self._gate_ledger.close()
        return None

    def _reject(self, delivery: Delivery, reason: str, detail: str) -> None:
        metrics.DEAD_LETTERS.labels("coordinator", reason).inc()
        dead_letter(self._publisher, delivery, f"{reason}: {detail}")

    # -- delete ----------------------------------------------------------------------------

    def _delete_loop(self, stop: threading.Event) -> None:
        """Delete what the ledger made due, until ``stop``; never dies of an error.

        Any failure (ledger, S3, anything else) is logged, counted and retried with a growing
        pause, and makes /readyz report why deletions cannot proceed until a pass succeeds.
        """
        ledger = Ledger(self._settings.database_url, "claimcheck-coordinator-deleter")
        failures = 0
        unrecorded: list[DeleteTask] = []  # leased by a failed pass and not given back yet
        while not stop.is_set():
            tasks: list[DeleteTask] = []
            try:
                if unrecorded:  # the ledger answers again: retry them now, not when their lease expires
                    ledger.release_deletions(unrecorded, self.owner, "retried after a failed deleter pass")
                    unrecorded = []
                tasks = ledger.claim_deletions(self.owner, self._lease_seconds, limit=store.MAX_KEYS_PER_DELETE)
                self._record_deleted(ledger, [task for task in tasks if task.key is None])  # inline: nothing stored
                buckets = sorted({task.bucket for task in tasks if task.bucket is not None and task.key is not None})
                refused = sum(self._delete_batch(ledger, bucket, [task for task in tasks if task.bucket == bucket])
                              for bucket in buckets)
            except Exception as exc:  # noqa: BLE001 - logged, counted, reported and retried
                failures += 1
                self._deleter_problem = f"deletions failing: {brief(str(exc) or repr(exc), 300)}"
                metrics.DELETER_ERRORS.inc()
                log.warning("deleter pass failed (%d in a row), will retry: %s", failures, exc)
                unrecorded += tasks
                ledger.close()
                stop.wait(min(0.5 * 2 ** min(failures, 6), 30.0))
                continue
            failures = 0
            if tasks and refused == len(tasks):
                self._deleter_problem = "S3 refused every delete of the last pass; retrying"
            else:
                self._deleter_problem = None
            if not tasks:
                self._due.wait(1.0)
                self._due.clear()
        ledger.close()

    def _delete_batch(self, ledger: Ledger, bucket: str, tasks: list[DeleteTask]) -> int:
        """Delete one bucket's tasks in one request; return how many S3 refused."""
        try:
            with self._renewing(tasks):
                refused = store.delete_many(self._s3, bucket, [task.key for task in tasks if task.key is not None])
        except Exception as exc:  # noqa: BLE001 - any S3 failure is retried later
            refused = {task.key: str(exc) for task in tasks if task.key is not None}
        for key, error in refused.items():
            metrics.DELETE_FAILURES.inc()
            log.warning("deleting s3://%s/%s failed, will retry: %s", bucket, key, error)
        ledger.release_deletions([task for task in tasks if task.key in refused], self.owner,
                                 "; ".join(sorted(set(refused.values())))[:1000])
        self._record_deleted(ledger, [task for task in tasks if task.key not in refused])
        return len(refused)

    def _record_deleted(self, ledger: Ledger, tasks: list[DeleteTask]) -> None:
        """Record deletes done (or, for an inline payload, with nothing stored to delete)."""
        deleted = ledger.mark_deleted(tasks, self.owner)
        finished = datetime.now(timezone.utc)
        for task in deleted:
            metrics.DELETES.inc()
            if task.published_at is not None:
                metrics.PUBLISH_TO_DELETE_SECONDS.observe(max((finished - task.published_at).total_seconds(), 0.0))
            where = "an inline payload, nothing stored" if task.key is None else f"s3://{task.bucket}/{task.key}"
            log.info("deleted %s", where, extra={"object_id": task.object_id})

    @contextmanager
    def _renewing(self, tasks: list[DeleteTask]) -> Iterator[None]:
        """Keep renewing the leases of ``tasks`` (every third of the lease, on a connection of
        its own) while the S3 call in the ``with`` block runs, however long its retries take."""
        done = threading.Event()

        def renew() -> None:
            ledger = Ledger(self._settings.database_url, "claimcheck-coordinator-lease")
            try:
                while not done.wait(self._lease_seconds / 3):
                    try:
                        ledger.renew_leases(tasks, self.owner, self._lease_seconds)
                    except DB_ERRORS as exc:  # the lease may then expire: another owner deletes again, harmlessly
                        log.warning("could not renew %d deletion leases: %s", len(tasks), exc)
                        ledger.close()
            finally:
                ledger.close()

        renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join(timeout=10)

    def _sweep_loop(self, stop: threading.Event) -> None:
        ledger = Ledger(self._settings.database_url, "claimcheck-coordinator-sweeper")
        barrier = PointerQueueBarrier(self._settings, ledger, stop)
        while not stop.wait(self._settings.sweep_interval_seconds):
            try:
                sweep(self._s3, ledger, self._settings.s3_bucket, self._settings.sweep_grace_seconds, barrier,
                      key_prefix=self._settings.s3_key_prefix)
            except Exception as exc:  # noqa: BLE001 - the next pass retries
                log.warning("orphan sweep failed, will retry: %s", exc)
                ledger.close()
        ledger.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        def readiness() -> str | None:
            try:
                with self._http_ledgers.lend() as ledger:
                    ledger.ping()
            except (*DB_ERRORS, LedgerBusy) as exc:
                return f"ledger unreachable: {exc}".strip()
            if self._deleter is not None and not self._deleter.is_alive():
                return "the deleter thread stopped"
            if self._deleter_problem is not None:
                return self._deleter_problem
            return None if self._loop.connected.is_set() else "not consuming from the broker"

        def job(request: Request) -> Response:
            with self._http_ledgers.lend() as ledger:
                return 200, asdict(ledger.job_progress(request["job"]))

        def cancel(request: Request) -> Response:
            if not self._authorized(request):
                metrics.UNAUTHORIZED_REQUESTS.inc()
                return 401, {"error": "DELETE /jobs needs Authorization: Bearer <control token>"}
            with self._http_ledgers.lend() as ledger:
                cancelled = ledger.cancel_job(request["job"])
            log.warning("job %s cancelled: %d pending objects will be deleted", request["job"], cancelled)
            self._due.set()
            return 200, {"job": request["job"], "cancelled": cancelled}

        def object_status(request: Request) -> Response:
            with self._http_ledgers.lend() as ledger:
                status = ledger.object_status(request["object_id"])
            return (404, {"error": "unknown object"}) if status is None else (200, asdict(status))

        job_path = re.compile(rf"^/jobs/(?P<job>{JOB_PATTERN[1:-1]})$")
        object_path = re.compile(rf"^/objects/(?P<object_id>{OBJECT_ID_PATTERN[1:-1]})$")
        return routes_for(readiness, [("GET", job_path, job), ("DELETE", job_path, cancel),
                                      ("GET", object_path, object_status)])


    def _authorized(self, request: Request) -> bool:
        """Whether the request carries one of the control tokens (compared in constant time)."""
        given = (request.bearer_token() or "").encode()
        return bool(given) and any(hmac.compare_digest(given, token) for token in self._control_tokens)


class LedgerBusy(Exception):
    """Every ledger connection the HTTP endpoint may use is in use: the request gets a 503."""


class LedgerPool:
    """At most ``size`` ledger connections, lent to one request at a time each."""

    def __init__(self, dsn: str, size: int, application_name: str, wait: float = 2.0) -> None:
        self._idle: queue.Queue[Ledger] = queue.Queue()
        for _ in range(size):
            self._idle.put(Ledger(dsn, application_name))
        self._wait = wait

    @contextmanager
    def lend(self) -> Iterator[Ledger]:
        """A ledger for the duration of one request; a broken connection is closed, not lent again."""
        try:
            ledger = self._idle.get(timeout=self._wait)
        except queue.Empty:
            raise LedgerBusy("all ledger connections of the HTTP endpoint are busy") from None
        try:
            yield ledger
        except DB_ERRORS:
            ledger.close()
            raise
        finally:
            self._idle.put(ledger)

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
