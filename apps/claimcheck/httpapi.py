"""A component's small HTTP endpoint: health, readiness, JSON routes and Prometheus metrics.

Bounded against a flood: each connection gets a socket timeout, and at most
``MAX_CONCURRENT_REQUESTS`` are served at once; a connection beyond that is answered 503 at
once instead of getting a thread of its own.

Built on the standard library's ``http.server`` on purpose: the endpoint has five routes, and
the servers that bring routing (uvicorn with starlette, waitress, cheroot, werkzeug's) either
queue or stop accepting connections beyond a limit instead of answering 503 at once, or are
development servers; each would add a stack of dependencies for a dozen lines of routing.
"""

import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from claimcheck import metrics

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 16
SOCKET_TIMEOUT_SECONDS = 10.0
_BUSY_BODY = b'{"error": "busy"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))

Response = tuple[int, dict[str, Any]]
_Connection = socket.socket | tuple[bytes, socket.socket]  # socketserver's request: a connection, or a datagram


class Headers(Protocol):
    """Request headers as the stdlib parses them (case-insensitive), or a plain dict in tests."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True)
class Request:
    """What a route handler sees: its path match and the request's headers."""

    match: re.Match[str]
    headers: Headers = field(default_factory=dict[str, str])

    def __getitem__(self, group: str) -> str:
        return self.match[group]

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, if any."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


Route = tuple[str, re.Pattern[str], Callable[[Request], Response]]  # (method, path pattern, handler)
Readiness = Callable[[], str | None]  # None when ready, else the reason it is not


def routes_for(readiness: Readiness, extra: list[Route]) -> list[Route]:
    """/healthz, /readyz and ``extra`` routes."""

    def ready(_: Request) -> Response:
        reason = readiness()
        return (200, {"status": "ready"}) if reason is None else (503, {"status": "not ready", "reason": reason})

    return [
        ("GET", re.compile(r"^/healthz$"), lambda _: (200, {"status": "ok"})),
        ("GET", re.compile(r"^/readyz$"), ready),
        *extra,
    ]


def serve(port: int, routes: list[Route], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start serving ``routes`` (and /metrics, claimcheck's metrics registered first) on a daemon thread; return the server."""
    metrics.register()

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_SECONDS  # a client that stops sending or reading loses its connection

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                return
            self._route("GET")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            for route_method, pattern, handler in routes:
                match = pattern.match(path)
                if match and route_method == method:
                    try:
                        status, document = handler(Request(match, self.headers))
                    except Exception as exc:  # report, keep serving
                        log.exception("HTTP handler for %s failed", path)
                        status, document = 503, {"error": str(exc)}
                    self._send(status, json.dumps(document).encode(), "application/json")
                    return
            self._send(404, b'{"error": "not found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            log.debug("http: " + format, *args)

    server = (_BoundedServer6 if ":" in host else _BoundedServer)((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


class _BoundedServer(ThreadingHTTPServer):
    """A threading server with at most ``MAX_CONCURRENT_REQUESTS`` connections in service."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)

    def process_request(self, request: _Connection, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                assert isinstance(request, socket.socket)  # a stream server's requests are its connections
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: _Connection, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _BoundedServer6(_BoundedServer):
    """The same server bound to an IPv6 address (``::`` also accepts IPv4 where the system maps it)."""

    address_family = socket.AF_INET6
