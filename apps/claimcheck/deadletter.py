"""Dead-lettering with a reason: the message goes to ``claimcheck.dead-letters`` with a header a
person can read saying why, and the original delivery is then acknowledged.

Whatever arrives is parked, however large or strange: a body over the protocol's size limit
keeps only a bounded prefix (its full length in a header), and headers that cannot be sent
again as they came are replaced by a note, so dead-lettering itself can never fail on the
message it is meant to set aside.
"""

import logging
from collections.abc import Mapping
from typing import Any

import pika.exceptions

from claimcheck import topology
from claimcheck.amqp_loop import Delivery
from claimcheck.protocol import MAX_MESSAGE_BYTES, brief
from claimcheck.publisher import BrokerSession

log = logging.getLogger(__name__)

# What a dead letter keeps of an oversized body: enough to recognise what it was.
KEPT_BODY_BYTES = 4096
KEPT_HEADER_BYTES = 16 * 1024
MAX_REASON_CHARS = 1000
BODY_BYTES_HEADER = "x-claimcheck-body-bytes"
HEADERS_DROPPED_HEADER = "x-claimcheck-headers-dropped"


def dead_letter(publisher: BrokerSession, delivery: Delivery, reason: str) -> None:
    """Park ``delivery`` in the dead-letter queue with ``reason``, then ack it."""
    reason = brief(reason, MAX_REASON_CHARS)
    body = delivery.body if isinstance(delivery.body, bytes) else b""
    ours: dict[str, Any] = {topology.REASON_HEADER: reason, topology.SOURCE_HEADER: delivery.queue}
    if len(body) > MAX_MESSAGE_BYTES:
        ours[BODY_BYTES_HEADER] = len(body)
        body = body[:KEPT_BODY_BYTES]
    message_id = _message_id(delivery)
    original = delivery.properties.headers if isinstance(delivery.properties.headers, Mapping) else {}
    if len(repr(original)) > KEPT_HEADER_BYTES:
        ours[HEADERS_DROPPED_HEADER] = f"{len(original)} headers, {len(repr(original))} characters"
        original = {}
    try:
        publisher.publish(topology.DEAD_EXCHANGE, "", body, message_id=message_id, headers={**original, **ours})
    except (TypeError, ValueError, pika.exceptions.ProtocolSyntaxError) as exc:
        # Headers the client cannot encode again: keep the reason, drop the rest.
        ours[HEADERS_DROPPED_HEADER] = f"could not be re-sent: {brief(str(exc), 200)}"
        publisher.publish(topology.DEAD_EXCHANGE, "", body, message_id=message_id, headers=ours)
    delivery.ack()
    log.warning("dead-lettered message %s from %s: %s", message_id, delivery.queue, reason)


def _message_id(delivery: Delivery) -> str:
    given = delivery.properties.message_id
    if isinstance(given, str) and given:
        return brief(given, 200)
    return f"{delivery.queue}:{delivery.delivery_tag}"
