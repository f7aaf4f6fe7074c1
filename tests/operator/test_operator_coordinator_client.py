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


SEEN_AUTH: list[str | None] = []


@pytest.fixture()
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = ANSWERS.get(self.path, (404, b"{}"))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_DELETE(self) -> None:
            SEEN_AUTH.append(self.headers.get("Authorization"))
            if self.path.endswith("old"):
                code = 405
            else:
                code = 200 if self.headers.get("Authorization") == "Bearer s3cret-token" else 401
            self.send_response(code)
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
    assert forget_job(server, "ns.x", 2, "s3cret-token") == "coordinator answered HTTP 200"
    assert forget_job(server, "ns.old", 2) == "coordinator answered HTTP 405"
    with pytest.raises(CoordinatorError):
        forget_job("http://127.0.0.1:9", "ns.x", 2)


def test_forget_sends_the_control_token_as_a_bearer_credential(server: str) -> None:
    SEEN_AUTH.clear()
    assert forget_job(server, "ns.x", 2, "s3cret-token") == "coordinator answered HTTP 200"
    assert SEEN_AUTH == ["Bearer s3cret-token"]


@pytest.mark.parametrize("token, says", [("", "no CLAIMCHECK_CONTROL_TOKEN"), ("wrong", "does not accept")])
def test_forget_without_an_accepted_token_is_an_error_that_never_prints_it(server: str, token: str, says: str) -> None:
    SEEN_AUTH.clear()
    with pytest.raises(CoordinatorError, match="HTTP 401") as raised:
        forget_job(server, "ns.x", 2, token)
    assert says in str(raised.value) and (not token or token not in str(raised.value))
    assert ([None] if not token else [f"Bearer {token}"]) == SEEN_AUTH
