"""The rendered haproxy.cfg run by a real HAProxy against fake AMQP nodes on 127.0.0.1.

Proves the AMQP-level health check: a node answering the protocol header with a
Connection.Start frame is UP, a node answering anything else is DOWN, and /readyz turns
503 when no node is up. Skipped (with the reason) where no `haproxy` binary is installed
(Debian: apt-get install haproxy).
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testkit import free_port, wait_until

from .conftest import INFRA, one, render

HAPROXY = shutil.which("haproxy") or "haproxy"
pytestmark = pytest.mark.skipif(shutil.which(HAPROXY) is None, reason="no haproxy binary here (apt-get install haproxy)")


def connection_start() -> bytes:
    args = (struct.pack(">HHBB", 10, 10, 0, 9) + struct.pack(">I", 0)
            + struct.pack(">I", 5) + b"PLAIN" + struct.pack(">I", 5) + b"en_US")
    return struct.pack(">BHI", 1, 0, len(args)) + args + b"\xce"


class FakeNode:
    """Accepts connections; answers the AMQP header with Connection.Start (good) or HTTP (bad)."""

    def __init__(self, good: bool) -> None:
        self.good = good
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    header = conn.recv(8)
                    conn.sendall(connection_start() if self.good and header == b"AMQP\x00\x00\x09\x01"
                                 else b"HTTP/1.1 400 Bad Request\r\n\r\n")
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[tuple[int, list[FakeNode], Path]]:
    rendered = render(INFRA, sets=("haproxy.checkIntervalSeconds=1",))
    cfg = one(rendered, "ConfigMap", "claimcheck-infra-haproxy")["data"]["haproxy.cfg"]
    nodes = [FakeNode(good=True), FakeNode(good=False), FakeNode(good=False)]
    for i, node in enumerate(nodes):
        cfg, n = re.subn(rf"(server rmq-{i} )\S+:5672$", rf"\g<1>127.0.0.1:{node.port}", cfg, flags=re.M)
        assert n == 1
    health, amqp, mgmt = free_port(), free_port(), free_port()
    cfg = cfg.replace("bind :8404", f"bind 127.0.0.1:{health}").replace("bind :5672", f"bind 127.0.0.1:{amqp}")
    cfg = cfg.replace("bind :15672", f"bind 127.0.0.1:{mgmt}")
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = tmp_path / "haproxy.log"
    with log.open("w") as out:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield health, nodes, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for node in nodes:
            node.stop()


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_amqp_health_check_with_real_haproxy(haproxy: tuple[int, list[FakeNode], Path]) -> None:
    health, nodes, log = haproxy
    wait_until(lambda: get(health, "/healthz") == 200, 10, "HAProxy /healthz to answer")
    # Servers start UP; the two nodes that do not speak AMQP go DOWN, the real one stays.
    wait_until(lambda: "rabbitmq_amqp/rmq-1 is DOWN" in log.read_text() and "rabbitmq_amqp/rmq-2 is DOWN" in log.read_text(),
               15, "rmq-1 and rmq-2 marked DOWN in the HAProxy log")
    time.sleep(2.5)  # two more check intervals: rmq-0 keeps passing
    assert "rabbitmq_amqp/rmq-0 is DOWN" not in log.read_text(), log.read_text()
    assert get(health, "/readyz") == 200
    nodes[0].stop()
    wait_until(lambda: get(health, "/readyz") == 503, 15, "readyz to turn 503 with no node up")
    assert "rabbitmq_amqp/rmq-0 is DOWN" in log.read_text()
    assert get(health, "/healthz") == 200
