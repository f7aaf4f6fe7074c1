"""The download path's guards as logic, in memory: what a forged or corrupt pointer costs a consumer.

``store.download_verified`` reads the object from an in-memory stand-in of S3's GET (the only
call it makes); tests/integration/test_download_bounds.py proves the same against the stack's
real S3 with large objects. Here each case runs in milliseconds.
"""

import gzip
import hashlib
import io
import tracemalloc
import uuid
from typing import Any

import pytest

from claimcheck import store
from claimcheck.protocol import Pointer, make_pointer, object_key

KiB = 1024


class Body(io.BytesIO):
    """A response body that counts what the code under test read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


class ObjectStore:
    """S3's GetObject for one object: its body, and the Content-Length S3 announces (by default
    the body's own length; None: S3 sent none)."""

    def __init__(self, data: bytes, content_length: int | None = -1) -> None:
        self.body = Body(data)
        self.content_length = len(data) if content_length == -1 else content_length

    def get_object(self, **_: Any) -> dict[str, Any]:
        return {"Body": self.body, "ContentLength": self.content_length}


def pointer_for(stored: bytes, payload: bytes, **announced: Any) -> Pointer:
    """A pointer to ``stored`` (the gzip object) and ``payload`` (what it should inflate to), as
    producers write them (no ``object_sha256``, unless ``announced`` gives one)."""
    object_id = uuid.uuid4().hex
    fields: dict[str, Any] = {
        "object_size": len(stored),
        "payload_size": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(), **announced,
    }
    return make_pointer(object_id=object_id, job="run-1", bucket="claimcheck", key=object_key("run-1", object_id),
                        recipients=["billing"], **fields)


def test_a_matching_object_is_returned_rewound() -> None:
    payload = b'{"n": 1}' * 1000
    stored = gzip.compress(payload)
    with store.download_verified(ObjectStore(stored), pointer_for(stored, payload)) as spool:
        assert spool.read() == payload


@pytest.mark.parametrize("keep", [True, False])
def test_a_gzip_bomb_stops_just_past_the_announced_payload_size(keep: bool) -> None:
    payload = bytes(64 * KiB * KiB)  # 64 MiB of zeros: a 64 KiB object
    stored = gzip.compress(payload)
    pointer, s3 = pointer_for(stored, payload, payload_size=KiB), ObjectStore(stored)
    del payload
    tracemalloc.start()
    try:
        with pytest.raises(store.IntegrityError, match="exceeds the announced 1024 bytes"):
            store.download_verified(s3, pointer, keep=keep)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * KiB * KiB, f"inflating the bomb allocated {peak} bytes"  # never the 64 MiB it inflates to


def test_an_object_whose_length_is_not_the_announced_one_is_not_read() -> None:
    payload = b"x" * 10 * KiB
    stored = gzip.compress(payload)
    s3 = ObjectStore(stored, content_length=len(stored) + 1)
    with pytest.raises(store.IntegrityError, match="S3 announces"):
        store.download_verified(s3, pointer_for(stored, payload))
    assert s3.body.read_bytes == 0 and s3.body.closed


def test_without_a_length_reading_stops_at_the_first_byte_past_the_announced_object() -> None:
    payload = uuid.uuid4().bytes * 4 * KiB
    stored = gzip.compress(payload)
    s3 = ObjectStore(stored + b"more than announced" * 100, content_length=None)
    with pytest.raises(store.IntegrityError, match="object has more bytes"):
        store.download_verified(s3, pointer_for(stored, payload))
    assert s3.body.read_bytes == len(stored) + 1


def test_a_truncated_gzip_stream_is_refused() -> None:
    payload = uuid.uuid4().bytes * 4 * KiB
    stored = gzip.compress(payload)[:-100]  # the object as announced, but its gzip stream is cut
    with pytest.raises(store.IntegrityError, match="truncated"):
        store.download_verified(ObjectStore(stored), pointer_for(stored, payload))


def test_a_stream_ending_short_of_the_announced_payload_fails_when_it_ends() -> None:
    payload = b"y" * 10 * KiB
    stored = gzip.compress(payload)
    with pytest.raises(store.IntegrityError, match="payload size mismatch"):
        store.download_verified(ObjectStore(stored), pointer_for(stored, payload, payload_size=len(payload) + 1))


def test_data_after_the_gzip_stream_is_refused() -> None:
    payload = b"z" * 10 * KiB
    stored = gzip.compress(payload) + gzip.compress(b"smuggled")
    with pytest.raises(store.IntegrityError, match="trailing data"):
        store.download_verified(ObjectStore(stored), pointer_for(stored, payload))


def test_an_object_that_is_not_gzip_is_refused() -> None:
    stored = b"not gzip at all" * 10
    with pytest.raises(store.IntegrityError, match="not valid gzip"):
        store.download_verified(ObjectStore(stored), pointer_for(stored, b"whatever"))


def test_every_altered_byte_of_an_object_is_refused_or_inflates_to_the_announced_payload() -> None:
    """Without ``object_sha256`` the payload checks alone guard the object: a consumer never sees
    other bytes than the announced ones. (Some bytes name no content, such as the gzip header's
    mtime or a deflate block's padding bits: they may change without changing the payload, and
    that object passes, rightly.)"""
    payload = b'{"n": %d}' % 7 * 300 + uuid.uuid4().bytes * 8
    stored = gzip.compress(payload, mtime=0)
    pointer = pointer_for(stored, payload)
    refused = 0
    for offset in range(len(stored)):
        altered = bytearray(stored)
        altered[offset] ^= 0x5A
        try:
            with store.download_verified(ObjectStore(bytes(altered)), pointer) as spool:
                assert spool.read() == payload, f"byte {offset} altered the payload unnoticed"
        except store.IntegrityError:
            refused += 1
    assert refused > len(stored) - 16


def test_an_earlier_producers_object_sha256_is_still_checked() -> None:
    payload = b"w" * 10 * KiB
    stored = gzip.compress(payload, mtime=0)
    other = gzip.compress(payload, mtime=1)  # the same payload in a different object of the same size
    pointer = pointer_for(stored, payload, object_sha256=hashlib.sha256(stored).hexdigest())
    with store.download_verified(ObjectStore(stored), pointer) as spool:
        assert spool.read() == payload
    with pytest.raises(store.IntegrityError, match="object sha256 mismatch"):
        store.download_verified(ObjectStore(other), pointer)


def test_without_keep_the_payload_is_verified_and_not_kept() -> None:
    payload = uuid.uuid4().bytes * 256 * KiB  # 4 MiB, past the spool's 2 MiB in memory
    stored = gzip.compress(payload)
    tracemalloc.start()
    try:
        with store.download_verified(ObjectStore(stored), pointer_for(stored, payload), keep=False) as empty:
            assert empty.read() == b""
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * KiB * KiB, f"verifying without keeping allocated {peak} bytes"
    with pytest.raises(store.IntegrityError, match="payload sha256 mismatch"):
        store.download_verified(ObjectStore(stored), pointer_for(stored, payload[:-1] + b"?"), keep=False)
