"""Versioned wire messages: the pointer a producer publishes and the business ACK a recipient sends.

Every message that enters a component is decoded here; anything that does not match the schema
raises :class:`InvalidMessage` with a reason a person can read, so callers dead-letter it
instead of crashing. The byte format is documented in docs/protocol.md.
"""

import base64
import binascii
import functools
import json
import re
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

PROTOCOL_VERSION = 1
# Every body a component reads: below RabbitMQ's max_message_size of 128 KiB (the local broker's
# and the charts'), high enough for a pointer carrying an inline payload of MAX_INLINE_BYTES with
# its base64 overhead, the largest recipient list and metadata.
MAX_MESSAGE_BYTES = 120 * 1024
# The largest payload a pointer may carry inline (docs/library.md: the default threshold is 64 KiB).
MAX_INLINE_BYTES = 80 * 1024
# Metadata: a small signed map of printable strings, delivered to every recipient.
MAX_METADATA_ITEMS = 32
MAX_METADATA_BYTES = 4096
MAX_RECIPIENTS = 32
# ACKs one AckBatch may carry: 100 of the longest (128-character job names) stay under 30 KiB.
MAX_ACKS_PER_BATCH = 100
# Intents one IntentBatch may carry: 64 of the longest (the longest key prefix and job name,
# about 1 KiB each) stay under MAX_MESSAGE_BYTES.
MAX_INTENTS_PER_BATCH = 64
# Pointers one PointerBatch may carry: stored ones of at most BATCHABLE_POINTER_BYTES each (a
# pointer with the longest key, job, content type and recipient list and no metadata is about 4 KiB), so any
# full batch stays under MAX_MESSAGE_BYTES; a larger pointer travels alone.
MAX_POINTERS_PER_BATCH = 16
BATCHABLE_POINTER_BYTES = (MAX_MESSAGE_BYTES - 1024) // MAX_POINTERS_PER_BATCH
MAX_PAYLOAD_BYTES = 64 * 2**30
RESERVED_RECIPIENTS = frozenset({"coordinator"})

# The name patterns, one definition each: the CLI checks its arguments against the same ones.
RECIPIENT_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
JOB_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
OBJECT_ID_PATTERN = r"^[0-9a-f]{32}$"
# An object key is ``[prefix]<job>/<object id>.<extension>``: it names the object it stores and
# nothing else. The prefix (a deployment setting, like the bucket) is zero or more path segments.
OBJECT_KEY_EXTENSION = "json.gz"
KEY_PREFIX_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62}/){0,8}$"
_OBJECT_KEY = re.compile(
    rf"^(?P<prefix>{KEY_PREFIX_PATTERN[1:-1]})(?P<job>{JOB_PATTERN[1:-1]})/(?P<object_id>{OBJECT_ID_PATTERN[1:-1]})"
    r"\.(?P<extension>[a-z0-9]{1,8}(\.[a-z0-9]{1,8})?)$"
)

RecipientName = Annotated[str, StringConstraints(pattern=RECIPIENT_PATTERN)]
JobName = Annotated[str, StringConstraints(pattern=JOB_PATTERN)]
ObjectId = Annotated[str, StringConstraints(pattern=OBJECT_ID_PATTERN)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ObjectKey = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
BucketName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
# Free text that ends up in the ledger and in logs: printable ASCII only (no NUL, no control
# characters, nothing PostgreSQL or a terminal would choke on).
PrintableText = Annotated[str, StringConstraints(pattern=r"^[\x20-\x7e]*$", max_length=256)]
Timestamp = AwareDatetime  # a naive timestamp cannot be compared with the ledger's
# A media type (RFC 6838 names) with optional parameters, printable ASCII.
ContentType = Annotated[str, StringConstraints(
    pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(;[\x20-\x7e]{0,200})?$")]
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
def _printable(value: str) -> str:
    # Any language, but nothing a terminal, a log line or a file of metadata would choke on:
    # no control, format, surrogate or private-use characters (str.isprintable).
    if not value.isprintable():
        raise ValueError("must be printable text (no control or format characters)")
    return value


MetadataValue = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_printable)]
# Standard base64 of at most MAX_INLINE_BYTES.
InlineData = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=4 * (MAX_INLINE_BYTES // 3 + 1))]
Md5Base64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{22}==$")]


def object_key(job: str, object_id: str, extension: str = OBJECT_KEY_EXTENSION, prefix: str = "") -> str:
    """Where a payload lives in the bucket: grouped by job, so a job's leftovers are one prefix."""
    return f"{prefix}{job}/{object_id}.{extension}"


def parse_object_key(key: str, prefix: str = "") -> tuple[str, str] | None:
    """``(job, object_id)`` of a key in :func:`object_key` form under exactly ``prefix``, None for any other key."""
    match = _OBJECT_KEY.match(key)
    return (match["job"], match["object_id"]) if match and match["prefix"] == prefix else None


def check_metadata(metadata: dict[str, str]) -> None:
    """Refuse metadata over its bounds (the per-item ones are in the field types)."""
    if len(metadata) > MAX_METADATA_ITEMS:
        raise ValueError(f"metadata has {len(metadata)} items, more than {MAX_METADATA_ITEMS}")
    size = sum(len(key.encode()) + len(value.encode()) for key, value in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata holds {size} bytes (UTF-8), more than {MAX_METADATA_BYTES}")


class InvalidMessage(ValueError):
    """A message that cannot be accepted.

    ``category`` is a bounded label for metrics and the dead-letter reason (``invalid``,
    ``forged``); ``reason`` is short and readable.
    """

    def __init__(self, reason: str, category: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1

    def encode(self) -> bytes:
        """Compact JSON bytes, the message body on the wire; absent optional fields are left out."""
        return self.model_dump_json(exclude_none=True).encode()


class StoredObject(NamedTuple):
    """Where a stored payload lives, the gzip object's size, and its sha256 if the pointer names one."""

    bucket: str
    key: str
    size: int
    sha256: str | None


class Pointer(_Message):
    """Names a payload and the recipient groups that must each confirm it.

    The payload is either stored in S3 (``bucket``, ``key``, ``object_size`` of the gzip object)
    or carried ``inline`` (base64, ``content_encoding`` ``identity``); fields of the other form
    are absent. A pointer using none of the optional fields encodes exactly as before they
    existed, so older consumers read it.

    ``object_sha256`` (of the gzip object) is optional: the payload's size and sha256, checked
    end to end behind a bounded decompression, already refuse any altered object, so producers
    no longer hash the object a second time. Pointers of earlier producers still carry it, and
    consumers still check it when it is there.
    """

    type: Literal["pointer"] = "pointer"
    object_id: ObjectId
    job: JobName
    bucket: BucketName | None = None
    key: ObjectKey | None = None
    content_type: ContentType = "application/json"
    content_encoding: Literal["gzip", "identity"] = "gzip"
    payload_size: int = Field(ge=0, le=MAX_PAYLOAD_BYTES)
    payload_sha256: Sha256Hex
    object_size: int | None = Field(default=None, ge=0, le=MAX_PAYLOAD_BYTES)
    object_sha256: Sha256Hex | None = None
    recipients: tuple[RecipientName, ...] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    recipients_total: int
    created_at: Timestamp
    inline: InlineData | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = None
    # SSE-C: the MD5 (base64) of the customer key the object is encrypted with, so a consumer
    # holding several keys (a rotation) picks the right one. S3 reports the same value.
    sse_customer_key_md5: Md5Base64 | None = None

    @property
    def is_inline(self) -> bool:
        """Whether the payload travels inside this pointer (nothing is stored in S3)."""
        return self.inline is not None

    @property
    def stored(self) -> StoredObject:
        """The stored object this pointer names; ValueError for an inline payload."""
        if self.bucket is None or self.key is None or self.object_size is None:
            raise ValueError("the payload of this pointer travels inline; nothing is stored")
        return StoredObject(self.bucket, self.key, self.object_size, self.object_sha256)

    def inline_bytes(self) -> bytes:
        """The inline payload as sent (unverified: compare its sha256 with ``payload_sha256``)."""
        if self.inline is None:
            raise ValueError("the payload of this pointer is stored in S3, not inline")
        return base64.b64decode(self.inline)

    @model_validator(mode="after")
    def _one_storage_form(self) -> "Pointer":
        located = (self.bucket, self.key, self.object_size)
        if self.inline is not None:
            if any(field is not None for field in (*located, self.object_sha256, self.sse_customer_key_md5)):
                raise ValueError("an inline pointer names no bucket, key, object size, object sha256 or SSE key")
            if self.content_encoding != "identity":
                raise ValueError("an inline payload has content_encoding identity")
            if self.payload_size > MAX_INLINE_BYTES:
                raise ValueError(f"inline payload of {self.payload_size} bytes exceeds {MAX_INLINE_BYTES}")
            try:
                length = len(base64.b64decode(self.inline, validate=True))
            except binascii.Error:
                raise ValueError("inline is not base64") from None
            if length != self.payload_size:
                raise ValueError(f"inline payload holds {length} bytes, payload_size says {self.payload_size}")
            return self
        if any(field is None for field in located):
            raise ValueError("a pointer to a stored object needs bucket, key and object_size")
        if self.content_encoding != "gzip":
            raise ValueError("a stored object has content_encoding gzip")
        assert self.key is not None
        _check_key(self.key, self.job, self.object_id)
        return self

    @model_validator(mode="after")
    def _metadata_bounded(self) -> "Pointer":
        if self.metadata is not None:
            check_metadata(self.metadata)
        return self

    @model_validator(mode="after")
    def _recipients_form_a_set(self) -> "Pointer":
        if len(set(self.recipients)) != len(self.recipients):
            raise ValueError("recipients must not repeat")
        if list(self.recipients) != sorted(self.recipients):
            raise ValueError("recipients must be sorted")
        if self.recipients_total != len(self.recipients):
            raise ValueError("recipients_total must equal the number of recipients")
        reserved = RESERVED_RECIPIENTS.intersection(self.recipients)
        if reserved:
            raise ValueError(f"reserved recipient name {sorted(reserved)[0]!r}")
        return self


class PointerBatch(_Message):
    """Several pointers to stored objects, for the same recipient groups, in one signed message.

    Published once like a pointer, it is fanned out to the coordinator and every group it names:
    one enqueue per queue and one settlement per reader for all its objects. Each group verifies
    each object and confirms it as if it had come alone; the coordinator records each exactly as
    a :class:`Pointer` of its own. Inline pointers travel alone (their payloads would not fit).
    """

    type: Literal["pointer_batch"] = "pointer_batch"
    created_at: Timestamp
    pointers: tuple[Pointer, ...] = Field(min_length=1, max_length=MAX_POINTERS_PER_BATCH)

    @model_validator(mode="after")
    def _one_fan_out(self) -> "PointerBatch":
        _each_object_once(self.pointers, "named")
        if len({pointer.recipients for pointer in self.pointers}) != 1:
            raise ValueError("every pointer of a batch names the same recipients")
        if any(pointer.is_inline for pointer in self.pointers):
            raise ValueError("an inline pointer travels alone, not in a batch")
        return self

    @property
    def recipients(self) -> tuple[str, ...]:
        """The groups every pointer of the batch names."""
        return self.pointers[0].recipients

    def each(self) -> list[Pointer]:
        """The batch's pointers, in its order."""
        return list(self.pointers)

    @staticmethod
    def can_carry(pointer: Pointer) -> bool:
        """Whether ``pointer`` may travel in a batch: stored, and small enough that any full batch fits a message."""
        return not pointer.is_inline and len(pointer.encode()) <= BATCHABLE_POINTER_BYTES


class Ack(_Message):
    """A recipient's business confirmation that it verified and processed one payload."""

    type: Literal["ack"] = "ack"
    object_id: ObjectId
    job: JobName
    recipient: RecipientName
    payload_sha256: Sha256Hex
    consumer: PrintableText
    acked_at: Timestamp


class AckedObject(BaseModel):
    """One object an :class:`AckBatch` confirms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object_id: ObjectId
    job: JobName
    payload_sha256: Sha256Hex


class AckBatch(_Message):
    """Several business ACKs of one recipient replica in one signed message.

    A consumer confirms what its workers finished within a few milliseconds together: one
    enqueue and one settlement on the broker instead of one per object. The coordinator counts
    each object exactly as if it had come in an :class:`Ack` of its own.
    """

    type: Literal["ack_batch"] = "ack_batch"
    recipient: RecipientName
    consumer: PrintableText
    acked_at: Timestamp
    acks: tuple[AckedObject, ...] = Field(min_length=1, max_length=MAX_ACKS_PER_BATCH)

    @model_validator(mode="after")
    def _each_object_once(self) -> "AckBatch":
        _each_object_once(self.acks, "confirmed")
        return self

    def each(self) -> list[Ack]:
        """The batch as single ACKs, in its order (built without validating again: every field
        was validated as part of this batch, with the same types an Ack declares)."""
        return [Ack.model_construct(object_id=acked.object_id, job=acked.job, recipient=self.recipient,
                                    payload_sha256=acked.payload_sha256, consumer=self.consumer, acked_at=self.acked_at)
                for acked in self.acks]


class Intent(_Message):
    """A producer's announcement, confirmed by the broker before it uploads anything.

    It travels on the coordinator's pointer queue ahead of the pointer, so the ledger knows of
    every object a producer is about to store: the orphan sweeper never mistakes an upload in
    progress, or one whose pointer is still queued, for an orphan.
    """

    type: Literal["intent"] = "intent"
    object_id: ObjectId
    job: JobName
    bucket: BucketName
    key: ObjectKey
    created_at: Timestamp

    @model_validator(mode="after")
    def _key_names_this_object(self) -> "Intent":
        _check_key(self.key, self.job, self.object_id)
        return self


class AnnouncedObject(BaseModel):
    """One upload an :class:`IntentBatch` announces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    object_id: ObjectId
    job: JobName
    bucket: BucketName
    key: ObjectKey

    @model_validator(mode="after")
    def _key_names_this_object(self) -> "AnnouncedObject":
        _check_key(self.key, self.job, self.object_id)
        return self


class IntentBatch(_Message):
    """Several intents in one signed message: the uploads a producer's threads are about to start.

    One enqueue and one coordinator settlement instead of one per object; the coordinator
    applies each exactly as an :class:`Intent` of its own.
    """

    type: Literal["intent_batch"] = "intent_batch"
    created_at: Timestamp
    intents: tuple[AnnouncedObject, ...] = Field(min_length=1, max_length=MAX_INTENTS_PER_BATCH)

    @model_validator(mode="after")
    def _each_object_once(self) -> "IntentBatch":
        _each_object_once(self.intents, "announced")
        return self

    def each(self) -> list[Intent]:
        """The batch as single intents, in its order (validated once, as part of this batch)."""
        return [Intent.model_construct(object_id=announced.object_id, job=announced.job, bucket=announced.bucket,
                                       key=announced.key, created_at=self.created_at)
                for announced in self.intents]


class Barrier(_Message):
    """A marker the sweeper sends through the coordinator's pointer queue.

    Once a coordinator applied it, every message queued before it has been applied too (the
    queue is first in, first out), so the ledger knows every intent and pointer older than it.
    """

    type: Literal["barrier"] = "barrier"
    nonce: ObjectId
    created_at: Timestamp


def _each_object_once(items: "tuple[Pointer, ...] | tuple[AckedObject, ...] | tuple[AnnouncedObject, ...]",
                      verb: str) -> None:
    if len({item.object_id for item in items}) != len(items):
        raise ValueError(f"an object is {verb} twice in one batch")


def _check_key(key: str, job: str, object_id: str) -> None:
    match = _OBJECT_KEY.match(key)
    if match is None or (match["job"], match["object_id"]) != (job, object_id):
        raise ValueError(f"key must be {job}/{object_id}.<extension> (after the key prefix), the object the message names")


def now() -> datetime:
    """The current UTC time, the timestamp every message carries."""
    return datetime.now(timezone.utc)


def make_pointer(*, recipients: Iterable[str], **fields: Any) -> Pointer:
    """Build a pointer from its fields, deriving ``recipients_total`` and sorting recipients."""
    unique = tuple(sorted(set(recipients)))
    return Pointer(recipients=unique, recipients_total=len(unique), created_at=now(), **fields)


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job: JobName
    recipients: tuple[RecipientName, ...] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    content_type: ContentType
    metadata: dict[MetadataKey, MetadataValue] | None = None


_ENVELOPE = TypeAdapter(_Envelope)


def check_envelope(job: str, recipients: Iterable[str], content_type: str, metadata: Mapping[str, str] | None,
                   allowed: Collection[str] = ()) -> None:
    """Refuse what a pointer could not carry, before anything is sent: ValueError saying which field and why.

    ``allowed``, when not empty, lists the only recipient groups that may be named.
    """
    names = list(recipients) if not isinstance(recipients, str) else [recipients]
    try:
        _ENVELOPE.validate_python({"job": job, "recipients": tuple(names), "content_type": content_type,
                                   "metadata": dict(metadata) if metadata is not None else None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"invalid {where}: {brief(first['input'], 80)!s}: {first['msg']}") from None
    if len(set(names)) != len(names):
        raise ValueError("recipients must not repeat")
    reserved = RESERVED_RECIPIENTS.intersection(names)
    if reserved:
        raise ValueError(f"recipient name {sorted(reserved)[0]!r} is reserved")
    unknown = sorted(set(names) - set(allowed)) if allowed else []
    if unknown:
        raise ValueError(f"unknown recipient {unknown[0]!r}; configured recipients: {', '.join(sorted(allowed))} "
                         "(CLAIMCHECK_RECIPIENTS)")
    if metadata:
        check_metadata(dict(metadata))


M = TypeVar("M", bound=_Message)
# What may arrive on the coordinator's pointer queue.
PointerQueueMessage = Pointer | PointerBatch | Intent | IntentBatch | Barrier
POINTER_QUEUE_KINDS: tuple[type[PointerQueueMessage], ...] = (Pointer, PointerBatch, Intent, IntentBatch, Barrier)
# What may arrive on a recipient group's queue.
RecipientQueueMessage = Pointer | PointerBatch
RECIPIENT_QUEUE_KINDS: tuple[type[RecipientQueueMessage], ...] = (Pointer, PointerBatch)
# What may arrive on the coordinator's ACK queue.
AckQueueMessage = Ack | AckBatch
ACK_QUEUE_KINDS: tuple[type[AckQueueMessage], ...] = (Ack, AckBatch)


def check_size(body: bytes) -> None:
    """Refuse an oversized body before anything (HMAC, JSON) spends work on it."""
    if not isinstance(body, bytes | bytearray):
        raise InvalidMessage(f"body is {type(body).__name__}, not bytes")
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(body)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")


def check_bucket(message: _Message, bucket: str, prefix: str = "") -> None:
    """Refuse a message that names an object outside the configured ``bucket`` and key ``prefix``.

    Inline pointers name no object and pass; a batch is checked object by object.
    """
    named_objects: tuple[Any, ...] = (message.intents if isinstance(message, IntentBatch) else
                                      message.pointers if isinstance(message, PointerBatch) else (message,))
    for named in named_objects:
        _check_object_location(getattr(named, "bucket", None), getattr(named, "key", None), bucket, prefix)


def _check_object_location(named: str | None, key: str | None, bucket: str, prefix: str) -> None:
    if named is None or key is None:
        return
    if named != bucket:
        raise InvalidMessage(f"names bucket {named!r}, not the configured {bucket!r}", "foreign_bucket")
    if parse_object_key(key, prefix) is None:
        raise InvalidMessage(f"key {brief(repr(key))} is not under the configured key prefix {prefix!r}", "foreign_bucket")


def decode(body: bytes, *kinds: type[M]) -> M:
    """Parse ``body`` as one of ``kinds`` (chosen by its ``type``) or raise :class:`InvalidMessage` saying why."""
    check_size(body)
    try:
        return _decode(body, kinds)
    except RecursionError:  # from the parser, a repr or the validator: any deep nesting
        raise InvalidMessage("nested too deeply") from None


@functools.cache
def _by_type(kinds: tuple[type[M], ...]) -> dict[str, type[M]]:
    """The message classes of ``kinds`` by their ``type`` (once per tuple: reading a pydantic
    class's fields costs microseconds, and every message on the coordinator's path asks)."""
    return {kind.model_fields["type"].default: kind for kind in kinds}


def _decode(body: bytes, kinds: tuple[type[M], ...]) -> M:
    try:
        document = json.loads(body)
    except ValueError as exc:  # not UTF-8, not JSON, or a number too long to convert
        raise InvalidMessage(f"not JSON: {brief(str(exc), 200)}") from None
    if not isinstance(document, dict):
        raise InvalidMessage("not a JSON object")
    by_type: dict[str, type[M]] = _by_type(kinds)
    expected_type = document.get("type")
    kind = by_type.get(expected_type) if isinstance(expected_type, str) else None
    if kind is None:
        raise InvalidMessage(f"expected a {' or '.join(map(repr, by_type))} message, got type {brief(repr(expected_type))}")
    version = document.get("version")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise InvalidMessage(f"unsupported {expected_type} version {brief(repr(version))}; this build speaks {PROTOCOL_VERSION}")
    try:
        return kind.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        what = brief(str(first["msg"]).removeprefix("Value error, "), 200)
        raise InvalidMessage(f"invalid {expected_type}: {brief(where, 80) + ': ' if where else ''}{what}") from None


def brief(value: object, limit: int = 60) -> str:
    """A bounded, printable rendering of an untrusted text for a reason."""
    text = str(value).encode("ascii", "backslashreplace").decode()
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
