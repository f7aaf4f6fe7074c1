"""A sender and a receiver built on the public API, run as processes whose peak RSS the tests measure.

    python -m tests.integration.library_probe send FILE|gen:<bytes> <job> <group,group>
    python -m tests.integration.library_probe receive <group> <count>

``send`` prints the pointer as JSON (and, for a generated payload, the sha256 it generated);
``receive`` prints one JSON line per payload with the sha256 it read, and exits once ``count`` were acknowledged.
"""

import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from claimcheck import Consumer, Message, Producer

CHUNK = 1024 * 1024


def generated(size: int, digest: "hashlib._Hash") -> Iterator[bytes]:
    """``size`` pseudo-random bytes in chunks, hashed as they are produced."""
    block = hashlib.sha256(b"seed").digest() * (CHUNK // 32)
    for offset in range(0, size, CHUNK):
        chunk = block[: min(CHUNK, size - offset)]
        digest.update(chunk)
        yield chunk


def send(source: str, job: str, groups: str) -> None:
    digest = hashlib.sha256()
    data = generated(int(source[4:]), digest) if source.startswith("gen:") else Path(source)
    with Producer(job=job) as producer:
        pointer = producer.send(data, recipients=groups.split(","))
    print(json.dumps({"pointer": json.loads(pointer.encode()), "generated_sha256": digest.hexdigest()}))


def receive(group: str, count: int) -> None:
    stop = threading.Event()

    def handle(message: Message) -> None:
        digest = hashlib.sha256()
        for chunk in iter(lambda: message.payload.read(CHUNK), b""):
            digest.update(chunk)
        print(json.dumps({"object_id": message.object_id, "sha256": digest.hexdigest(), "size": message.size}),
              flush=True)

    consumer = Consumer(group, handle, workers=1)

    def until_acked() -> None:  # the pointer is acknowledged only after its business ACK was confirmed
        while not stop.wait(0.1):
            if consumer.stats.acked >= count:
                stop.set()

    threading.Thread(target=until_acked, daemon=True).start()
    consumer.run(stop)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(*sys.argv[2:5])
    else:
        receive(sys.argv[2], int(sys.argv[3]))
