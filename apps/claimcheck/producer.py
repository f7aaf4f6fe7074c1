"""Produce, store and publish steps: generate payloads, gzip them into S3, publish pointers.

Uploads run in a small thread pool; pointers are published from the calling thread (pika is
not thread-safe) in completion order, each only after its object is fully stored. Before an
upload stores a byte, its intent is published to the coordinator (each upload thread has its
own connection for that), so the orphan sweeper never mistakes an upload in progress for an
orphan; a pointer is published only while that intent is fresh (half the sweep grace period).
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError
from pika.adapters.blocking_connection import BlockingChannel
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from claimcheck import metrics, payload, store, topology
from claimcheck.config import Settings
from claimcheck.protocol import Intent, Pointer, make_pointer, now, object_key
from claimcheck.publisher import BrokerSession, reconnecting
from claimcheck.signing import Signer

log = logging.getLogger(__name__)


@dataclass
class ProduceReport:
    """What one producer run published."""

    job: str
    count: int = 0
    payload_bytes: int = 0
    object_bytes: int = 0
    object_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


def new_job_id() -> str:
    """A job id unique enough for a person's runs: ``run-20261127-112233-ab12``."""
    return f"run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


class IntentExpired(Exception):
    """An upload took so long that its object may already be swept: its pointer is not published."""


def _check_pointer_exchange(channel: BlockingChannel) -> None:
    topology.declare_for_producer(channel, ())


class Announcer:
    """Publishes intents from upload threads, one broker connection per thread.

    Remembers when each intent was confirmed, so that a pointer is never published after the
    sweeper may have taken its object for an orphan.
    """

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self._settings = settings
        self._signer = signer
        self._local = threading.local()
        self._sessions: list[BrokerSession] = []
        self._lock = threading.Lock()
        self._confirmed_at: dict[str, float] = {}
        self.fresh_for = settings.sweep_grace_seconds / 2

    def __call__(self, intent: Intent) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = BrokerSession(self._settings.amqp_url, _check_pointer_exchange,
                                                          self._settings.confirm_timeout)
            with self._lock:
                self._sessions.append(session)
        body = intent.encode()
        session.publish(topology.POINTER_EXCHANGE, topology.COORDINATOR_ROUTING_KEY, body,
                        message_id=f"intent-{intent.object_id}", headers=self._signer.sign(body))
        with self._lock:
            self._confirmed_at[intent.object_id] = time.monotonic()

    def check_fresh(self, pointer: Pointer) -> None:
        """Raise :class:`IntentExpired` if ``pointer``'s intent is older than ``fresh_for`` seconds."""
        with self._lock:
            confirmed_at = self._confirmed_at.pop(pointer.object_id)
        age = time.monotonic() - confirmed_at
        if age > self.fresh_for:
            raise IntentExpired(f"object {pointer.object_id} took {age:.0f} s from intent to pointer, more than half "
                                f"the sweep grace period ({self.fresh_for * 2:.0f} s); its pointer is not published")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for session in self._sessions:
                session.close()


_log_upload_retry = before_sleep_log(log, logging.WARNING)


def _before_upload_retry(state: Any) -> None:
    _log_upload_retry(state)
    metrics.UPLOAD_RETRIES.inc()


def store_payload(s3: Any, settings: Settings, job: str, seq: int, size: int, recipients: Sequence[str],
                  announce: Callable[[Intent], None] | None = None) -> Pointer:
    """Announce, generate, gzip and upload one payload; return the pointer describing it.

    The intent is published once; an S3 outage is then waited out with backoff, each attempt
    storing the whole object again under the same key (a failed multipart upload is aborted by
    boto3), so no half-written object is ever pointed at. Without ``announce`` the upload is
    not announced (tests of the sweeper's other defences).
    """
    started = time.monotonic()
    object_id = uuid.uuid4().hex
    key = object_key(job, object_id)
    if announce is not None:
        announce(Intent(object_id=object_id, job=job, bucket=settings.s3_bucket, key=key, created_at=now()))
    stream = _upload(s3, settings.s3_bucket, key, lambda: payload.generate(size, job, object_id, seq))
    metrics.UPLOAD_SECONDS.observe(time.monotonic() - started)
    return make_pointer(
        object_id=object_id,
        job=job,
        bucket=settings.s3_bucket,
        key=key,
        payload_size=stream.payload_size,
        payload_sha256=stream.payload_hash.hexdigest(),
        object_size=stream.object_size,
        object_sha256=stream.object_hash.hexdigest(),
        recipients=recipients,
    )


@retry(
    retry=retry_if_exception_type(BotoCoreError),
    wait=wait_random_exponential(multiplier=0.5, max=5),
    stop=stop_after_delay(300),
    before_sleep=_before_upload_retry,
    reraise=True,
)
def _upload(s3: Any, bucket: str, key: str, chunks: Callable[[], Iterator[bytes]]) -> payload.GzipHashingReader:
    stream = payload.GzipHashingReader(chunks())
    store.upload(s3, bucket, key, stream)
    return stream


def publish_pointer(broker: BrokerSession, signer: Signer, pointer: Pointer) -> None:
    """One signed, confirmed publish that the broker fans out to the coordinator and every recipient."""
    body = pointer.encode()
    broker.publish(
        topology.POINTER_EXCHANGE,
        topology.COORDINATOR_ROUTING_KEY,
        body,
        message_id=pointer.object_id,
        headers={"CC": list(pointer.recipients), **signer.sign(body)},
    )


@dataclass(frozen=True)
class RunRequest:
    """What one producer run sends.

    ``rate`` > 0 caps publishing at that many pointers per second (an offered load for
    benchmarks, or to share the broker politely); 0 publishes as fast as uploads finish.
    """

    job: str
    count: int
    size: int
    recipients: Sequence[str]
    parallelism: int = 2
    rate: float = 0.0


def produce(settings: Settings, request: RunRequest) -> Iterator[Pointer]:
    """Store and publish the run's payloads; yield each pointer once the broker confirmed it."""
    job, recipients, rate = request.job, request.recipients, request.rate
    s3 = store.client(settings)  # the bucket exists: provisioning made it (a producer may not)
    broker = BrokerSession(
        settings.amqp_url, lambda channel: topology.declare_for_producer(channel, recipients), settings.confirm_timeout
    )
    signer = settings.pointer_signer()
    announce = Announcer(settings, signer)
    reconnecting(broker.channel)()  # declare the recipients' queues before the first pointer can be routed
    uploads = ThreadPoolExecutor(max_workers=request.parallelism, thread_name_prefix="upload")
    started = time.monotonic()

    def paced(seq: int) -> Pointer:
        # Pace the uploads, not the publishes: otherwise every object is stored at full
        # speed and then waits unreferenced in S3, and pointer.created_at says nothing.
        if rate > 0:
            time.sleep(max(0.0, started + seq / rate - time.monotonic()))
        return store_payload(s3, settings, job, seq, request.size, recipients, announce)

    try:
        for pointer in uploads.map(paced, range(request.count)):
            announce.check_fresh(pointer)
            with metrics.PUBLISH_SECONDS.time():
                publish_pointer(broker, signer, pointer)
            metrics.PUBLISHED_OBJECTS.inc()
            metrics.PUBLISHED_BYTES.inc(pointer.payload_size)
            metrics.STORED_BYTES.inc(pointer.object_size)
            log.info("published object %s of job %s", pointer.object_id, job,
                     extra={"object_id": pointer.object_id, "job": job})
            yield pointer
    finally:
        # A failed or abandoned run starts no further uploads (each would be an orphan).
        uploads.shutdown(wait=True, cancel_futures=True)
        broker.close()
        announce.close()


def run(settings: Settings, request: RunRequest,
        on_published: Callable[[Pointer], None] | None = None) -> ProduceReport:
    """Produce a whole run and report its totals; ``on_published`` sees each confirmed pointer."""
    report = ProduceReport(request.job)
    started = time.monotonic()
    for pointer in produce(settings, request):
        report.count += 1
        report.payload_bytes += pointer.payload_size
        report.object_bytes += pointer.object_size
        report.object_ids.append(pointer.object_id)
        if on_published is not None:
            on_published(pointer)
    report.seconds = time.monotonic() - started
    return report
