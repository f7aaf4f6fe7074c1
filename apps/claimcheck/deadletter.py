"""Dead-lettering with a reason: the message goes to ``claimcheck.dead-letters`` unchanged,
with a header a person can read saying why, and the original delivery is then acknowledged."""

import logging

from claimcheck import topology
from claimcheck.broker import BrokerSession
from claimcheck.consuming import Delivery

log = logging.getLogger(__name__)


def dead_letter(publisher: BrokerSession, delivery: Delivery, reason: str) -> None:
    """Park ``delivery`` in the dead-letter queue with ``reason``, then ack it."""
    headers = dict(delivery.properties.headers or {})
    headers[topology.REASON_HEADER] = reason
    headers[topology.SOURCE_HEADER] = delivery.queue
    message_id = delivery.properties.message_id or f"{delivery.queue}:{delivery.delivery_tag}"
    publisher.publish(topology.DEAD_EXCHANGE, "", delivery.body, message_id=message_id, headers=headers)
    delivery.ack()
    log.warning("dead-lettered message %s from %s: %s", message_id, delivery.queue, reason)
