"""Exchange and queue names, and the one function that declares them.

A pointer is published once to the direct exchange with routing key ``coordinator`` and the
recipient names in the ``CC`` header, so the broker fans it out atomically: one copy to the
coordinator's queue (which learns the recipient set from it) and one to each recipient's queue.
Every queue is a quorum queue that dead-letters to ``claimcheck.dead`` after a bounded number
of deliveries. docs/protocol.md draws the picture.
"""

from collections.abc import Callable, Iterable

import pika.exceptions
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
    """Declare the shared topology and the queues of ``recipients``; idempotent. An admin's job
    (``claimcheck provision``): each role declares only what it owns (the functions below)."""
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


# -- each role's share of the topology ------------------------------------------------------------
# A role never declares what it does not own: exchanges and the dead-letter queue exist because
# an admin provisioned them (a passive declare needs no permission and fails if they do not).


def _exchanges_exist(channel: BlockingChannel) -> None:
    for exchange in (POINTER_EXCHANGE, ACK_EXCHANGE, DEAD_EXCHANGE):
        _must_exist(lambda: channel.exchange_declare(exchange, passive=True),  # noqa: B023 - called at once
                    f"exchange {exchange!r} does not exist: provision the broker with `claimcheck provision` "
                    "(make up does)")


class NotProvisioned(Exception):
    """A queue or exchange a role relies on does not exist; only provisioning creates it."""


def _must_exist(passive_declare: Callable[[], object], missing: str) -> None:
    """Run a passive declare; a 404 saying the thing does not exist (not that its node is down,
    which passes) becomes :class:`NotProvisioned` with ``missing`` as its message."""
    try:
        passive_declare()
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404 and str(exc.reply_text).startswith(("NOT_FOUND - no queue", "NOT_FOUND - no exchange")):
            raise NotProvisioned(missing) from None
        raise


def declare_for_producer(channel: BlockingChannel, recipients: Iterable[str]) -> None:
    """Check that the pointer exchange and every recipient's queue exist (a pointer whose
    recipient has no queue would be routed to the others only, and never confirmed)."""
    _exchanges_exist(channel)
    for queue, owner in [(COORDINATOR_POINTER_QUEUE, "the coordinator"),
                         *((recipient_queue(name), f"recipient group {name!r}") for name in recipients)]:
        _must_exist(lambda: channel.queue_declare(queue, passive=True),  # noqa: B023 - called at once
                    f"{owner} has no queue {queue!r}: provision it with `claimcheck provision --recipients ...`, "
                    "or start the group's consumer, before producing")


def declare_for_recipient(channel: BlockingChannel, recipient: str) -> None:
    """A recipient group's own queue and its binding."""
    _exchanges_exist(channel)
    channel.queue_declare(recipient_queue(recipient), durable=True, arguments=_work_queue_arguments())
    channel.queue_bind(recipient_queue(recipient), POINTER_EXCHANGE, routing_key=recipient)


def declare_for_coordinator(channel: BlockingChannel) -> None:
    """The coordinator's two queues and their bindings."""
    _exchanges_exist(channel)
    for queue, exchange, routing_key in ((COORDINATOR_POINTER_QUEUE, POINTER_EXCHANGE, COORDINATOR_ROUTING_KEY),
                                         (ACK_QUEUE, ACK_EXCHANGE, ACK_ROUTING_KEY)):
        channel.queue_declare(queue, durable=True, arguments=_work_queue_arguments())
        channel.queue_bind(queue, exchange, routing_key=routing_key)


# Broker permissions (configure, write, read regexes) of each role: exactly what the functions
# above, publishing and consuming need (RabbitMQ's access-control table).
def _names(*names: str) -> str:
    return "^(" + "|".join(name.replace(".", "\\.") for name in names) + ")$"


PRODUCER_PERMISSIONS = ("^$", _names(POINTER_EXCHANGE), "^$")
COORDINATOR_PERMISSIONS = (
    _names(COORDINATOR_POINTER_QUEUE, ACK_QUEUE),
    _names(COORDINATOR_POINTER_QUEUE, ACK_QUEUE, POINTER_EXCHANGE, DEAD_EXCHANGE),  # binds, barriers, dead letters
    _names(COORDINATOR_POINTER_QUEUE, ACK_QUEUE, POINTER_EXCHANGE, ACK_EXCHANGE),
)


def recipient_permissions(recipient: str) -> tuple[str, str, str]:
    """A recipient group's: its own queue; ACKs and dead letters out; nothing of another group."""
    own = recipient_queue(recipient)
    return _names(own), _names(own, ACK_EXCHANGE, DEAD_EXCHANGE), _names(own, POINTER_EXCHANGE)
