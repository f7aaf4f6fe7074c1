"""Signed pointers and ACKs: forged, tampered, unsigned and re-addressed messages are
dead-lettered, never fetched, never counted."""

import json
from collections.abc import Callable
from typing import Any

from claimcheck import topology
from claimcheck.consumer import RecipientConsumer
from claimcheck.producer import publish_pointer
from claimcheck.protocol import Pointer
from claimcheck.publisher import BrokerSession
from claimcheck.signing import new_pointer_key, pointer_signer
from tests.integration.integration_helpers import DeadLetters, LocalKeys, ack_for, wait_until

EVIL = pointer_signer(new_pointer_key("evil")[0])
Query = Callable[..., list[tuple[Any, ...]]]


def acks_of(db: Query, pointer: Pointer) -> list[tuple[Any, ...]]:
    return db("SELECT recipient FROM acks WHERE object_id = %s ORDER BY recipient", pointer.object_id)


def test_pointer_signed_with_an_unknown_key_is_never_fetched(
    coordinator_url: str, recipients: Callable[..., list[str]], start_consumer: Callable[..., RecipientConsumer],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
    dead_letters: DeadLetters,
) -> None:
    (name,) = recipients("billing")
    consumer = start_consumer(name)
    victim = stored([name])
    publish_pointer(broker, EVIL, victim)

    assert dead_letters.reason_for(victim.object_id).startswith("forged: unknown signing key id 'evil'")
    assert consumer.stats.verified == 0 and consumer.stats.acked == 0
    assert db("SELECT count(*) FROM objects WHERE object_id = %s", victim.object_id) == [(0,)]
    assert object_exists(victim)


def test_tampered_pointer_is_rejected_by_consumer_and_coordinator(
    coordinator_url: str, recipients: Callable[..., list[str]], start_consumer: Callable[..., RecipientConsumer],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
    dead_letters: DeadLetters, keyring: LocalKeys,
) -> None:
    (name,) = recipients("billing")
    start_consumer(name)
    genuine, target = stored([name]), stored([name])
    tampered = json.loads(genuine.encode())
    tampered["key"] = target.key
    body = json.dumps(tampered).encode()
    broker.publish(topology.POINTER_EXCHANGE, topology.COORDINATOR_ROUTING_KEY, body, message_id=genuine.object_id,
                   headers={"CC": [name], **keyring.sign(genuine.encode())})

    sources = (topology.recipient_queue(name), topology.COORDINATOR_POINTER_QUEUE)

    def reasons() -> list[str] | None:
        dead_letters.drain()
        found = [dead_letters.reasons.get((genuine.object_id, source)) for source in sources]
        return None if None in found else [str(reason) for reason in found]

    consumer, coordinator = wait_until(reasons, 30, "the tampered pointer dead-lettered by consumer and coordinator")
    assert consumer.startswith("forged: signature does not match"), consumer  # the Ed25519 pointer signature
    assert coordinator.startswith("forged: ledger signature does not match"), coordinator  # the producers' HMAC
    assert db("SELECT count(*) FROM objects WHERE object_id = %s", genuine.object_id) == [(0,)]
    assert object_exists(target) and object_exists(genuine)


def test_unsigned_and_readdressed_acks_never_count(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query, dead_letters: DeadLetters,
    keyring: LocalKeys,
) -> None:
    billing, audit = recipients("billing", "audit")
    pointer = stored([billing, audit])
    publish_pointer(broker, keyring.pointer, pointer)
    wait_until(lambda: db("SELECT state FROM objects WHERE object_id = %s", pointer.object_id) == [("pending",)],
               30, "the pointer in the ledger")

    billing_ack = ack_for(pointer, billing).encode()
    billing_signature = keyring.ack(billing).sign(billing_ack)
    readdressed = billing_ack.replace(f'"recipient":"{billing}"'.encode(), f'"recipient":"{audit}"'.encode())
    assert readdressed != billing_ack
    broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, readdressed, message_id="readdressed",
                   headers=billing_signature)
    broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, ack_for(pointer, audit).encode(),
                   message_id="unsigned")
    broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, billing_ack, message_id="genuine",
                   headers=billing_signature)

    assert dead_letters.reason_for("readdressed").startswith("forged: signature does not match")
    assert dead_letters.reason_for("unsigned").startswith("forged: message is not signed")
    wait_until(lambda: acks_of(db, pointer) == [(billing,)], 30, "the genuine billing ACK")
    assert db("SELECT state FROM objects WHERE object_id = %s", pointer.object_id) == [("pending",)]
    assert object_exists(pointer)
