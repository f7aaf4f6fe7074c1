"""Store and verify steps: S3 upload, verified streaming download, and delete.

Works against any S3-compatible endpoint (SeaweedFS locally, MinIO in Kubernetes, AWS S3).
"""

import base64
import functools
import hashlib
import io
import tempfile
import threading
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from isal import isal_zlib

from claimcheck.config import Settings
from claimcheck.protocol import Pointer

MiB = 1024 * 1024


def _transfer_config() -> TransferConfig:
    """Parts of 5 MiB (the S3 minimum), two in flight, at most three read ahead.

    s3transfer reads up to ``max_in_memory_upload_chunks`` parts of a non-seekable stream ahead
    of the uploads (10 by default), so with a slow S3 the producer's memory would grow to
    10 x 5 MiB; three keeps it flat whatever the payload size: its peak RSS is about 30 MiB above
    its baseline with a 100 MiB payload (the first 8 MiB read, three parts ahead, two in flight;
    tests/integration/test_memory.py).
    """
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    config.max_in_memory_upload_chunks = 3  # not an argument of boto3's constructor
    return config


TRANSFER = _transfer_config()
# isal_zlib.error is not a subclass of zlib.error (and its stub does not say it is an exception).
_GZIP_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], isal_zlib.error))
READ_CHUNK = MiB
# Verified payloads up to this size stay in memory before the hook sees them; larger ones spool to disk.
SPOOL_IN_MEMORY = 2 * MiB


class IntegrityError(Exception):
    """The stored object does not match its pointer; the payload must not be processed."""


class ObjectMissing(Exception):
    """The object a pointer names does not exist (never uploaded, or already deleted)."""


class StorageConfigError(ValueError):
    """A storage setting (SSE, tags, prefix) that cannot work; the message names the setting."""


class NoCustomerKey(Exception):
    """A pointer names an SSE-C key this consumer does not hold: not the payload's fault, so it is
    retried (and dead-lettered as ``processing_failed`` after the delivery limit)."""


# Tags every stored object carries when tagging is on: a bucket lifecycle rule filtering on
# ``claimcheck-managed=true`` is a last-resort safety net (docs/library.md).
MANAGED_TAG = ("claimcheck-managed", "true")
JOB_TAG = "claimcheck-job"
MAX_TAGS = 10  # S3's limit per object


def customer_key_md5(key: bytes) -> str:
    """How S3 names an SSE-C key: base64 of its MD5 (not a secret)."""
    return base64.b64encode(hashlib.md5(key, usedforsecurity=False).digest()).decode()


def _parse_customer_keys(text: str) -> list[bytes]:
    keys = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            raw = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise StorageConfigError("CLAIMCHECK_S3_SSE_CUSTOMER_KEYS must hold urlsafe base64 of 32-byte keys")
        keys.append(raw)
    return keys


def _parse_tags(text: str) -> dict[str, str]:
    tags = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise StorageConfigError(f"CLAIMCHECK_S3_TAGS must be k=v items separated by commas, got {item!r}")
        tags[name] = value
    return tags


@dataclass(frozen=True)
class StorageOptions:
    """How a producer stores payloads and a consumer reads them back.

    ``sse``: "" (the bucket's default encryption), "AES256" (SSE-S3), "aws:kms" (SSE-KMS with
    ``kms_key_id``, or the account's default KMS key) or "SSE-C" (the first of ``customer_keys``;
    consumers decrypt with whichever key a pointer names). ``tags`` (with ``tag_objects``) are
    added to every stored object.
    """

    sse: str = ""
    kms_key_id: str = ""
    customer_keys: tuple[bytes, ...] = ()
    tag_objects: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sse not in ("", "AES256", "aws:kms", "SSE-C"):
            raise StorageConfigError(f"unknown server-side encryption {self.sse!r}: use AES256, aws:kms or SSE-C")
        if self.kms_key_id and self.sse != "aws:kms":
            raise StorageConfigError("a KMS key id goes with sse='aws:kms'")
        if self.sse == "SSE-C" and not self.customer_keys:
            raise StorageConfigError("sse='SSE-C' needs a customer key (CLAIMCHECK_S3_SSE_CUSTOMER_KEYS)")
        if any(len(key) != 32 for key in self.customer_keys):
            raise StorageConfigError("SSE-C customer keys are 32 bytes")
        if self.tags and not self.tag_objects:
            object.__setattr__(self, "tag_objects", True)
        if len(self.tags) > MAX_TAGS - 2:
            raise StorageConfigError(f"at most {MAX_TAGS - 2} tags of your own (S3 allows {MAX_TAGS} per object)")

    @classmethod
    def from_settings(cls, settings: Settings) -> "StorageOptions":
        return cls(settings.s3_sse, settings.s3_sse_kms_key_id, tuple(_parse_customer_keys(settings.s3_sse_customer_keys)),
                   settings.s3_tag_objects, _parse_tags(settings.s3_tags))

    def upload_args(self, job: str) -> tuple[dict[str, Any], str | None]:
        """boto3's ExtraArgs for storing an object of ``job``, and the SSE-C key's MD5 if any."""
        args: dict[str, Any] = {"ContentType": "application/gzip"}
        key_md5 = None
        if self.sse == "SSE-C":
            args |= {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self.customer_keys[0]}
            key_md5 = customer_key_md5(self.customer_keys[0])
        elif self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.kms_key_id:
                args["SSEKMSKeyId"] = self.kms_key_id
        if self.tag_objects:
            args["Tagging"] = urllib.parse.urlencode([MANAGED_TAG, (JOB_TAG, job), *self.tags.items()])
        return args, key_md5

    def download_args(self, key_md5: str | None) -> dict[str, Any]:
        """get_object's SSE-C arguments for an object encrypted with the key named ``key_md5``."""
        if key_md5 is None:
            return {}
        for key in self.customer_keys:
            if customer_key_md5(key) == key_md5:
                return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        raise NoCustomerKey(f"no SSE-C key with MD5 {key_md5} in CLAIMCHECK_S3_SSE_CUSTOMER_KEYS")


def client(settings: Settings) -> Any:
    """A boto3 S3 client for the configured endpoint, with botocore's standard retries.

    One per endpoint and credentials in a process: boto3's clients are thread-safe and each
    costs several MiB (its service model), so the Producers of a run's upload threads share one
    (a producer of two 1 GiB uploads peaked above 150 MiB with one client per thread). Made under
    a lock: creating clients from boto3's default session in several threads at once is not safe.
    """
    with _CLIENTS_LOCK:
        return _client(settings.s3_endpoint_url, settings.s3_access_key_id, settings.s3_secret_access_key,
                       settings.s3_region)


_CLIENTS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str, access_key_id: str, secret_access_key: str, region: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            # The payload's size and sha256 are verified end to end; botocore's CRC32 on every
            # PUT and GET body is ~14 % of the producer's CPU for small payloads and adds nothing.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=16,
            s3={"addressing_style": "path", "payload_signing_enabled": False},
        ),
    )


def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists (409 from MinIO and SeaweedFS means it does)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def upload(s3: Any, bucket: str, key: str, stream: io.RawIOBase | IO[bytes],
           extra_args: Mapping[str, Any] | None = None) -> None:
    """Stream ``stream`` into ``bucket/key``: one PutObject below 8 MiB, multipart above.

    The first 8 MiB are read here, as s3transfer would read them: a stream that ends before is
    sent with ``put_object`` directly, which costs the producer about 3 ms less CPU per object
    than handing it to s3transfer (a transfer manager and its threads per call).
    """
    args = dict(extra_args or {"ContentType": "application/gzip"})
    threshold = TRANSFER.multipart_threshold
    head = stream.read(threshold) or b""
    if len(head) < threshold:  # what is left, as s3transfer sends it: nothing, unless a raw stream read short
        s3.put_object(Bucket=bucket, Key=key, Body=head + (stream.read() or b""), **args)
        return
    rest = _Prepended(head, stream)
    del head  # s3transfer holds it until its first part is cut from it; kept here, 8 MiB more per upload
    s3.upload_fileobj(rest, bucket, key, ExtraArgs=args, Config=TRANSFER)


class _Prepended(io.RawIOBase):
    """``head`` followed by the rest of ``rest``: a stream whose first bytes were read already.

    s3transfer asks first for exactly the multipart threshold, so ``head`` is handed over whole,
    not copied.
    """

    def __init__(self, head: bytes, rest: io.RawIOBase | IO[bytes]) -> None:
        self._head: bytes | None = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        head, self._head = self._head, None
        if size is None or size < 0:
            return (head or b"") + (self._rest.read() or b"")
        if head is None:
            return self._rest.read(size) or b""
        if size < len(head):
            self._head = head[size:]
            return head[:size]
        if size == len(head):
            return head
        return head + (self._rest.read(size - len(head)) or b"")


def delete(s3: Any, bucket: str, key: str) -> None:
    """Delete one object; deleting an absent key succeeds, so a retried delete is harmless."""
    s3.delete_object(Bucket=bucket, Key=key)


MAX_KEYS_PER_DELETE = 1000  # S3's limit for one DeleteObjects request


def delete_many(s3: Any, bucket: str, keys: list[str]) -> dict[str, str]:
    """Delete up to 1000 objects in one request; return the keys S3 did not delete, with why.

    One request instead of one per object: the coordinator's deletes cost it more CPU than
    counting the ACKs did. As with ``delete``, an absent key counts as deleted.
    """
    response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
    return {error["Key"]: f"{error.get('Code', '?')}: {error.get('Message', '')}" for error in response.get("Errors", [])}


def list_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix``."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def _open_object(s3: Any, pointer: Pointer, options: StorageOptions) -> Any:
    """GET the object; refuse it before reading a byte when its Content-Length is not the announced size."""
    stored = pointer.stored
    try:
        response = s3.get_object(Bucket=stored.bucket, Key=stored.key, **options.download_args(pointer.sse_customer_key_md5))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
            raise ObjectMissing(f"object s3://{stored.bucket}/{stored.key} does not exist") from None
        raise
    body = response["Body"]
    length = response.get("ContentLength")
    if isinstance(length, int) and length != stored.size:
        body.close()  # closes the connection instead of draining it
        raise IntegrityError(
            f"object size mismatch: pointer says {stored.size}, S3 announces {length} bytes; not downloaded"
        )
    return body


def _object_chunks(body: Any, announced: int) -> Iterator[bytes]:
    """The object's bytes, refusing the first one beyond the ``announced`` size whatever S3 said."""
    read = 0
    while True:
        chunk = body.read(min(READ_CHUNK, announced - read + 1))
        if not chunk:
            return
        read += len(chunk)
        if read > announced:
            raise IntegrityError(f"object size mismatch: pointer says {announced}, object has more bytes")
        yield chunk


def open_verified(s3: Any, pointer: Pointer, options: StorageOptions | None = None, *, keep: bool = True) -> IO[bytes]:
    """The verified payload of ``pointer``, rewound: inline or downloaded, never a byte unchecked
    (an empty stream after verification if not ``keep``: see ``download_verified``)."""
    if pointer.is_inline:
        return verified_inline(pointer)
    return download_verified(s3, pointer, options, keep=keep)


def verified_inline(pointer: Pointer) -> IO[bytes]:
    """An inline payload, once its sha256 matched the pointer (its size was checked on decoding)."""
    data = pointer.inline_bytes()
    _expect("payload sha256", hashlib.sha256(data).hexdigest(), pointer.payload_sha256)
    return io.BytesIO(data)


def download_verified(s3: Any, pointer: Pointer, options: StorageOptions | None = None, *,
                      keep: bool = True) -> IO[bytes]:
    """Download, decompress and verify the payload ``pointer`` names; return it rewound.

    Sizes and sha256 of the decompressed payload (and of the stored object, where an earlier
    producer's pointer names its sha256) must all match the pointer, otherwise
    :class:`IntegrityError` says which. Every check fails as early as the bytes allow, so a
    forged pointer costs neither bandwidth, time, memory nor disk: an object whose
    Content-Length is not the announced size is not read at all; reading stops at the first
    byte past the announced object size; decompression stops as soon as the output exceeds the
    announced payload size (a gzip bomb) and as soon as the gzip stream ends, if it ends short
    of the announced payload or before the object does. At most the announced payload size is
    ever written to the returned spool (memory, then disk).

    Without ``keep`` the payload is verified the same way and not kept: nothing is spooled and
    an empty stream is returned, for a consumer whose hook does not read the payload (spooling
    a 16 MiB payload cost a consumer more CPU than hashing it).
    """
    stored = pointer.stored
    object_hash = hashlib.sha256() if stored.sha256 is not None else None
    payload_hash = hashlib.sha256()
    object_size = 0
    decompressor = isal_zlib.decompressobj(31)  # same API as zlib's, ~2x faster
    sink: IO[bytes] = (tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned; the caller closes it
                       if keep else _Counting())
    body = None
    try:
        body = _open_object(s3, pointer, options or StorageOptions())
        for chunk in _object_chunks(body, stored.size):
            object_size += len(chunk)
            if object_hash is not None:
                object_hash.update(chunk)
            _feed(decompressor, chunk, payload_hash, sink, pointer.payload_size)
            if decompressor.eof:
                _check_stream_end(decompressor, sink, pointer, object_size)
        _expect("object size", object_size, stored.size)
        if object_hash is not None:
            _expect("object sha256", object_hash.hexdigest(), stored.sha256)
        _emit(decompressor.flush(), payload_hash, sink, pointer.payload_size)
        if not decompressor.eof:
            raise IntegrityError("gzip stream is truncated: the object ends before the gzip stream does")
        _check_stream_end(decompressor, sink, pointer, object_size)
        _expect("payload sha256", payload_hash.hexdigest(), pointer.payload_sha256)
    except _GZIP_ERRORS as exc:
        sink.close()
        raise IntegrityError(f"payload is not valid gzip: {exc}") from None
    except BaseException:
        sink.close()
        raise
    finally:
        if body is not None:
            body.close()
    if not keep:
        return io.BytesIO()
    sink.seek(0)
    return sink


class _Counting(io.BytesIO):
    """A sink that keeps no byte and only counts them, so ``tell()`` bounds the output as a spool's does."""

    def __init__(self) -> None:
        super().__init__()
        self._written = 0

    def write(self, data: Any) -> int:
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written


def _check_stream_end(decompressor: Any, spool: IO[bytes], pointer: Pointer, object_read: int) -> None:
    """At the end of the gzip stream: it must carry the whole payload and end with the object."""
    if spool.tell() != pointer.payload_size:
        raise IntegrityError(
            f"payload size mismatch: pointer says {pointer.payload_size}, the gzip stream ends after {spool.tell()}"
        )
    if decompressor.unused_data or object_read < pointer.stored.size:
        raise IntegrityError(
            f"gzip stream has trailing data: it ends {object_read - len(decompressor.unused_data)} bytes into "
            f"an object of {pointer.stored.size}"
        )


def _feed(decompressor: Any, data: bytes, digest: Any, sink: IO[bytes], limit: int) -> None:
    """Decompress ``data`` into ``sink``, never producing more than one byte past ``limit``, at most
    READ_CHUNK bytes at a time (a highly compressible megabyte may hold a hundred of them)."""
    while data:
        _emit(decompressor.decompress(data, min(limit - sink.tell() + 1, READ_CHUNK)), digest, sink, limit)
        data = decompressor.unconsumed_tail


def _emit(output: bytes, digest: Any, sink: IO[bytes], limit: int) -> None:
    if sink.tell() + len(output) > limit:
        raise IntegrityError(f"payload size exceeds the announced {limit} bytes")
    digest.update(output)
    sink.write(output)


def _expect(what: str, actual: object, announced: object) -> None:
    if actual != announced:
        raise IntegrityError(f"{what} mismatch: pointer says {announced}, object has {actual}")

