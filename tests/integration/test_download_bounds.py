"""A forged or corrupt pointer costs a consumer no more than the pointer announced: against the
stack's real S3, ``download_verified`` refuses an object larger than announced before reading
it, stops reading at the first byte past the announced size even when S3 sends no length,
stops as soon as the gzip stream ends early or produces more than announced, and never spools
more than the announced payload.

Bytes actually read are counted by a stand-in around the S3 response body; timings and memory
are printed (``-s``) but only byte counts and traced allocations are asserted."""

import gzip
import hashlib
import io
import os
import resource
import tempfile
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from claimcheck import store
from claimcheck.config import Settings
from claimcheck.protocol import Pointer, make_pointer, object_key

MiB = 1024 * 1024
KiB = 1024


class CountingBody:
    """Stands in for botocore's StreamingBody and counts the bytes the code under test read."""

    def __init__(self, body: Any, counter: "CountingS3") -> None:
        self._body = body
        self._counter = counter

    def read(self, amt: int | None = None) -> bytes:
        data: bytes = self._body.read(amt)
        self._counter.bytes_read += len(data)
        return data

    def iter_chunks(self, chunk_size: int = 1024) -> Iterator[bytes]:
        while chunk := self.read(chunk_size):
            yield chunk

    def close(self) -> None:
        self._counter.closed = True
        self._body.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._body, name)


class CountingS3:
    """The real S3 client, with every GET body counted; optionally as if S3 sent no Content-Length."""

    def __init__(self, s3: Any, hide_length: bool = False) -> None:
        self._s3 = s3
        self._hide_length = hide_length
        self.bytes_read = 0
        self.closed = False

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        response = dict(self._s3.get_object(**kwargs))
        response["Body"] = CountingBody(response["Body"], self)
        if self._hide_length:
            response.pop("ContentLength", None)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


class ChunkStream(io.RawIOBase):
    """A readable stream over chunks produced on demand, so a large object never sits in memory."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        count = min(len(buffer), len(self._pending))
        buffer[:count], self._pending = self._pending[:count], self._pending[count:]
        self.digest.update(buffer[:count])
        self.size += count
        return count


def member(payload: bytes) -> bytes:
    """One gzip member, as the producer writes them."""
    return gzip.compress(payload, mtime=0)


def pointer_for(settings: Settings, *, payload: bytes, object_size: int, object_sha256: str,
                payload_size: int | None = None) -> Pointer:
    job, object_id = f"bounds-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    return make_pointer(
        object_id=object_id, job=job, bucket=settings.s3_bucket, key=object_key(job, object_id),
        payload_size=len(payload) if payload_size is None else payload_size,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        object_size=object_size, object_sha256=object_sha256, recipients=["billing"],
    )


def upload(s3: Any, settings: Settings, key: str, chunks: Iterable[bytes]) -> ChunkStream:
    stream = ChunkStream(chunks)
    store.upload(s3, settings.s3_bucket, key, stream)
    return stream


@pytest.fixture
def objects(s3: Any, settings: Settings) -> Iterator[list[str]]:
    """Keys to delete after the test."""
    keys: list[str] = []
    yield keys
    for key in keys:
        store.delete(s3, settings.s3_bucket, key)


@pytest.fixture(scope="module")
def oversized(s3: Any, settings: Settings) -> Iterator[tuple[Pointer, int]]:
    """A valid pointer to a 1 KiB payload whose stored object goes on for 200 MiB of zeros."""
    payload = os.urandom(KiB)
    head = member(payload)
    pointer = pointer_for(settings, payload=payload, object_size=len(head), object_sha256=hashlib.sha256(head).hexdigest())
    total = 200 * MiB
    zeros = bytes(MiB)

    def chunks() -> Iterator[bytes]:
        yield head
        left = total - len(head)
        while left:
            yield zeros[: min(len(zeros), left)]
            left -= min(len(zeros), left)

    stream = upload(s3, settings, pointer.stored.key, chunks())
    assert stream.size == total
    yield pointer, total
    store.delete(s3, settings.s3_bucket, pointer.stored.key)


def measured_download(s3: Any, pointer: Pointer) -> tuple[str, float, int]:
    """Run download_verified, which must refuse; return its reason, seconds and traced peak bytes."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(store.IntegrityError) as refused:
            store.download_verified(s3, pointer).close()
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    print(f"\nrefused in {elapsed * 1000:.1f} ms, traced peak {peak / KiB:.0f} KiB, "
          f"max RSS growth {growth} KiB: {refused.value}")
    return str(refused.value), elapsed, peak


def test_an_object_larger_than_its_pointer_says_is_refused_before_it_is_read(
    s3: Any, oversized: tuple[Pointer, int]
) -> None:
    pointer, total = oversized
    counting = CountingS3(s3)
    reason, _, peak = measured_download(counting, pointer)
    print(f"read {counting.bytes_read} of {total} bytes")
    assert "object size" in reason and str(total) in reason
    assert counting.bytes_read <= pointer.stored.size + 1
    assert counting.closed, "the response body was left open"
    assert peak < 4 * MiB


def test_without_a_content_length_reading_stops_at_the_first_byte_past_the_announced_size(
    s3: Any, oversized: tuple[Pointer, int]
) -> None:
    pointer, total = oversized
    counting = CountingS3(s3, hide_length=True)
    reason, _, peak = measured_download(counting, pointer)
    print(f"read {counting.bytes_read} of {total} bytes")
    assert "object size" in reason
    assert counting.bytes_read <= pointer.stored.size + 1
    assert peak < 4 * MiB


def stored_with_trailing_data(s3: Any, settings: Settings, objects: list[str], payload: bytes, trailing: int,
                              payload_size: int | None = None) -> Pointer:
    """A gzip member of ``payload`` followed by ``trailing`` random bytes; the pointer names the whole object."""
    head, tail = member(payload), os.urandom(trailing)
    whole = head + tail
    pointer = pointer_for(settings, payload=payload, payload_size=payload_size, object_size=len(whole),
                          object_sha256=hashlib.sha256(whole).hexdigest())
    objects.append(pointer.stored.key)
    upload(s3, settings, pointer.stored.key, [whole])
    return pointer


def test_a_gzip_stream_that_ends_before_the_object_fails_when_it_ends(
    s3: Any, settings: Settings, objects: list[str]
) -> None:
    pointer = stored_with_trailing_data(s3, settings, objects, os.urandom(MiB), trailing=12 * MiB)
    counting = CountingS3(s3)
    reason, _, _ = measured_download(counting, pointer)
    print(f"read {counting.bytes_read} of {pointer.stored.size} bytes")
    assert "trailing data" in reason
    assert counting.bytes_read < pointer.stored.size // 2


def test_a_gzip_stream_that_ends_short_of_the_announced_payload_fails_when_it_ends(
    s3: Any, settings: Settings, objects: list[str]
) -> None:
    pointer = stored_with_trailing_data(s3, settings, objects, os.urandom(MiB), trailing=12 * MiB,
                                        payload_size=2 * MiB)
    counting = CountingS3(s3)
    reason, _, _ = measured_download(counting, pointer)
    print(f"read {counting.bytes_read} of {pointer.stored.size} bytes")
    assert "payload size" in reason
    assert counting.bytes_read < pointer.stored.size // 2


def test_a_shorter_payload_than_announced_is_refused(s3: Any, settings: Settings, objects: list[str]) -> None:
    payload = os.urandom(MiB)
    whole = member(payload)
    pointer = pointer_for(settings, payload=payload, payload_size=len(payload) + 1, object_size=len(whole),
                          object_sha256=hashlib.sha256(whole).hexdigest())
    objects.append(pointer.stored.key)
    upload(s3, settings, pointer.stored.key, [whole])
    reason, _, _ = measured_download(CountingS3(s3), pointer)
    assert "payload size" in reason


def test_a_truncated_gzip_stream_is_refused(s3: Any, settings: Settings, objects: list[str]) -> None:
    payload = os.urandom(MiB)
    cut = member(payload)[: -4 * KiB]
    pointer = pointer_for(settings, payload=payload, object_size=len(cut), object_sha256=hashlib.sha256(cut).hexdigest())
    objects.append(pointer.stored.key)
    upload(s3, settings, pointer.stored.key, [cut])
    reason, _, _ = measured_download(CountingS3(s3), pointer)
    assert "truncated" in reason


@pytest.fixture
def spooled(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The largest size each spool download_verified opens ever reaches."""
    sizes: list[int] = []
    original = tempfile.SpooledTemporaryFile

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._index = len(sizes)
            sizes.append(0)

        def write(self, data: Any) -> int:
            written: int = super().write(data)
            sizes[self._index] = max(sizes[self._index], self.tell())
            return written

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", Recording)  # the module store spools with
    return sizes


def test_a_longer_payload_than_announced_is_refused_early_and_never_spooled_past_the_announced_size(
    s3: Any, settings: Settings, objects: list[str], spooled: list[int]
) -> None:
    payload = os.urandom(16 * MiB)  # random: the object is as large as the payload
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    whole = compressor.compress(payload) + compressor.flush()
    announced = 3 * MiB  # past store.SPOOL_IN_MEMORY: the spool is on disk by then
    pointer = pointer_for(settings, payload=payload, payload_size=announced, object_size=len(whole),
                          object_sha256=hashlib.sha256(whole).hexdigest())
    objects.append(pointer.stored.key)
    upload(s3, settings, pointer.stored.key, [whole])
    counting = CountingS3(s3)
    reason, _, _ = measured_download(counting, pointer)
    print(f"read {counting.bytes_read} of {pointer.stored.size} bytes, spooled at most {max(spooled)} bytes")
    assert "exceeds" in reason and str(announced) in reason
    assert counting.bytes_read < pointer.stored.size // 2
    assert spooled and max(spooled) <= announced
