"""The coordinator client against a real local HTTP server speaking the documented contract."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from claimcheck_operator.coordinator import CoordinatorError, fetch_progress, forget_job
from claimcheck_operator.observe import Progress

ANSWERS: dict[str, tuple[int, bytes]] = {
    "/jobs/ns.ok": (200, json.dumps({"job": "ns.ok", "published": 3, "acked": {"a": 3}, "deleted": 2, "pending": 1}).encode()),
    "/jobs/ns.broken": (500, b"boom"),
    "/jobs/ns.garbage": (200, b"not json"),
    "/jobs/ns.partial": (200, json.dumps({"job": "ns.partial", "acked": {}}).encode()),
}


@pytest.fixture()
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            code, body = ANSWERS.get(self.path, (404, b"{}"))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_DELETE(self) -> None:  # noqa: N802
            self.send_response(405 if self.path.endswith("old") else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_counts(server: str) -> None:
    assert fetch_progress(server, "ns.ok", 2) == Progress(published=3, acked={"a": 3}, deleted=2, pending=1)


def test_unknown_job_is_all_zero(server: str) -> None:
    assert fetch_progress(server, "ns.new", 2) == Progress()


@pytest.mark.parametrize("job, fragment", [("ns.broken", "HTTP 500"), ("ns.garbage", "failed"), ("ns.partial", "published")])
def test_errors_say_why(server: str, job: str, fragment: str) -> None:
    with pytest.raises(CoordinatorError, match=fragment):
        fetch_progress(server, job, 2)


def test_refused_connection() -> None:
    with pytest.raises(CoordinatorError, match="127.0.0.1:9/jobs/ns.x failed"):
        fetch_progress("http://127.0.0.1:9", "ns.x", 2)


def test_forget_tolerates_an_older_coordinator(server: str) -> None:
    assert forget_job(server, "ns.x", 2) == "coordinator answered HTTP 200"
    assert forget_job(server, "ns.old", 2) == "coordinator answered HTTP 405"
    with pytest.raises(CoordinatorError):
        forget_job("http://127.0.0.1:9", "ns.x", 2)
