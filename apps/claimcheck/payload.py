"""Produce step: a JSON payload of an exact size, generated and gzipped as a stream.

Nothing here holds the whole payload: the generator yields chunks and
:class:`GzipHashingReader` compresses them on demand while hashing the payload, so memory stays
flat whatever ``MSG_SIZE`` is.
"""

import base64
import collections
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
    """A read-only stream of the gzip of ``chunks``, recording both sizes and the payload's sha256.

    boto3's multipart upload reads from it part by part, so at most a few parts are in memory.
    Sizes and digest are final once the stream has been read to its end. The gzip object is not
    hashed: the payload's sha256 already covers it (see ``protocol.Pointer``).
    """

    def __init__(self, chunks: Iterator[bytes], level: int = GZIP_LEVEL) -> None:
        self._chunks = chunks
        self._compressor = isal_zlib.compressobj(level, zlib.DEFLATED, 31)
        # Compressed output not read yet, as the compressor returned it: read() joins exactly
        # what it hands out, one copy per part instead of the three of a growing bytearray.
        self._pending: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self.payload_hash = hashlib.sha256()
        self.payload_size = 0
        self.object_size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes of the gzip stream (all of the rest if ``size`` is negative)."""
        while (size is None or size < 0 or self._buffered < size) and not self._done:
            self._fill()
        if size is None or size < 0 or size >= self._buffered:
            data = b"".join(self._pending)
            self._pending.clear()
            self._buffered = 0
            return data
        taken, need = [], size
        while need:
            head = self._pending.popleft()
            if len(head) > need:
                self._pending.appendleft(head[need:])
                head = head[:need]
            taken.append(head)
            need -= len(head)
        self._buffered -= size
        return b"".join(taken)

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

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
        if data:
            self.object_size += len(data)
            self._pending.append(data)
            self._buffered += len(data)
