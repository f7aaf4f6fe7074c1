"""Exchange and queue names, and the one function that declares them.

A pointer is published once to the direct exchange with routing key ``coordinator`` and the
recipient names in the ``CC`` header, so the broker fans it out atomically: one copy to the
coordinator's queue (which learns the recipient set from it) and one to each recipient's queue.
Every queue is a quorum queue that dead-letters to ``claimcheck.dead`` after a bounded number
of deliveries. docs/protocol.md draws the picture.
"""

from collections.abc import Iterable

from pika.adapters.blocking_connection import BlockingChannel

POINTER_EXCHANGE = "claimcheck.pointers"
ACK_EXCHANGE = "claimcheck.acks"
DEAD_EXCHANGE = "claimcheck.dead"

COORDINATOR_ROUTING_KEY = "coordinator"
ACK_ROUTING_KEY = "ack"

COORDINATOR_POINTER_QUEUE = "claimcheck.coordinator.pointers"
ACK_QUEUE = "claimcheck.coordinator.acks"
DEAD_LETTER_QUEUE = "claimcheck.dead-letters"

# A message redelivered this many times (consumer crashes, nacks) is dead-lettered by the broker.
DELIVERY_LIMIT = 10

# Header carrying the readable reason a message was dead-lettered by a component.
REASON_HEADER = "x-claimcheck-reason"
SOURCE_HEADER = "x-claimcheck-source-queue"


def recipient_queue(recipient: str) -> str:
    """The quorum queue that one recipient group's replicas share."""
    return f"claimcheck.pointers.{recipient}"


def _work_queue_arguments() -> dict[str, object]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DEAD_EXCHANGE,
        "x-delivery-limit": DELIVERY_LIMIT,
    }


def declare(channel: BlockingChannel, recipients: Iterable[str] = ()) -> None:
    """Declare the shared topology and the queues of ``recipients``; idempotent."""
    channel.exchange_declare(POINTER_EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(ACK_EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(DEAD_EXCHANGE, exchange_type="fanout", durable=True)

    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_EXCHANGE)

    work_queues = [
        (COORDINATOR_POINTER_QUEUE, POINTER_EXCHANGE, COORDINATOR_ROUTING_KEY),
        (ACK_QUEUE, ACK_EXCHANGE, ACK_ROUTING_KEY),
    ]
    work_queues += [(recipient_queue(name), POINTER_EXCHANGE, name) for name in recipients]
    for queue, exchange, routing_key in work_queues:
        channel.queue_declare(queue, durable=True, arguments=_work_queue_arguments())
        channel.queue_bind(queue, exchange, routing_key=routing_key)
