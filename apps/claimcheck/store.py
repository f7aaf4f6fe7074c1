"""Store and verify steps: S3 upload, verified streaming download, and delete.

Works against any S3-compatible endpoint (SeaweedFS locally, MinIO in Kubernetes, AWS S3).
"""

import hashlib
import io
import tempfile
import zlib
from collections.abc import Iterator
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
    10 x 5 MiB; three keeps it flat at ~15 MiB above its baseline whatever the payload size.
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


def client(settings: Settings) -> Any:
    """A boto3 S3 client for the configured endpoint, with botocore's standard retries."""
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
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


def upload(s3: Any, bucket: str, key: str, stream: io.RawIOBase | IO[bytes]) -> None:
    """Stream ``stream`` into ``bucket/key``, multipart above 8 MiB."""
    s3.upload_fileobj(stream, bucket, key, ExtraArgs={"ContentType": "application/gzip"}, Config=TRANSFER)


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


def _open_object(s3: Any, pointer: Pointer) -> Any:
    """GET the object; refuse it before reading a byte when its Content-Length is not the announced size."""
    try:
        response = s3.get_object(Bucket=pointer.bucket, Key=pointer.key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
            raise ObjectMissing(f"object s3://{pointer.bucket}/{pointer.key} does not exist") from None
        raise
    body = response["Body"]
    length = response.get("ContentLength")
    if isinstance(length, int) and length != pointer.object_size:
        body.close()  # closes the connection instead of draining it
        raise IntegrityError(
            f"object size mismatch: pointer says {pointer.object_size}, S3 announces {length} bytes; not downloaded"
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


def download_verified(s3: Any, pointer: Pointer) -> IO[bytes]:
    """Download, decompress and verify the payload ``pointer`` names; return it rewound.

    Sizes and sha256 of the stored object and of the decompressed payload must all match the
    pointer, otherwise :class:`IntegrityError` says which. Every check fails as early as the
    bytes allow, so a forged pointer costs neither bandwidth, time, memory nor disk: an object
    whose Content-Length is not the announced size is not read at all; reading stops at the
    first byte past the announced object size; decompression stops as soon as the output
    exceeds the announced payload size (a gzip bomb) and as soon as the gzip stream ends, if it
    ends short of the announced payload or before the object does. At most the announced
    payload size is ever written to the returned spool (memory, then disk).
    """
    object_hash, payload_hash = hashlib.sha256(), hashlib.sha256()
    object_size = 0
    decompressor = isal_zlib.decompressobj(31)  # same API as zlib's, ~2x faster
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - returned; the caller closes it
    body = None
    try:
        body = _open_object(s3, pointer)
        for chunk in _object_chunks(body, pointer.object_size):
            object_size += len(chunk)
            object_hash.update(chunk)
            _feed(decompressor, chunk, payload_hash, spool, pointer.payload_size)
            if decompressor.eof:
                _check_stream_end(decompressor, spool, pointer, object_size)
        _expect("object size", object_size, pointer.object_size)
        _expect("object sha256", object_hash.hexdigest(), pointer.object_sha256)
        _emit(decompressor.flush(), payload_hash, spool, pointer.payload_size)
        if not decompressor.eof:
            raise IntegrityError("gzip stream is truncated: the object ends before the gzip stream does")
        _check_stream_end(decompressor, spool, pointer, object_size)
        _expect("payload sha256", payload_hash.hexdigest(), pointer.payload_sha256)
    except _GZIP_ERRORS as exc:
        spool.close()
        raise IntegrityError(f"payload is not valid gzip: {exc}") from None
    except BaseException:
        spool.close()
        raise
    finally:
        if body is not None:
            body.close()
    spool.seek(0)
    return spool  # type: ignore[return-value]


def _check_stream_end(decompressor: Any, spool: IO[bytes], pointer: Pointer, object_read: int) -> None:
    """At the end of the gzip stream: it must carry the whole payload and end with the object."""
    if spool.tell() != pointer.payload_size:
        raise IntegrityError(
            f"payload size mismatch: pointer says {pointer.payload_size}, the gzip stream ends after {spool.tell()}"
        )
    if decompressor.unused_data or object_read < pointer.object_size:
        raise IntegrityError(
            f"gzip stream has trailing data: it ends {object_read - len(decompressor.unused_data)} bytes into "
            f"an object of {pointer.object_size}"
        )


def _feed(decompressor: Any, data: bytes, digest: Any, sink: IO[bytes], limit: int) -> None:
    """Decompress ``data`` into ``sink``, never producing more than one byte past ``limit``."""
    while data:
        _emit(decompressor.decompress(data, limit - sink.tell() + 1), digest, sink, limit)
        data = decompressor.unconsumed_tail


def _emit(output: bytes, digest: Any, sink: IO[bytes], limit: int) -> None:
    if sink.tell() + len(output) > limit:
        raise IntegrityError(f"payload size exceeds the announced {limit} bytes")
    digest.update(output)
    sink.write(output)


def _expect(what: str, actual: object, announced: object) -> None:
    if actual != announced:
        raise IntegrityError(f"{what} mismatch: pointer says {announced}, object has {actual}")

