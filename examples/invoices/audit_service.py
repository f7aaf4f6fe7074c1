"""The audit service: records a digest of everything it receives, whatever its size.

    python examples/invoices/audit_service.py [--group audit]

Streams each verified payload (a large one is read from a temporary file, never held whole)
and prints one audit line per payload. Runs until interrupted.
"""

import argparse
import hashlib
import logging
import signal
import sys
import threading

from claimcheck import Consumer, Message

# Handlers run on several worker threads; a logger writes each line whole (print() does not).
log = logging.getLogger("audit")


def audit(message: Message) -> None:
    digest = hashlib.blake2b()
    for chunk in iter(lambda: message.payload.read(1024 * 1024), b""):
        digest.update(chunk)
    log.info("%s %s %d bytes %s blake2b=%s", message.object_id, message.metadata.get("kind", "?"), message.size,
             "inline" if message.inline else "stored", digest.hexdigest()[:16])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="audit")
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stdout)
    log.setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    Consumer(args.group, audit).run(stop)


if __name__ == "__main__":
    main()
