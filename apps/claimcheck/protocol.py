"""Versioned wire messages: the pointer a producer publishes and the business ACK a recipient sends.

Every message that enters a component is decoded here; anything that does not match the schema
raises :class:`InvalidMessage` with a reason a person can read, so callers dead-letter it
instead of crashing. The byte format is documented in docs/protocol.md.
"""

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_RECIPIENTS = 32
MAX_PAYLOAD_BYTES = 64 * 2**30
RESERVED_RECIPIENTS = frozenset({"coordinator"})

RecipientName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
JobName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
ObjectId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ObjectKey = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
BucketName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]


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
        """Compact JSON bytes, the message body on the wire."""
        return self.model_dump_json().encode()


class Pointer(_Message):
    """Names a stored payload and the recipient groups that must each confirm it."""

    type: Literal["pointer"] = "pointer"
    object_id: ObjectId
    job: JobName
    bucket: BucketName
    key: ObjectKey
    content_type: Literal["application/json"] = "application/json"
    content_encoding: Literal["gzip"] = "gzip"
    payload_size: int = Field(ge=0, le=MAX_PAYLOAD_BYTES)
    payload_sha256: Sha256Hex
    object_size: int = Field(ge=0, le=MAX_PAYLOAD_BYTES)
    object_sha256: Sha256Hex
    recipients: tuple[RecipientName, ...] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    recipients_total: int
    created_at: datetime

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


class Ack(_Message):
    """A recipient's business confirmation that it verified and processed one payload."""

    type: Literal["ack"] = "ack"
    object_id: ObjectId
    job: JobName
    recipient: RecipientName
    payload_sha256: Sha256Hex
    consumer: Annotated[str, StringConstraints(max_length=256)]
    acked_at: datetime


def now() -> datetime:
    """The current UTC time, the timestamp every message carries."""
    return datetime.now(timezone.utc)


def make_pointer(*, recipients: Iterable[str], **fields: Any) -> Pointer:
    """Build a pointer from its fields, deriving ``recipients_total`` and sorting recipients."""
    unique = tuple(sorted(set(recipients)))
    return Pointer(recipients=unique, recipients_total=len(unique), created_at=now(), **fields)


M = TypeVar("M", bound=_Message)


def decode(body: bytes, kind: type[M]) -> M:
    """Parse ``body`` as a ``kind`` message or raise :class:`InvalidMessage` saying why."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(body)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidMessage("not a JSON object")
    expected_type = kind.model_fields["type"].default
    if document.get("type") != expected_type:
        raise InvalidMessage(f"expected a {expected_type!r} message, got type {document.get('type')!r}")
    if document.get("version") != PROTOCOL_VERSION:
        raise InvalidMessage(
            f"unsupported {expected_type} version {document.get('version')!r}; this build speaks {PROTOCOL_VERSION}"
        )
    try:
        return kind.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or expected_type
        raise InvalidMessage(f"invalid {expected_type}: {where}: {first['msg']}") from None
