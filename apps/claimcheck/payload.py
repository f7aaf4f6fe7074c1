"""Produce step: a JSON payload of an exact size, generated and gzipped as a stream.

Nothing here holds the whole payload: the generator yields chunks and
:class:`GzipHashingReader` compresses them on demand while hashing both sides, so memory stays
flat whatever ``MSG_SIZE`` is.
"""

import base64
import hashlib
import io
import json
import os
import random
import zlib
from collections.abc import Iterator

from isal import isal_zlib  # ISA-L: the same gzip format, an order of magnitude faster deflate

CHUNK_SIZE = 1024 * 1024
# Filler text: base64 of random bytes compresses about as well as real JSON data does (~25%),
# and a block longer than gzip's 32 KiB window keeps the compressor honest.
_FILLER_BLOCK = base64.b64encode(os.urandom(3 * CHUNK_SIZE // 4))
# ISA-L level 1: ~460 MiB/s and 75.2 % on this payload, against ~30 MiB/s and 75.7 % for zlib level 6.
GZIP_LEVEL = 1


def payload_header(job: str, object_id: str, seq: int) -> bytes:
    """The JSON text before the filler; the payload is ``header + filler + '"}'``."""
    return json.dumps({"job": job, "object_id": object_id, "seq": seq, "filler": ""})[:-2].encode()


def minimum_size(job: str, object_id: str, seq: int) -> int:
    """The smallest payload that still is a valid document."""
    return len(payload_header(job, object_id, seq)) + 2


def generate(size: int, job: str, object_id: str, seq: int) -> Iterator[bytes]:
    """Yield a JSON document of exactly ``size`` bytes in chunks of at most CHUNK_SIZE."""
    header = payload_header(job, object_id, seq)
    filler = size - len(header) - 2
    if filler < 0:
        raise ValueError(f"payload size {size} is below the minimum of {len(header) + 2} bytes")
    yield header
    offset = random.randrange(len(_FILLER_BLOCK))
    while filler > 0:
        take = min(filler, CHUNK_SIZE, len(_FILLER_BLOCK) - offset)
        yield _FILLER_BLOCK[offset : offset + take]
        filler -= take
        offset = (offset + take) % len(_FILLER_BLOCK)
    yield b'"}'


class GzipHashingReader(io.RawIOBase):
    """A read-only stream of the gzip of ``chunks``, recording sizes and sha256 of both forms.

    boto3's multipart upload reads from it part by part, so at most a few parts are in memory.
    The digests are final once the stream has been read to its end.
    """

    def __init__(self, chunks: Iterator[bytes], level: int = GZIP_LEVEL) -> None:
        self._chunks = chunks
        self._compressor = isal_zlib.compressobj(level, zlib.DEFLATED, 31)
        self._pending = bytearray()
        self._done = False
        self.payload_hash = hashlib.sha256()
        self.object_hash = hashlib.sha256()
        self.payload_size = 0
        self.object_size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        while len(self._pending) < len(buffer) and not self._done:
            self._fill()
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        del self._pending[:count]
        return count

    def _fill(self) -> None:
        chunk = next(self._chunks, None)
        if chunk is None:
            self._emit(self._compressor.flush())
            self._done = True
            return
        self.payload_hash.update(chunk)
        self.payload_size += len(chunk)
        self._emit(self._compressor.compress(chunk))

    def _emit(self, data: bytes) -> None:
        self.object_hash.update(data)
        self.object_size += len(data)
        self._pending += data
