"""``store.upload`` against the stack's real S3: one PutObject for an object below the multipart
threshold, a multipart upload above it, and the stored bytes exactly the stream's either way
(the first 8 MiB, read to decide, are not lost or sent twice)."""

import io
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from claimcheck import store
from claimcheck.config import Settings
from claimcheck.payload import GzipHashingReader, generate

MiB = 1024 * 1024


class ShortReads(io.RawIOBase):
    """A raw stream that returns at most ``step`` bytes per read, as a pipe or socket may."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._offset, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data[self._offset:self._offset + min(len(buffer), self._step)]
        buffer[:len(chunk)] = chunk
        self._offset += len(chunk)
        return len(chunk)


@pytest.fixture
def key(s3: Any, settings: Settings) -> Iterator[str]:
    name = f"upload-test/{uuid.uuid4().hex}.bin"
    yield name
    store.delete(s3, settings.s3_bucket, name)


def stored(s3: Any, settings: Settings, key: str) -> tuple[bytes, str]:
    response = s3.get_object(Bucket=settings.s3_bucket, Key=key)
    return response["Body"].read(), response["ETag"].strip('"')


def test_an_object_below_the_threshold_is_one_put(s3: Any, settings: Settings, key: str) -> None:
    reader = GzipHashingReader(generate(MiB, "upload-test", "0" * 32, 1))
    store.upload(s3, settings.s3_bucket, key, reader)
    data, etag = stored(s3, settings, key)
    assert len(data) == reader.object_size < store.TRANSFER.multipart_threshold
    assert "-" not in etag  # a multipart upload's ETag ends in -<parts>


@pytest.mark.parametrize("size", [store.TRANSFER.multipart_threshold, 13 * MiB + 7])
def test_an_object_from_the_threshold_up_is_multipart_and_complete(s3: Any, settings: Settings, key: str,
                                                                    size: int) -> None:
    payload = os.urandom(size)
    store.upload(s3, settings.s3_bucket, key, io.BytesIO(payload))
    data, etag = stored(s3, settings, key)
    assert data == payload
    assert etag.endswith(f"-{-(-size // store.TRANSFER.multipart_chunksize)}")


def test_a_stream_reading_short_is_stored_whole(s3: Any, settings: Settings, key: str) -> None:
    payload = os.urandom(3 * MiB + 1)
    store.upload(s3, settings.s3_bucket, key, ShortReads(payload, 64 * 1024))
    assert stored(s3, settings, key)[0] == payload
