"""The audit service: records a digest of everything it receives, whatever its size.

    python examples/invoices/audit_service.py [--group audit]

Streams each verified payload (a large one is read from a temporary file, never held whole)
and prints one audit line per payload. Runs until interrupted.
"""

import argparse
import hashlib
import signal
import threading

from claimcheck import Consumer, Message


def audit(message: Message) -> None:
    digest = hashlib.blake2b()
    for chunk in iter(lambda: message.payload.read(1024 * 1024), b""):
        digest.update(chunk)
    print(f"audit: {message.object_id} {message.metadata.get('kind', '?')} {message.size} bytes "
          f"{'inline' if message.inline else 'stored'} blake2b={digest.hexdigest()[:16]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="audit")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    Consumer(args.group, audit).run(stop)


if __name__ == "__main__":
    main()
