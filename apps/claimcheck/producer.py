"""Produce, store and publish steps: :class:`Producer` (the library's sender) and the synthetic
run ``claimcheck producer`` makes with it.

A payload up to the inline threshold travels inside its signed pointer (base64, with its
sha256) and never touches S3. A larger one is gzipped as a stream into S3 and its pointer is
published only after the object is fully stored. Before an upload stores a byte, its intent is
published to the coordinator, so the orphan sweeper never mistakes an upload in progress for an
orphan; a pointer is published only while that intent is fresh (half the sweep grace period).
The synthetic run uploads in a small thread pool, one Producer (one connection) per thread;
its next uploads are announced ahead, several per message (:class:`AheadAnnouncer`), and
pointers ready together are published together (:class:`PointerBatcher`): fewer broker
messages per object.
"""

import base64
import collections
import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError
from pika.adapters.blocking_connection import BlockingChannel
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from claimcheck import metrics, payload, store, topology
from claimcheck.config import Settings
from claimcheck.group_commit import GroupCommit
from claimcheck.protocol import (
    MAX_INLINE_BYTES,
    MAX_INTENTS_PER_BATCH,
    MAX_MESSAGE_BYTES,
    MAX_POINTERS_PER_BATCH,
    OBJECT_KEY_EXTENSION,
    AnnouncedObject,
    Intent,
    IntentBatch,
    Pointer,
    PointerBatch,
    check_envelope,
    make_pointer,
    now,
    object_key,
)
from claimcheck.publisher import BrokerSession, reconnecting
from claimcheck.signing import Signer
from claimcheck.sources import Data, Source, peek, source_of
from claimcheck.store import StorageOptions

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


def _intent_message(intent: Intent) -> tuple[bytes, str]:
    """The body and message id of one intent, published alone or by an :class:`IntentBatcher`."""
    return intent.encode(), f"intent-{intent.object_id}"


class IntentBatcher(GroupCommit[Intent]):
    """Intents of several upload threads, published together (see :mod:`claimcheck.group_commit`).

    Shared by the Producers of one process's threads (``Producer(intents=...)``), it announces
    uploads that start together in one :class:`~claimcheck.protocol.IntentBatch`: one enqueue
    and one coordinator settlement for several objects. A lone intent travels as an
    :class:`~claimcheck.protocol.Intent`, so an idle producer waits no longer than alone.
    """

    def __init__(self, settings: Settings, signer: Signer | None = None) -> None:
        shards = settings.coordinator_shards
        super().__init__(BrokerSession(settings.amqp_url, lambda channel: topology.declare_for_producer(channel, (), shards),
                                       settings.confirm_timeout),
                         signer or settings.pointer_signer(), topology.POINTER_EXCHANGE,
                         lambda intent: topology.coordinator_route(intent.object_id, shards), MAX_INTENTS_PER_BATCH,
                         "intents")

    def _identity(self, item: Intent) -> str:
        return item.object_id

    def _encode(self, items: list[Intent]) -> tuple[bytes, str]:
        if len(items) == 1:
            return _intent_message(items[0])
        batch = IntentBatch(created_at=now(), intents=tuple(
            AnnouncedObject(object_id=i.object_id, job=i.job, bucket=i.bucket, key=i.key) for i in items))
        return batch.encode(), f"intents-{items[0].object_id}+{len(items) - 1}"


class Announcement(NamedTuple):
    """An upload announced ahead: the object id and key its intent names, and when that intent was confirmed."""

    object_id: str
    key: str
    at: float


class AheadAnnouncer:
    """Announces a run's next uploads ahead, up to ``window`` in one :class:`IntentBatch`.

    Each upload thread takes an object id whose intent is already confirmed, so a run of ``count``
    objects costs about ``count / window`` intent messages instead of about one per object. The
    window is small next to the sweep grace period: a pointer is still published only while its
    intent is fresh (:class:`IntentExpired`).
    """

    def __init__(self, intents: IntentBatcher, settings: Settings, job: str, count: int, window: int) -> None:
        self._intents = intents
        self._settings = settings
        self._job = job
        self._left = count
        self._window = max(1, min(window, MAX_INTENTS_PER_BATCH))
        self._ready: collections.deque[Announcement] = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> Announcement:
        """The next announced object id, announcing the next window's first if none is left."""
        with self._lock:
            if not self._ready:
                self._announce(min(self._window, self._left))
            return self._ready.popleft()

    def _announce(self, count: int) -> None:
        if count < 1:
            raise RuntimeError("every upload of the run was announced")
        intents = [Intent(object_id=object_id, job=self._job, bucket=self._settings.s3_bucket,
                          key=object_key(self._job, object_id, OBJECT_KEY_EXTENSION, self._settings.s3_key_prefix),
                          created_at=now())
                   for object_id in (uuid.uuid4().hex for _ in range(count))]
        for sent in self._intents.submit_all(intents):
            sent.result()
        at = time.monotonic()
        self._left -= count
        self._ready.extend(Announcement(intent.object_id, intent.key, at) for intent in intents)


# How long the first pointer of a message waits for others. Upload threads do not wait for it:
# they hand the pointer over and start the next upload, so it costs latency, not throughput.
POINTER_LINGER = 0.05


class PointerBatcher(GroupCommit[Pointer]):
    """Pointers of several upload threads, published together (see :mod:`claimcheck.group_commit`).

    Shared by the Producers of one process's threads (``Producer(pointers=...)``), it publishes
    the stored objects' pointers for the same groups and coordinator shard that are ready within
    ``linger`` of each other as one :class:`~claimcheck.protocol.PointerBatch`, fanned out like a
    pointer: one enqueue per queue, and one settlement per reader, for several objects. A lone
    pointer, an inline one and one with much metadata travel as a :class:`~claimcheck.protocol.Pointer`.
    """

    def __init__(self, settings: Settings, signer: Signer | None = None, linger: float = POINTER_LINGER) -> None:
        shards = settings.coordinator_shards
        super().__init__(BrokerSession(settings.amqp_url, lambda channel: topology.declare_for_producer(channel, (), shards),
                                       settings.confirm_timeout),
                         signer or settings.pointer_signer(), topology.POINTER_EXCHANGE,
                         lambda pointer: topology.coordinator_route(pointer.object_id, shards), MAX_POINTERS_PER_BATCH,
                         "pointers", linger)
        self._preparing = 0  # payloads being stored whose pointers will be handed over

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Around storing a payload and handing its pointer over: while any is on, the first
        pointer of a message waits for company (up to the linger); once none is, it goes, so
        an idle or lightly loaded producer adds little delay."""
        with self._lock:
            self._preparing += 1
        try:
            yield
        finally:
            with self._lock:
                self._preparing -= 1
                idle = self._preparing == 0
            if idle:
                self._nudge()  # a pointer lingering for company need not wait any longer

    def _company_coming(self) -> bool:
        return self._preparing > 0

    def _identity(self, item: Pointer) -> str:
        return item.object_id

    def _company(self, item: Pointer) -> Hashable:
        # An inline pointer, or one with much metadata, travels alone.
        return item.recipients if PointerBatch.can_carry(item) else item.object_id

    def _headers(self, items: list[Pointer]) -> dict[str, object]:
        return {"CC": list(items[0].recipients)}  # the broker fans the message out to each group's queue

    def _encode(self, items: list[Pointer]) -> tuple[bytes, str]:
        if len(items) == 1:
            return items[0].encode(), items[0].object_id
        batch = PointerBatch(created_at=now(), pointers=tuple(items))
        return batch.encode(), f"pointers-{items[0].object_id}+{len(items) - 1}"


_log_upload_retry = before_sleep_log(log, logging.WARNING)


def _before_upload_retry(state: Any) -> None:
    _log_upload_retry(state)
    metrics.UPLOAD_RETRIES.inc()


def store_payload(s3: Any, settings: Settings, job: str, seq: int, size: int, recipients: Sequence[str],
                  announce: Callable[[Intent], None] | None = None) -> Pointer:
    """Announce, generate, gzip and upload one synthetic payload; return the pointer describing it.

    Without ``announce`` the upload is not announced (tests of the sweeper's other defences).
    """
    object_id = uuid.uuid4().hex
    source = Source(lambda: payload.generate(size, job, object_id, seq), replayable=True)
    return _stored_pointer(s3, settings, StorageOptions.from_settings(settings), object_id, job, source, recipients,
                           announce=announce)


def _stored_pointer(s3: Any, settings: Settings, storage: StorageOptions, object_id: str, job: str, source: Source,
                    recipients: Sequence[str], announce: Callable[[Intent], None] | None,
                    content_type: str = "application/json", metadata: Mapping[str, str] | None = None) -> Pointer:
    """Announce, gzip and upload one payload; return the pointer describing it.

    The intent is published once; an S3 outage is then waited out with backoff when the source
    can be read again, each attempt storing the whole object again under the same key (a failed
    multipart upload is aborted by boto3), so no half-written object is ever pointed at.
    """
    started = time.monotonic()
    extension = OBJECT_KEY_EXTENSION if content_type == "application/json" else "bin.gz"
    bucket = settings.s3_bucket
    key = object_key(job, object_id, extension, settings.s3_key_prefix)
    if announce is not None:
        announce(Intent(object_id=object_id, job=job, bucket=bucket, key=key, created_at=now()))
    extra_args, key_md5 = storage.upload_args(job)
    upload = _upload_retrying if source.replayable else _upload
    stream = upload(s3, bucket, key, source.chunks, extra_args)
    metrics.UPLOAD_SECONDS.observe(time.monotonic() - started)
    return make_pointer(
        object_id=object_id, job=job, bucket=bucket, key=key, content_type=content_type,
        payload_size=stream.payload_size, payload_sha256=stream.payload_hash.hexdigest(),
        object_size=stream.object_size,
        recipients=recipients, metadata=dict(metadata) if metadata else None, sse_customer_key_md5=key_md5,
    )


def _inline_pointer(object_id: str, job: str, data: bytes, recipients: Sequence[str], content_type: str,
                    metadata: Mapping[str, str] | None) -> Pointer:
    return make_pointer(
        object_id=object_id, job=job, content_type=content_type, content_encoding="identity",
        payload_size=len(data), payload_sha256=hashlib.sha256(data).hexdigest(),
        inline=base64.b64encode(data).decode(), recipients=recipients, metadata=dict(metadata) if metadata else None,
    )


def _upload(s3: Any, bucket: str, key: str, chunks: Callable[[], Iterator[bytes]],
            extra_args: Mapping[str, Any]) -> payload.GzipHashingReader:
    stream = payload.GzipHashingReader(chunks())
    store.upload(s3, bucket, key, stream, extra_args)
    return stream


_upload_retrying = retry(
    retry=retry_if_exception_type(BotoCoreError),
    wait=wait_random_exponential(multiplier=0.5, max=5),
    stop=stop_after_delay(300),
    before_sleep=_before_upload_retry,
    reraise=True,
)(_upload)


def _published(pointer: Pointer, seconds: float) -> None:
    """Count and log a pointer the broker confirmed."""
    metrics.PUBLISH_SECONDS.observe(seconds)
    metrics.PUBLISHED_OBJECTS.inc()
    metrics.PUBLISHED_BYTES.inc(pointer.payload_size)
    metrics.STORED_BYTES.inc(pointer.object_size or 0)
    log.info("published object %s of job %s%s", pointer.object_id, pointer.job, " inline" if pointer.is_inline else "",
             extra={"object_id": pointer.object_id, "job": pointer.job})


def publish_pointer(broker: BrokerSession, signer: Signer, pointer: Pointer, shards: int = 1) -> None:
    """One signed, confirmed publish that the broker fans out to the object's coordinator shard
    and every recipient."""
    body = pointer.encode()
    broker.publish(
        topology.POINTER_EXCHANGE,
        topology.coordinator_route(pointer.object_id, shards),
        body,
        message_id=pointer.object_id,
        headers={"CC": list(pointer.recipients), **signer.sign(body)},
    )


class Producer:
    """Sends payloads to recipient groups: inline up to the threshold, through S3 above it.

    One broker connection and one S3 client; **not thread-safe**: use one Producer per thread.
    A context manager: leaving the ``with`` block closes the connection.

    ``settings`` defaults to the ``CLAIMCHECK_*`` environment; ``job`` names the run the payloads
    belong to (default: a new ``run-...`` id, see :attr:`job`); ``inline_threshold`` overrides
    ``CLAIMCHECK_INLINE_THRESHOLD``; ``always_through_s3`` stores every payload in S3;
    ``storage`` (server-side encryption, tags) overrides the ``CLAIMCHECK_S3_*`` settings;
    ``intents``, one :class:`IntentBatcher` shared by the Producers of several threads, announces
    their uploads together (fewer broker messages per object; the caller closes it), and
    ``pointers``, one :class:`PointerBatcher` likewise, publishes their pointers together.
    """

    def __init__(self, settings: Settings | None = None, *, job: str | None = None, inline_threshold: int | None = None,
                 always_through_s3: bool = False, storage: StorageOptions | None = None,
                 intents: IntentBatcher | None = None, pointers: PointerBatcher | None = None) -> None:
        self._settings = settings or Settings()
        self.job = job or new_job_id()
        self._inline_threshold = 0 if always_through_s3 else (
            self._settings.inline_threshold if inline_threshold is None else inline_threshold)
        if not 0 <= self._inline_threshold <= MAX_INLINE_BYTES:
            raise ValueError(f"inline_threshold must be between 0 and {MAX_INLINE_BYTES} bytes")
        self._storage = storage or StorageOptions.from_settings(self._settings)
        self._signer = self._settings.pointer_signer()
        self._allowed = self._settings.allowed_recipients()
        self._s3: Any = None
        self._checked: set[str] = set()  # recipient groups whose queues exist
        self._broker = BrokerSession(self._settings.amqp_url, self._declare, self._settings.confirm_timeout)
        self._fresh_for = self._settings.sweep_grace_seconds / 2
        self._intents = intents
        self._pointers = pointers

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the broker connection."""
        self._broker.close()

    def _declare(self, channel: BlockingChannel) -> None:
        topology.declare_for_producer(channel, sorted(self._checked), self._settings.coordinator_shards)

    def send(self, data: Data, *, recipients: Sequence[str], job: str | None = None,
             content_type: str = "application/octet-stream", metadata: Mapping[str, str] | None = None) -> Pointer:
        """Send one payload to every group in ``recipients``; return its pointer once the broker confirmed it.

        ``data`` is bytes, a binary file object (read from its current position), a
        ``pathlib.Path`` or an iterable of byte chunks; memory stays flat whatever its size.
        ``metadata`` is a small map of printable strings delivered, signed, to every recipient.
        Raises ValueError for invalid arguments before anything is sent, and
        :class:`claimcheck.publisher.BrokerRefused` / ``NotProvisioned`` when the broker refuses.
        """
        source = source_of(data)
        return self.send_source(lambda _: source, recipients=recipients, job=job, content_type=content_type, metadata=metadata)

    def send_source(self, make_source: Callable[[str], Source], *, recipients: Sequence[str], job: str | None,
                    content_type: str, metadata: Mapping[str, str] | None) -> Pointer:
        """:meth:`send` with the payload's source made from its object id (the synthetic payloads name it)."""
        pointer, sent = self.submit_source(make_source, recipients=recipients, job=job, content_type=content_type,
                                           metadata=metadata)
        sent.result()
        return pointer

    def submit_source(self, make_source: Callable[[str], Source], *, recipients: Sequence[str], job: str | None,
                      content_type: str, metadata: Mapping[str, str] | None,
                      announced: Announcement | None = None) -> "tuple[Pointer, Future[None]]":
        """:meth:`send_source` without waiting for the broker: the future is done once the pointer
        was confirmed (with a :class:`PointerBatcher`, maybe in one message with others), or
        failed with the publish's error. The payload is stored (or inlined) when this returns.
        ``announced``: the payload is stored under that object id, whose intent was published
        (:class:`AheadAnnouncer`)."""
        job = job or self.job
        check_envelope(job, recipients, content_type, metadata, self._allowed)
        self._check_queues(recipients)
        with self._pointers.preparing() if self._pointers is not None else contextlib.nullcontext():
            return self._prepare_and_hand_over(make_source, recipients, job, content_type, metadata, announced)

    def _prepare_and_hand_over(self, make_source: Callable[[str], Source], recipients: Sequence[str], job: str,
                               content_type: str, metadata: Mapping[str, str] | None,
                               announced: Announcement | None) -> "tuple[Pointer, Future[None]]":
        object_id = announced.object_id if announced else uuid.uuid4().hex
        source = make_source(object_id)
        pointer = None
        if self._inline_threshold > 0 and announced is None:
            whole, source = peek(source, self._inline_threshold)
            if whole is not None:
                pointer = _inline_pointer(object_id, job, whole, recipients, content_type, metadata)
                if len(pointer.encode()) > MAX_MESSAGE_BYTES:  # a long recipient list and metadata: store it
                    pointer = None
        if pointer is None:
            pointer = self._store(object_id, job, source, recipients, content_type, metadata, announced)
        started = time.monotonic()
        if self._pointers is not None:
            sent = self._pointers.submit(pointer)
        else:
            sent = Future()
            publish_pointer(self._broker, self._signer, pointer, self._settings.coordinator_shards)
            sent.set_result(None)

        def confirmed(done: "Future[None]") -> None:
            if done.exception() is None:
                _published(pointer, time.monotonic() - started)

        sent.add_done_callback(confirmed)
        return pointer, sent

    def _store(self, object_id: str, job: str, source: Source, recipients: Sequence[str], content_type: str,
               metadata: Mapping[str, str] | None, ahead: Announcement | None) -> Pointer:
        if self._s3 is None:
            self._s3 = store.client(self._settings)  # the bucket exists: provisioning made it (a producer may not)
        announced: list[float] = []

        def announce(intent: Intent) -> None:
            if ahead is not None:
                if intent.key != ahead.key:
                    raise ValueError(f"object {object_id} was announced under another key than {intent.key}")
                announced.append(ahead.at)
                return
            if self._intents is not None:
                self._intents.confirm(intent)
            else:
                body, message_id = _intent_message(intent)
                self._broker.publish(topology.POINTER_EXCHANGE,
                                     topology.coordinator_route(intent.object_id, self._settings.coordinator_shards), body,
                                     message_id=message_id, headers=self._signer.sign(body))
            announced.append(time.monotonic())

        pointer = _stored_pointer(self._s3, self._settings, self._storage, object_id, job, source, recipients, announce,
                                  content_type, metadata)
        age = time.monotonic() - announced[0]
        if age > self._fresh_for:
            raise IntentExpired(f"object {object_id} took {age:.0f} s from intent to pointer, more than half the "
                                f"sweep grace period ({self._fresh_for * 2:.0f} s); its pointer is not published")
        return pointer

    def _check_queues(self, recipients: Sequence[str]) -> None:
        """Check once per group that its queue exists (a pointer it would miss is never confirmed)."""
        new = set(recipients) - self._checked
        if new:
            self._checked |= new
            try:
                # The shards' queues were checked on connecting (_declare): only the new groups' here.
                reconnecting(lambda: topology.declare_for_producer(self._broker.channel(), sorted(new), shards=0))()
            except BaseException:
                self._checked -= new
                self._broker.close()
                raise


@dataclass(frozen=True)
class RunRequest:
    """What one producer run sends: ``count`` synthetic JSON payloads of ``size`` bytes.

    ``rate`` > 0 caps publishing at that many pointers per second (an offered load for
    benchmarks, or to share the broker politely); 0 publishes as fast as uploads finish.
    ``inline`` lets payloads up to the inline threshold travel inside the pointer; off by
    default, so the run exercises (and the benchmarks measure) the S3 path.
    """

    job: str
    count: int
    size: int
    recipients: Sequence[str]
    parallelism: int = 2
    rate: float = 0.0
    inline: bool = False


def produce(settings: Settings, request: RunRequest) -> Iterator[Pointer]:
    """Send the run's payloads through :class:`Producer`, one per upload thread; yield each
    pointer, in completion order, once the broker confirmed it."""
    job, rate = request.job, request.rate
    local = threading.local()
    producers: list[Producer] = []
    lock = threading.Lock()
    intents = IntentBatcher(settings)
    # The next uploads are announced ahead, several per message, unless they may travel inline
    # (those need no intent); a window covers a few seconds of uploads, nothing near the grace period.
    window = 4 * request.parallelism
    if rate > 0:
        window = min(window, max(1, int(rate * settings.sweep_grace_seconds / 8)))
    ahead = None if request.inline else AheadAnnouncer(intents, settings, job, request.count, window)
    pointers = PointerBatcher(settings)  # pointers ready together are published together
    uploads = ThreadPoolExecutor(max_workers=request.parallelism, thread_name_prefix="upload")
    started = time.monotonic()

    def send(seq: int) -> "tuple[Pointer, Future[None]]":
        producer = getattr(local, "producer", None)
        if producer is None:
            producer = local.producer = Producer(settings, job=job, always_through_s3=not request.inline,
                                                 intents=intents, pointers=pointers)
            with lock:
                producers.append(producer)
        # Pace the uploads, not the publishes: otherwise every object is stored at full
        # speed and then waits unreferenced in S3, and pointer.created_at says nothing.
        if rate > 0:
            time.sleep(max(0.0, started + seq / rate - time.monotonic()))
        # The thread goes on with the next upload while its pointer waits for company.
        return producer.submit_source(lambda object_id: Source(lambda: payload.generate(request.size, job, object_id, seq), True),
                                      recipients=request.recipients, job=job, content_type="application/json", metadata=None,
                                      announced=ahead.take() if ahead else None)

    try:
        for pointer, sent in uploads.map(send, range(request.count)):
            sent.result()
            yield pointer
    finally:
        # A failed or abandoned run starts no further uploads (each would be an orphan).
        uploads.shutdown(wait=True, cancel_futures=True)
        for producer in producers:
            producer.close()
        pointers.close()  # publishes what waits: those objects are stored
        intents.close()


def run(settings: Settings, request: RunRequest,
        on_published: Callable[[Pointer], None] | None = None) -> ProduceReport:
    """Produce a whole run and report its totals; ``on_published`` sees each confirmed pointer."""
    report = ProduceReport(request.job)
    started = time.monotonic()
    for pointer in produce(settings, request):
        report.count += 1
        report.payload_bytes += pointer.payload_size
        report.object_bytes += pointer.object_size or 0
        report.object_ids.append(pointer.object_id)
        if on_published is not None:
            on_published(pointer)
    report.seconds = time.monotonic() - started
    return report
