"""The components' HTTP endpoint: binds IPv4 or IPv6 as configured, reads bearer tokens strictly."""

import re
import socket
import urllib.request

import pytest

from claimcheck.httpapi import Request, routes_for, serve


def free_port(family: socket.AddressFamily) -> int:
    with socket.socket(family) as probe:
        probe.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("host", "url_host", "family"), [("127.0.0.1", "127.0.0.1", socket.AF_INET),
                                                         ("::", "[::1]", socket.AF_INET6)])
def test_binds_the_configured_address(host: str, url_host: str, family: socket.AddressFamily) -> None:
    port = free_port(family)
    server = serve(port, routes_for(lambda: None, []), host)
    try:
        with urllib.request.urlopen(f"http://{url_host}:{port}/readyz", timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()


@pytest.mark.parametrize(("header", "token"), [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None),
                                               ("Bearer", None), ("", None)])
def test_bearer_token(header: str, token: str | None) -> None:
    request = Request(re.match("x", "x"), {"Authorization": header} if header else {})  # type: ignore[arg-type]
    assert request.bearer_token() == token
