"""Shared helpers of the integration tests: waiting with deadlines, running components in
threads, reading the dead-letter queue, and raw publishing for protocol-level tests."""

import collections
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.protocol import Ack, Pointer, now
from claimcheck.publisher import parameters
from claimcheck.signing import Signer
from tests.testkit import free_port as free_port  # re-exported for the suite
from tests.testkit import unique as unique
from tests.testkit import wait_until as wait_until


class Running:
    """A component's ``run(stop)`` on a thread, stopped and joined on ``stop()``."""

    def __init__(self, name: str, run: Callable[[threading.Event], None]) -> None:
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(run,), name=name, daemon=True)
        self.thread.start()

    def _run(self, run: Callable[[threading.Event], None]) -> None:
        try:
            run(self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"{self.thread.name} did not stop"
        if self.error is not None:
            raise self.error


class LocalKeys:
    """Every role's keys on the local stack, for hand-made messages; ``sign`` signs as a producer."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.pointer = settings.pointer_signer()

    def sign(self, body: bytes) -> dict[str, str]:
        return self.pointer.sign(body)

    def ack(self, recipient: str) -> Signer:
        """Recipient group ``recipient``'s ACK key."""
        return self._settings.ack_signer(recipient)


class DeadLetters:
    """Drains the dead-letter queue and remembers every message by message id."""

    def __init__(self, amqp_url: str) -> None:
        self._url = amqp_url
        self.seen: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.reasons: dict[tuple[str, str], str] = {}  # (message id, source queue) -> reason
        self.times: collections.Counter[str] = collections.Counter()  # message id -> dead letters of it

    def drain(self) -> None:
        connection = pika.BlockingConnection(parameters(self._url))
        try:
            channel = connection.channel()
            topology.declare(channel)
            while True:
                method, properties, body = channel.basic_get(topology.DEAD_LETTER_QUEUE, auto_ack=True)
                if method is None or properties is None or body is None:
                    return  # the queue is empty
                headers, message_id = dict(properties.headers or {}), str(properties.message_id)
                self.seen[message_id] = (headers, body)
                self.times[message_id] += 1
                source = str(headers.get(topology.SOURCE_HEADER, ""))
                self.reasons[(message_id, source)] = str(headers.get(topology.REASON_HEADER, ""))
        finally:
            connection.close()

    def reason_for(self, message_id: str, timeout: float = 30) -> str:
        """Wait until ``message_id`` was dead-lettered and return its reason header."""

        def arrived() -> bool:
            self.drain()
            return message_id in self.seen

        wait_until(arrived, timeout, f"message {message_id} in the dead-letter queue", poll=0.2)
        return str(self.seen[message_id][0][topology.REASON_HEADER])


def ack_for(pointer: Pointer, recipient: str, sha256: str | None = None) -> Ack:
    return Ack(
        object_id=pointer.object_id,
        job=pointer.job,
        recipient=recipient,
        payload_sha256=sha256 or pointer.payload_sha256,
        consumer="test",
        acked_at=now(),
    )


# bench/rss.py: a launcher of a few MiB that records its command's own peak RSS. Started straight
# from pytest (vfork), a child's ru_maxrss would start from pytest's high-water mark (~115 MiB),
# which hid any peak below it.
RSS_LAUNCHER = Path(__file__).resolve().parents[2] / "bench" / "rss.py"


def rss_measured(command: list[str], report: Path) -> list[str]:
    """``command`` run under the launcher, which writes its exit code and peak RSS to ``report``."""
    return [sys.executable, "-S", str(RSS_LAUNCHER), str(report), "--", *command]


def peak_rss(report: Path) -> int:
    """The peak RSS in bytes that ``rss_measured`` recorded."""
    return int(json.loads(report.read_text())["maxrss_bytes"])
