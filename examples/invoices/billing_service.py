"""The billing service: books every invoice it receives (here: writes it to a directory).

    python examples/invoices/billing_service.py [--group billing] [--books DIR]

Runs until interrupted (Ctrl-C or SIGTERM). A handler that raises leaves the payload
unconfirmed: it is delivered again, and parked in the dead-letter queue after ten attempts.
"""

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from claimcheck import Consumer, Message

# Handlers run on several worker threads; a logger writes each line whole (print() does not).
log = logging.getLogger("billing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", default="billing")
    parser.add_argument("--books", type=Path, default=Path("books"))
    args = parser.parse_args()
    logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stdout)
    log.setLevel(logging.INFO)
    books: Path = args.books
    books.mkdir(parents=True, exist_ok=True)

    def book(message: Message) -> None:
        if message.metadata.get("kind") != "invoice":
            log.info("skipped %s %s (%d bytes)", message.metadata.get("kind"), message.object_id, message.size)
            return
        document = json.loads(message.read())  # verified: its sha256 matched the signed pointer
        (books / f"invoice-{document['invoice']}.json").write_text(json.dumps(document))
        log.info("booked invoice %s for %s", document["invoice"], document["customer"])

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    Consumer(args.group, book, workers=2).run(stop)


if __name__ == "__main__":
    main()
