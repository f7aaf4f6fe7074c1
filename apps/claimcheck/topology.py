"""Exchange and queue names, and the one function that declares them.

A pointer is published once to the direct exchange with routing key ``coordinator`` and the
recipient names in the ``CC`` header, so the broker fans it out atomically: one copy to the
coordinator's queue (which learns the recipient set from it) and one to each recipient's queue.
Every queue is a quorum queue that dead-letters to ``claimcheck.dead`` after a bounded number
of deliveries. docs/protocol.md draws the picture.

**Shards.** The coordinator's side can be split into ``CLAIMCHECK_COORDINATOR_SHARDS`` shards
(docs/scaling.md): an object belongs to shard :func:`shard_of` its id, and its intent, pointer
copy and business ACKs travel through that shard's two queues. Shard 0 keeps the unsharded
names, so one shard is exactly the topology above. Every coordinator queue has a single active
consumer: one coordinator applies a shard's messages at a time, in queue order, and another
replica takes over when it goes away.
"""

import logging
from collections.abc import Callable, Iterable

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

log = logging.getLogger(__name__)

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


MAX_SHARDS = 256


def shard_of(object_id: str, shards: int) -> int:
    """The coordinator shard that owns an object: its id's first 32 bits modulo the shard count
    (object ids are random, so shards fill evenly)."""
    return int(object_id[:8], 16) % shards


def _sharded(name: str, shard: int) -> str:
    return name if shard == 0 else f"{name}.{shard}"


def coordinator_routing_key(shard: int) -> str:
    """Routing key of a shard's pointer-queue messages (intents, pointers, barriers)."""
    return _sharded(COORDINATOR_ROUTING_KEY, shard)


def coordinator_pointer_queue(shard: int) -> str:
    return _sharded(COORDINATOR_POINTER_QUEUE, shard)


def ack_routing_key(shard: int) -> str:
    return _sharded(ACK_ROUTING_KEY, shard)


def ack_queue(shard: int) -> str:
    return _sharded(ACK_QUEUE, shard)


def coordinator_route(object_id: str, shards: int) -> str:
    """Routing key of an object's intent and pointer (the coordinator's copy) in ``shards`` shards."""
    return coordinator_routing_key(shard_of(object_id, shards))


def ack_route(object_id: str, shards: int) -> str:
    """Routing key of the business ACKs of an object in ``shards`` shards."""
    return ack_routing_key(shard_of(object_id, shards))


def coordinator_queues(shards: Iterable[int]) -> list[tuple[str, str, str]]:
    """(queue, exchange, routing key) of each of ``shards``' pointer and ACK queues."""
    return [binding for shard in shards
            for binding in ((coordinator_pointer_queue(shard), POINTER_EXCHANGE, coordinator_routing_key(shard)),
                            (ack_queue(shard), ACK_EXCHANGE, ack_routing_key(shard)))]


def recipient_queue(recipient: str) -> str:
    """The quorum queue that one recipient group's replicas share."""
    return f"claimcheck.pointers.{recipient}"


def _work_queue_arguments() -> dict[str, object]:
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DEAD_EXCHANGE,
        "x-delivery-limit": DELIVERY_LIMIT,
    }


def _coordinator_queue_arguments() -> dict[str, object]:
    return {**_work_queue_arguments(), "x-single-active-consumer": True}


def declare(channel: BlockingChannel, recipients: Iterable[str] = (), shards: int = 1) -> None:
    """Declare the shared topology, ``shards`` coordinator shards and the queues of
    ``recipients``; idempotent. An admin's job (``claimcheck provision``): each role declares
    only what it owns (the functions below)."""
    channel.exchange_declare(POINTER_EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(ACK_EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(DEAD_EXCHANGE, exchange_type="fanout", durable=True)

    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_EXCHANGE)

    _declare_coordinator_queues(channel, shards)
    for name in recipients:
        channel.queue_declare(recipient_queue(name), durable=True, arguments=_work_queue_arguments())
        channel.queue_bind(recipient_queue(name), POINTER_EXCHANGE, routing_key=name)


def _declare_coordinator_queues(channel: BlockingChannel, shards: int) -> None:
    for queue, exchange, routing_key in coordinator_queues(range(shards)):
        arguments = _coordinator_queue_arguments()
        if queue in (COORDINATOR_POINTER_QUEUE, ACK_QUEUE) and _predates_single_active_consumer(channel, queue):
            arguments = _work_queue_arguments()
        channel.queue_declare(queue, durable=True, arguments=arguments)
        channel.queue_bind(queue, exchange, routing_key=routing_key)


def existing_shards(channel: BlockingChannel, shards: int) -> int:
    """How many coordinator shards the broker has: ``shards``, or more if pointer queues of
    higher shards exist (left by a larger shard count, or used by a component configured so)."""
    count = shards
    while count < MAX_SHARDS and _queue_exists(channel, coordinator_pointer_queue(count)):
        count += 1
    return count


def _queue_exists(channel: BlockingChannel, queue: str) -> bool:
    """Whether ``queue`` exists; a 404 that does not say so (its node is down) counts as existing."""
    refused = _refused_on_probe(channel, lambda probe: probe.queue_declare(queue, passive=True))
    if refused is None:
        return True
    if _not_found(refused):
        return False
    if refused.reply_code == 404:  # not "no queue": the queue's node is down
        return True
    raise refused


def _predates_single_active_consumer(channel: BlockingChannel, queue: str) -> bool:
    """Whether shard 0's ``queue`` exists from a release before shards, without a single active
    consumer. RabbitMQ cannot change a queue's arguments, and refusing to start would stop an
    upgraded deployment; so it is used as it is, with a warning (docs/scaling.md, upgrading)."""
    refused = _refused_on_probe(channel, lambda probe: probe.queue_declare(
        queue, durable=True, arguments=_coordinator_queue_arguments()))
    if refused is None:
        return False
    if refused.reply_code == 406 and "x-single-active-consumer" in str(refused.reply_text):
        log.warning("queue %s was declared before coordinator shards, without a single active consumer: "
                    "every coordinator replica consumes it at once; drain and delete it to fix that "
                    "(docs/scaling.md, upgrading)", queue)
        return True
    raise refused


def _refused_on_probe(channel: BlockingChannel, ask: Callable[[BlockingChannel], object]
                      ) -> pika.exceptions.ChannelClosedByBroker | None:
    """Ask the broker on a channel of its own (a refusal closes the channel it answers on, and
    ``channel`` stays usable); the refusal, or None if there was none."""
    probe = channel.connection.channel()
    try:
        ask(probe)
    except pika.exceptions.ChannelClosedByBroker as exc:
        return exc
    probe.close()
    return None


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
        if _not_found(exc):
            raise NotProvisioned(missing) from None
        raise


def _not_found(refusal: pika.exceptions.ChannelClosedByBroker) -> bool:
    """Whether a refused passive declare says the queue or exchange does not exist (a 404 may
    also mean that its node is down)."""
    return refusal.reply_code == 404 and str(refusal.reply_text).startswith(("NOT_FOUND - no queue",
                                                                              "NOT_FOUND - no exchange"))


def declare_for_producer(channel: BlockingChannel, recipients: Iterable[str], shards: int = 1) -> None:
    """Check that the pointer exchange, every coordinator shard's queue and every recipient's
    queue exist (a pointer whose recipient has no queue would be routed to the others only, and
    never confirmed)."""
    _exchanges_exist(channel)
    _coordinator_shards_exist(channel, shards, coordinator_pointer_queue)
    for name in recipients:
        queue = recipient_queue(name)
        _must_exist(lambda: channel.queue_declare(queue, passive=True),  # noqa: B023 - called at once
                    f"recipient group {name!r} has no queue {queue!r}: provision it with "
                    "`claimcheck provision --recipients ...`, or start the group's consumer, before producing")


def _coordinator_shards_exist(channel: BlockingChannel, shards: int, queue_of: Callable[[int], str]) -> None:
    for shard in range(shards):
        queue = queue_of(shard)
        _must_exist(lambda: channel.queue_declare(queue, passive=True),  # noqa: B023 - called at once
                    f"coordinator shard {shard} has no queue {queue!r}: CLAIMCHECK_COORDINATOR_SHARDS={shards} here; "
                    "provision the broker with the same number of shards (`claimcheck provision`, make up)")


def declare_for_recipient(channel: BlockingChannel, recipient: str, shards: int = 1) -> None:
    """A recipient group's own queue and its binding, after checking that every coordinator
    shard's ACK queue exists (an ACK for a shard without one would never be counted)."""
    _exchanges_exist(channel)
    _coordinator_shards_exist(channel, shards, ack_queue)
    channel.queue_declare(recipient_queue(recipient), durable=True, arguments=_work_queue_arguments())
    channel.queue_bind(recipient_queue(recipient), POINTER_EXCHANGE, routing_key=recipient)


def declare_for_coordinator(channel: BlockingChannel, shards: int = 1) -> None:
    """The coordinator's two queues per shard and their bindings."""
    _exchanges_exist(channel)
    _declare_coordinator_queues(channel, shards)


# Broker permissions (configure, write, read regexes) of each role: exactly what the functions
# above, publishing and consuming need (RabbitMQ's access-control table).
def _names(*names: str) -> str:
    return "^(" + "|".join(name.replace(".", "\\.") for name in names) + ")$"


PRODUCER_PERMISSIONS = ("^$", _names(POINTER_EXCHANGE), "^$")
# The coordinator's queues of every shard: the unsharded names, or with ".<shard>" after them.
_COORDINATOR_QUEUES = _names(COORDINATOR_POINTER_QUEUE, ACK_QUEUE)[:-2] + ")(\\.[0-9]+)?$"
COORDINATOR_PERMISSIONS = (
    _COORDINATOR_QUEUES,
    f"{_COORDINATOR_QUEUES}|{_names(POINTER_EXCHANGE, DEAD_EXCHANGE)}",  # binds, barriers, dead letters
    f"{_COORDINATOR_QUEUES}|{_names(POINTER_EXCHANGE, ACK_EXCHANGE)}",
)


def recipient_permissions(recipient: str) -> tuple[str, str, str]:
    """A recipient group's: its own queue; ACKs and dead letters out; nothing of another group."""
    own = recipient_queue(recipient)
    return _names(own), _names(own, ACK_EXCHANGE, DEAD_EXCHANGE), _names(own, POINTER_EXCHANGE)
