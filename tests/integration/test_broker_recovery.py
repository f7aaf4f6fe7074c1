"""Publishing through a broker that stops confirming: the publish is retried on a fresh
connection instead of hanging, and the message arrives exactly as sent once the broker recovers."""

import logging
import threading
from collections.abc import Iterator

import pika
import pytest

from claimcheck.config import Settings
from claimcheck.localstack.services import LocalStack
from claimcheck.publisher import BrokerSession, parameters
from tests.integration.integration_helpers import unique, wait_until


def set_memory_watermark(*value: str) -> None:
    """Set node rmq-0's memory high watermark; an alarm on one node blocks publishers cluster-wide."""
    LocalStack.from_env().node(0).rabbitmqctl("set_vm_memory_high_watermark", *value, timeout=60)


@pytest.fixture
def probe_queue(settings: Settings) -> Iterator[str]:
    name = unique("confirm-probe")
    connection = pika.BlockingConnection(parameters(settings.amqp_url))
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    yield name
    channel.queue_delete(name)
    connection.close()


def test_publish_blocked_by_a_memory_alarm_is_retried_until_confirmed(
    settings: Settings, probe_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="claimcheck.publisher")
    session = BrokerSession(settings.amqp_url, lambda channel: None, confirm_timeout=2)
    session.channel()
    done = threading.Event()
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            session.publish("", probe_queue, b"survives the alarm", message_id="probe")
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
        finally:
            done.set()

    set_memory_watermark("0")
    try:
        threading.Thread(target=publish, daemon=True).start()
        wait_until(lambda: any("Retrying" in r.getMessage() for r in caplog.records), 60, "a retried publish")
        assert not done.is_set(), "the publish claimed success while the broker was blocked"
    finally:
        set_memory_watermark("absolute", "1GB")  # the stack's configured value
    assert done.wait(120), "the publish never completed after the alarm cleared"
    session.close()
    assert errors == []

    connection = pika.BlockingConnection(parameters(settings.amqp_url))
    try:
        bodies = []
        channel = connection.channel()
        while (message := channel.basic_get(probe_queue, auto_ack=True))[0] is not None:
            bodies.append(message[2])
    finally:
        connection.close()
    assert bodies and set(bodies) == {b"survives the alarm"}
