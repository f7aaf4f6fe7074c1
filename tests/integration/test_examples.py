"""examples/invoices runs against the real stack: a sender and two receiving services, public API only."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.integration.integration_helpers import wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "invoices"


def test_the_invoices_example_delivers_to_both_services_and_everything_is_deleted(
    coordinator_url: str, recipients: Callable[..., list[str]], tmp_path: Path,
) -> None:
    billing, audit = recipients("ex-billing", "ex-audit")
    env = {**os.environ, "CLAIMCHECK_COORDINATOR_URL": coordinator_url}
    books = tmp_path / "books"
    logs = {name: (tmp_path / f"{name}.out").open("w+") for name in ("billing", "audit")}
    services = [
        subprocess.Popen([sys.executable, str(EXAMPLE / "billing_service.py"), "--group", billing, "--books", str(books)],
                         env=env, stdout=logs["billing"], stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, str(EXAMPLE / "audit_service.py"), "--group", audit],
                         env=env, stdout=logs["audit"], stderr=subprocess.STDOUT),
    ]
    try:
        sent = subprocess.run([sys.executable, str(EXAMPLE / "sender.py"), "--count", "3", "--recipients",
                               f"{billing},{audit}", "--large-mib", "12"], env=env, capture_output=True, text=True,
                              timeout=300)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        lines = sent.stdout.splitlines()
        assert sum("inline" in line for line in lines[:3]) == 3 and "via S3" in lines[3], sent.stdout
        assert lines[-1].endswith("payloads confirmed by " + ", ".join(sorted([billing, audit])) + " and deleted")
        wait_until(lambda: len(list(books.glob("invoice-*.json"))) == 3, 10, "three invoices booked")
        assert json.loads((books / "invoice-2.json").read_text())["customer"] == "C-1002"
    finally:
        for service in services:
            service.send_signal(signal.SIGTERM)
        for service in services:
            service.wait(timeout=60)
    audit_lines = [line for line in (tmp_path / "audit.out").read_text().splitlines() if line.startswith("audit: ")]
    assert len(audit_lines) == 4 and sum(" stored " in line for line in audit_lines) == 1, audit_lines
    assert all(service.returncode == 0 for service in services)
