"""Anything anyone can publish, into every queue of the running components: each message is
dead-lettered with a readable reason, no component stops, and the messages around it are not
lost. Hypothesis chooses the bodies and the header values (any AMQP type, any bytes); the
known exploits run as fixed cases.
"""

import functools
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.consumer import RecipientConsumer
from claimcheck.deadletter import BODY_BYTES_HEADER, KEPT_BODY_BYTES
from claimcheck.ledger import Ledger
from claimcheck.producer import publish_pointer
from claimcheck.protocol import MAX_MESSAGE_BYTES, Pointer
from claimcheck.publisher import BrokerSession
from claimcheck.signing import KEY_ID_HEADER, SIGNATURE_HEADER
from tests.integration.integration_helpers import DeadLetters, LocalKeys, unique, wait_until

# What pika can encode (it sends no floats, and decimals only within 32 bits).
amqp_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=40), st.binary(max_size=40), st.decimals(min_value=-(10**7), max_value=10**7, places=2),
)
amqp_values = st.recursive(amqp_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
# Any header names but the broker's routing ones (CC/BCC route, they are not content).
header_names = st.text(min_size=1, max_size=20).filter(lambda name: name not in ("CC", "BCC"))
headers = st.dictionaries(header_names, amqp_values, max_size=4).flatmap(
    lambda extra: st.fixed_dictionaries({}, optional={
        KEY_ID_HEADER: st.one_of(st.just("local"), amqp_values),
        SIGNATURE_HEADER: st.one_of(st.text(max_size=70), amqp_values),
        "x-delivery-count": amqp_values,
    }).map(lambda signature: {**extra, **signature}))
bodies = st.one_of(st.binary(max_size=200), st.sampled_from([b"[" * 5000, b"\xff\xfe", b'{"type": "pointer"}']),
                   st.builds(lambda doc: json.dumps(doc).encode(), st.dictionaries(st.text(max_size=10),
                                                                                 st.text(max_size=10), max_size=5)))


class Target:
    """The three kinds of queue a publisher can reach, with the routing that reaches each."""

    def __init__(self, recipient: str) -> None:
        self.routes = {
            "recipient": (topology.POINTER_EXCHANGE, recipient),
            "coordinator-pointers": (topology.POINTER_EXCHANGE, topology.COORDINATOR_ROUTING_KEY),
            "coordinator-acks": (topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY),
        }


class RawPublisher:
    """Publishes exactly the bytes and headers given, with confirms (no claimcheck code in between)."""

    def __init__(self, url: str) -> None:
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()

    def publish(self, exchange: str, routing_key: str, body: bytes, message_id: str, headers: dict[str, Any]) -> None:
        self._channel.basic_publish(exchange, routing_key, body,
                                    pika.BasicProperties(message_id=message_id, headers=headers), mandatory=True)

    def close(self) -> None:
        self._connection.close()


@pytest.fixture
def hostile(settings: Settings, coordinator_url: str, recipients: Callable[..., list[str]],
            start_consumer: Callable[..., RecipientConsumer]) -> Iterator[tuple[Target, RawPublisher, RecipientConsumer]]:
    (name,) = recipients("billing")
    consumer = start_consumer(name)
    wait_until(consumer.consuming.is_set, 30, "the consumer consuming its queue")
    publisher = RawPublisher(settings.amqp_url)
    yield Target(name), publisher, consumer
    publisher.close()


def send_everywhere(target: Target, publisher: RawPublisher, body: bytes, header_map: dict[str, Any],
                    tag: str) -> list[str]:
    ids = []
    for where, (exchange, routing_key) in target.routes.items():
        message_id = f"{tag}-{where}"
        publisher.publish(exchange, routing_key, body, message_id, header_map)
        ids.append(message_id)
    return ids


def reasons(dead_letters: DeadLetters, ids: list[str], timeout: float = 30) -> dict[str, str]:
    def arrived() -> bool:
        dead_letters.drain()
        return all(message_id in dead_letters.seen for message_id in ids)

    wait_until(arrived, timeout, f"{ids} dead-lettered", poll=0.1)
    return {message_id: str(dead_letters.seen[message_id][0][topology.REASON_HEADER]) for message_id in ids}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, header_map=headers)
def test_any_message_in_any_queue_is_dead_lettered_with_a_reason_and_nothing_stops(
    hostile: tuple[Target, RawPublisher, RecipientConsumer], dead_letters: DeadLetters, body: bytes,
    header_map: dict[str, Any],
) -> None:
    target, publisher, consumer = hostile
    ids = send_everywhere(target, publisher, body, header_map, unique("fuzz"))
    for message_id, reason in reasons(dead_letters, ids).items():
        category = reason.split(":", 1)[0]
        assert category in {"invalid", "forged", "internal"}, f"{message_id}: {reason}"
        assert len(reason) > len(category) + 2, f"{message_id}: no readable reason"
    assert consumer.stats.acked == 0


def forged_batches(stored: Callable[..., Pointer], recipient: str) -> dict[str, bytes]:
    """Pointer batches signed with a valid key but breaking the batch's rules."""
    twice, other = json.loads(stored([recipient]).encode()), json.loads(stored([recipient, "zz-other"]).encode())

    def batch(*pointers: dict[str, Any]) -> bytes:
        return json.dumps({"type": "pointer_batch", "version": 1, "created_at": "2026-11-30T00:00:00Z",
                           "pointers": list(pointers)}).encode()

    return {"batch-repeats-an-object": batch(twice, twice), "batch-mixes-recipients": batch(twice, other)}


def test_the_known_exploits_stop_nothing_and_lose_no_neighbour(
    hostile: tuple[Target, RawPublisher, RecipientConsumer], dead_letters: DeadLetters, settings: Settings,
    stored: Callable[..., Pointer], broker: BrokerSession, keyring: LocalKeys, ledger: Ledger,
) -> None:
    target, publisher, consumer = hostile
    (recipient,) = [name for _, name in [target.routes["recipient"]]]
    exploits: dict[str, tuple[bytes, dict[str, Any]]] = {
        # A non-ASCII signature under a known key id made hmac.compare_digest raise TypeError.
        "non-ascii-signature": (b"{}", {KEY_ID_HEADER: "local", SIGNATURE_HEADER: "é" * 64}),
        "odd-header-types": (b"{}", {KEY_ID_HEADER: ["local"], SIGNATURE_HEADER: Decimal("1.5"), "x-delivery-count": "x"}),
        "deep-nesting": (b"[" * 60_000, keyring.sign(b"[" * 60_000)),
        "not-utf8": (b"\xff\xfe\xfd", keyring.sign(b"\xff\xfe\xfd")),
        "huge-header": (b"{}", {"x-padding": "p" * 60_000, **keyring.sign(b"{}")}),
        # Signed batches a producer's code would never build: one object twice, mixed recipients.
        **{name: (body, keyring.sign(body)) for name, body in forged_batches(stored, recipient).items()},
    }
    sent: dict[str, list[str]] = {}
    neighbours = []
    for name, (body, header_map) in exploits.items():
        # Innocent pointers on either side of the poison, prefetched together with it.
        neighbour = stored([recipient])
        publish_pointer(broker, keyring.pointer, neighbour)
        neighbours.append(neighbour)
        sent[name] = send_everywhere(target, publisher, body, header_map, unique(name))
    for name, ids in sent.items():
        for message_id, reason in reasons(dead_letters, ids).items():
            assert reason.split(":", 1)[0] in {"invalid", "forged"}, f"{name} {message_id}: {reason}"
    wait_until(lambda: all(ledger.job_progress(p.job).deleted == 1 for p in neighbours), 60,
               "every innocent neighbour verified, acknowledged and deleted")
    assert consumer.stats.acked == len(neighbours)


def test_an_oversized_body_is_dead_lettered_with_a_bounded_prefix(
    hostile: tuple[Target, RawPublisher, RecipientConsumer], dead_letters: DeadLetters, keyring: LocalKeys,
) -> None:
    target, publisher, _ = hostile
    body = b"x" * (MAX_MESSAGE_BYTES + 2_000)  # over the protocol's limit, under the broker's 128 KiB
    ids = send_everywhere(target, publisher, body, keyring.sign(body), unique("oversized"))
    for message_id, reason in reasons(dead_letters, ids).items():
        assert f"exceeds the {MAX_MESSAGE_BYTES}-byte limit" in reason, reason
        parked_headers, parked_body = dead_letters.seen[message_id]
        assert len(parked_body) == KEPT_BODY_BYTES and parked_body == body[:KEPT_BODY_BYTES]
        assert parked_headers[BODY_BYTES_HEADER] == len(body)


def test_the_broker_refuses_bodies_over_its_max_message_size(settings: Settings) -> None:
    publisher = RawPublisher(settings.amqp_url)
    try:
        with pytest.raises(pika.exceptions.AMQPError) as refused:
            publisher.publish(topology.POINTER_EXCHANGE, topology.COORDINATOR_ROUTING_KEY, b"x" * 200_000,
                              unique("huge"), {})
        assert "max size" in str(refused.value) or "PRECONDITION_FAILED" in str(refused.value), refused.value
    finally:
        if publisher._connection.is_open:  # noqa: SLF001
            publisher.close()


def test_pointers_bound_to_another_object_or_bucket_are_dead_lettered_by_consumer_and_coordinator(
    hostile: tuple[Target, RawPublisher, RecipientConsumer], dead_letters: DeadLetters, keyring: LocalKeys,
    stored: Callable[..., Pointer], broker: BrokerSession, ledger: Ledger,
) -> None:
    target, _, consumer = hostile
    (recipient,) = [name for _, name in [target.routes["recipient"]]]
    victim, other = stored([recipient]), stored([recipient])
    for tag, changes, expected in (("other-key", {"key": victim.key}, "invalid: invalid pointer: key must be"),
                                   ("other-bucket", {"bucket": "another-bucket"}, "foreign_bucket:")):
        document = {**json.loads(other.encode()), **changes}
        body = json.dumps(document).encode()  # signed with the real key: only the binding is wrong
        message_id = f"{tag}-{other.object_id}"
        broker.publish(topology.POINTER_EXCHANGE, topology.COORDINATOR_ROUTING_KEY, body, message_id=message_id,
                       headers={"CC": [recipient], **keyring.sign(body)})

        found = wait_until(functools.partial(parked_by_both, dead_letters, message_id, recipient), 30,
                           f"the {tag} pointer dead-lettered by the consumer and the coordinator")
        assert all(reason.startswith(expected) for reason in found.values()), found
    assert ledger.job_progress(other.job).published == 0
    assert consumer.stats.verified == 0


def parked_by_both(dead_letters: DeadLetters, message_id: str, recipient: str) -> dict[str, str] | None:
    """The reasons the consumer's and the coordinator's copy of ``message_id`` were parked with, once both were."""
    dead_letters.drain()
    found = {source: reason for (mid, source), reason in dead_letters.reasons.items() if mid == message_id}
    return found if set(found) == {topology.recipient_queue(recipient), topology.COORDINATOR_POINTER_QUEUE} else None
