"""The product's own per-byte work (issue 16): each pass it makes over a payload's bytes, timed alone
at full speed in this process, on a payload like the benchmark's (``claimcheck.payload.generate``).

The S3-only limit (bench/s3limit.py) moves the same bytes but neither compresses nor hashes them;
these passes are what the pipeline must spend on top of it (bench.results.required_pass_cpu adds
the ones the guarantee needs to the ceiling). Each pass is timed as the product calls it (same
chunk sizes, same library, same level), several times, interleaved so that load on the machine
hits them alike. CPU is the measuring thread's own (``time.thread_time``: user and system), wall
time from ``time.perf_counter``; on a loaded machine the wall MiB/s drop, the CPU per MiB hardly.

    python -m bench.passes --size 16777216     # one size, prints one JSON document
"""

import argparse
import hashlib
import io
import json
import math
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024
# Small payloads are timed over at least this many bytes per sample (the pass repeated).
MIN_BYTES_PER_SAMPLE = 8 * MiB
# What each pass reads: the payload (uncompressed) or the stored gzip object.
PAYLOAD, OBJECT = "payload", "object"


@dataclass(frozen=True)
class Pass:
    """One pass over the bytes, whether the guarantee (payload sha256 end to end, bounded
    decompression) needs it, and whether the product still makes it. ``key`` names its
    measurement in the results (``passes``); a pass no longer made is still timed, to show what
    dropping it saved."""

    key: str
    process: str
    what: str
    over: str
    needed: str
    made: str = "yes"
    proposal: str = ""


# Every pass over the payload the product makes or made, producer first. Socket reads and writes and
# the S3 client's own buffers are left out: the limit makes them too, so they are in its CPU (L).
CATALOGUE: tuple[Pass, ...] = (
    Pass("generate", "producer", "payload generation (`payload.generate`): repeats a 1 MiB filler block, and a slice of "
         "the whole block is the block itself, so only the first and last chunk are copied",
         PAYLOAD, "no (the benchmark's payload source; an application hands its own bytes)"),
    Pass("sha256_payload", "producer", "sha256 of the payload (`GzipHashingReader`, pointer `payload_sha256`)",
         PAYLOAD, "**yes**: the end-to-end check"),
    Pass("gzip", "producer", "gzip, ISA-L level 1 (`GzipHashingReader`, 1 MiB chunks)", PAYLOAD,
         "**yes**: one compression"),
    Pass("sha256_object", "producer", "sha256 of the gzip stream (pointer `object_sha256`)", OBJECT,
         "no: the payload's size and sha256 refuse any object that does not inflate to the announced payload",
         "**dropped**: pointers no longer carry `object_sha256`"),
    Pass("producer_rest", "producer", "the rest of `GzipHashingReader.read`: joining the compressor's outputs into each "
         "5 MiB part or the whole object below 8 MiB (one copy of the object), Python per chunk; above 8 MiB s3transfer "
         "copies the first 8 MiB once more (not measured here)", OBJECT, "no",
         proposal="hand s3transfer `memoryview`s of one part buffer filled in place"),
    Pass("sha256_object", "each consumer", "sha256 of the object as it arrives", OBJECT,
         "no: checked only once the whole object is read and inflated, it stops nothing earlier than the payload sha256, "
         "which with the bounded decompression catches whatever it catches",
         "**dropped**, but for pointers of earlier producers that still name an `object_sha256`"),
    Pass("gunzip", "each consumer", "bounded gunzip, ISA-L (`decompress(chunk, remaining + 1)` per 1 MiB read)", OBJECT,
         "**yes**: bounded decompression"),
    Pass("sha256_payload", "each consumer", "sha256 of the decompressed payload", PAYLOAD, "**yes**: the end-to-end check"),
    Pass("spool", "each consumer", "spooling the payload for the hook: 2 MiB in memory, then rolled over to a temporary "
         "file (one copy into the page cache)", PAYLOAD,
         "only when a hook reads the payload: it may see verified bytes only",
         "**only with a hook**: the default no-op hook (the benchmark's) verifies without keeping the payload"),
    Pass("consumer_rest", "each consumer", "the rest of `download_verified`: Python per chunk, size checks, `tell()`",
         OBJECT, "partly (the checks)"),
)
# Passes timed alone that the product makes as the benchmark runs it; the two "as a whole"
# measurements (the same configuration) give the rest: whole minus these parts.
PRODUCER_PARTS = ("sha256_payload", "gzip")
CONSUMER_PARTS = ("gunzip", "sha256_payload")
WHOLE = {"producer_rest": ("producer_whole", PRODUCER_PARTS), "consumer_rest": ("consumer_whole", CONSUMER_PARTS)}


class _InMemoryS3:
    """S3's GetObject for one stored object, from memory: ``download_verified``'s only S3 call."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def get_object(self, **_: Any) -> dict[str, Any]:
        return {"Body": io.BytesIO(self._data), "ContentLength": len(self._data)}


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[offset:offset + size] for offset in range(0, len(data), size)]


def _sha256(chunks: Iterable[bytes]) -> None:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)


def _time(work: Callable[[], None], repeat: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one ``work()``, averaged over ``repeat`` calls."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.thread_time() - cpu) / repeat, (time.perf_counter() - wall) / repeat


def _work(size: int) -> tuple[dict[str, Callable[[], None]], int]:
    """The timed passes over one payload of ``size`` bytes, and the size of its gzip object."""
    from isal import isal_zlib

    from claimcheck import payload, store
    from claimcheck.protocol import make_pointer, object_key

    chunks = list(payload.generate(size, "bench-passes", "0" * 32, 1))
    compressor = isal_zlib.compressobj(payload.GZIP_LEVEL, zlib.DEFLATED, 31)
    stored = b"".join([compressor.compress(chunk) for chunk in chunks] + [compressor.flush()])
    reads = _chunks(stored, store.READ_CHUNK)
    pointer = make_pointer(object_id="0" * 32, job="bench-passes", bucket="bench", key=object_key("bench-passes", "0" * 32),
                           payload_size=size, payload_sha256=hashlib.sha256(b"".join(chunks)).hexdigest(),
                           object_size=len(stored), recipients=["g"])
    s3 = _InMemoryS3(stored)

    def generate() -> None:
        for _ in payload.generate(size, "bench-passes", "0" * 32, 1):
            pass

    def gzip() -> None:
        compress = isal_zlib.compressobj(payload.GZIP_LEVEL, zlib.DEFLATED, 31)
        for chunk in chunks:
            compress.compress(chunk)
        compress.flush()

    def gunzip() -> None:  # bounded as store.download_verified bounds it
        decompress, produced = isal_zlib.decompressobj(31), 0
        for chunk in reads:
            data = chunk
            while data:
                produced += len(decompress.decompress(data, size - produced + 1))
                data = decompress.unconsumed_tail

    def spool() -> None:
        with tempfile.SpooledTemporaryFile(max_size=store.SPOOL_IN_MEMORY) as sink:
            for chunk in chunks:
                sink.write(chunk)

    def producer_whole() -> None:
        stream = payload.GzipHashingReader(iter(chunks))
        while stream.read(store.TRANSFER.multipart_chunksize):
            pass

    def consumer_whole() -> None:  # as the benchmark's consumers run: the no-op hook keeps no payload
        store.download_verified(s3, pointer, keep=False).close()

    return {
        "generate": generate,
        "sha256_payload": lambda: _sha256(chunks),
        "gzip": gzip,
        "sha256_object": lambda: _sha256(reads),
        "gunzip": gunzip,
        "spool": spool,
        "producer_whole": producer_whole,
        "consumer_whole": consumer_whole,
    }, len(stored)


def measure(size: int, samples: int = 3) -> dict[str, Any]:
    """Per pass and sample, the CPU and wall seconds of one pass over one payload of ``size`` bytes (whose gzip
    object has ``object_size``)."""
    work, object_size = _work(size)
    repeat = max(1, math.ceil(MIN_BYTES_PER_SAMPLE / size))
    timings: dict[str, dict[str, list[float]]] = {key: {"cpu_seconds": [], "wall_seconds": []} for key in work}
    for _ in range(samples):
        for key, run in work.items():
            cpu, wall = _time(run, repeat)
            timings[key]["cpu_seconds"].append(cpu)
            timings[key]["wall_seconds"].append(wall)
    return {"size": size, "object_size": object_size, "samples": samples, "passes": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16 * MiB, help="payload bytes")
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.size, args.samples)))


if __name__ == "__main__":
    main()
