"""Send a batch of invoices to the billing and audit services and wait until both confirmed them.

    python examples/invoices/sender.py --count 3 [--recipients billing,audit] [--large-mib 20]

Small invoices travel inline inside the signed message; the monthly ledger export (``--large-mib``)
is streamed from a file through S3. Exits 0 once every payload was confirmed by every recipient
and deleted from storage.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from claimcheck import Producer, wait_until_deleted


def invoice(number: int) -> bytes:
    return json.dumps({"invoice": number, "customer": f"C-{1000 + number}", "total_cents": 4200 + number}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--recipients", default="billing,audit")
    parser.add_argument("--large-mib", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    recipients = args.recipients.split(",")

    with Producer() as producer, tempfile.TemporaryDirectory() as scratch:
        for number in range(args.count):
            pointer = producer.send(invoice(number), recipients=recipients, content_type="application/json",
                                    metadata={"kind": "invoice", "number": str(number)})
            print(f"sent invoice {number} as {pointer.object_id} ({'inline' if pointer.is_inline else 'via S3'})")
        export = Path(scratch) / "ledger-export.bin"
        with export.open("wb") as file:
            for _ in range(args.large_mib):
                file.write(os.urandom(1024 * 1024))
        pointer = producer.send(export, recipients=recipients, metadata={"kind": "export", "filename": export.name})
        print(f"sent {export.name} ({args.large_mib} MiB) as {pointer.object_id} "
              f"({'inline' if pointer.is_inline else 'via S3'})")
        job = producer.job

    report = wait_until_deleted(job, args.count + 1, args.timeout)
    print(f"job {job}: {report.deleted} payloads confirmed by {', '.join(sorted(report.acked))} and deleted")


if __name__ == "__main__":
    main()
