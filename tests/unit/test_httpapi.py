"""The components' HTTP endpoint: binds IPv4 or IPv6 as configured, reads bearer tokens strictly."""

import re
import urllib.request

import pytest

from claimcheck.httpapi import Request, routes_for, serve
from claimcheck.localstack.ports import free_port


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", "127.0.0.1"), ("::", "::1")])
def test_binds_the_configured_address(host: str, loopback: str) -> None:
    port = free_port(loopback)
    url_host = f"[{loopback}]" if ":" in loopback else loopback
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
