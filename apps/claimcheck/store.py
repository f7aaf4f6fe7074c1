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


def _object_chunks(s3: Any, pointer: Pointer) -> Iterator[bytes]:
    try:
        response = s3.get_object(Bucket=pointer.bucket, Key=pointer.key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
            raise ObjectMissing(f"object s3://{pointer.bucket}/{pointer.key} does not exist") from None
        raise
    yield from response["Body"].iter_chunks(READ_CHUNK)


def download_verified(s3: Any, pointer: Pointer) -> IO[bytes]:
    """Download, decompress and verify the payload ``pointer`` names; return it rewound.

    Sizes and sha256 of the stored object and of the decompressed payload must all match the
    pointer, otherwise :class:`IntegrityError` says which. Decompression stops as soon as the
    output exceeds the announced size, so a forged pointer cannot inflate a gzip bomb.
    """
    object_hash, payload_hash = hashlib.sha256(), hashlib.sha256()
    object_size = 0
    decompressor = isal_zlib.decompressobj(31)  # same API as zlib's, ~2x faster
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    try:
        for chunk in _object_chunks(s3, pointer):
            object_size += len(chunk)
            object_hash.update(chunk)
            _feed(decompressor, chunk, payload_hash, spool, pointer.payload_size)
        _expect("object size", object_size, pointer.object_size)
        _expect("object sha256", object_hash.hexdigest(), pointer.object_sha256)
        _emit(decompressor.flush(), payload_hash, spool, pointer.payload_size)
        if not decompressor.eof or decompressor.unused_data:
            raise IntegrityError("gzip stream is truncated or has trailing data")
        _expect("payload size", spool.tell(), pointer.payload_size)
        _expect("payload sha256", payload_hash.hexdigest(), pointer.payload_sha256)
    except _GZIP_ERRORS as exc:
        spool.close()
        raise IntegrityError(f"payload is not valid gzip: {exc}") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool  # type: ignore[return-value]


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
