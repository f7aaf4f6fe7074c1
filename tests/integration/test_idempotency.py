"""Duplicates, reordering, foreign recipients and bad payloads, at the protocol level: pointers
and ACKs are published by hand, the coordinator and consumers are the real ones."""

import functools
import gzip
import random
from collections.abc import Callable
from typing import Any

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.consumer import RecipientConsumer
from claimcheck.producer import publish_pointer as send_pointer
from claimcheck.protocol import Ack, AckBatch, AckedObject, Pointer, make_pointer, now
from claimcheck.publisher import BrokerSession
from tests.integration.integration_helpers import DeadLetters, LocalKeys, ack_for, unique, wait_until

Query = Callable[..., list[tuple[Any, ...]]]


KEYS = LocalKeys(Settings())


def publish_ack(broker: BrokerSession, ack: Ack, message_id: str | None = None) -> None:
    body = ack.encode()
    broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, body,
                   message_id=message_id or f"{ack.object_id}.{ack.recipient}", headers=KEYS.ack(ack.recipient).sign(body))


def publish_pointer(broker: BrokerSession, pointer: Pointer) -> None:
    send_pointer(broker, KEYS.pointer, pointer)


def state_of(db: Query, pointer: Pointer) -> str | None:
    rows = db("SELECT state FROM objects WHERE object_id = %s", pointer.object_id)
    return rows[0][0] if rows else None


def deletions_of(db: Query, pointer: Pointer) -> int:
    return int(db("SELECT count(*) FROM deletions WHERE object_id = %s", pointer.object_id)[0][0])


def test_duplicate_pointers_are_processed_once(
    coordinator_url: str, recipients: Callable[..., list[str]], start_consumer: Callable[..., RecipientConsumer],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
) -> None:
    names = recipients("billing", "audit")
    for name in names:
        start_consumer(name)
    pointer = stored(names)
    for _ in range(3):
        publish_pointer(broker, pointer)

    wait_until(lambda: state_of(db, pointer) == "deleted", 30, "deletion")
    assert not object_exists(pointer)
    assert deletions_of(db, pointer) == 1
    assert db("SELECT count(*) FROM acks WHERE object_id = %s", pointer.object_id) == [(2,)]


def test_duplicate_acks_count_once(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
) -> None:
    first, second = recipients("billing", "audit")
    pointer = stored([first, second])
    publish_pointer(broker, pointer)
    wait_until(lambda: state_of(db, pointer) == "pending", 30, "the pointer in the ledger")
    for _ in range(4):
        publish_ack(broker, ack_for(pointer, first))
    wait_until(lambda: db("SELECT duplicates FROM acks WHERE object_id = %s", pointer.object_id) == [(3,)], 30,
               "all four ACKs applied")
    assert state_of(db, pointer) == "pending"
    assert object_exists(pointer)

    publish_ack(broker, ack_for(pointer, second))
    wait_until(lambda: state_of(db, pointer) == "deleted", 30, "deletion")
    assert not object_exists(pointer)
    assert deletions_of(db, pointer) == 1


def test_acks_before_the_pointer_count_once_it_arrives(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
) -> None:
    names = recipients("billing", "audit")
    pointer = stored(names)
    for name in names:
        publish_ack(broker, ack_for(pointer, name))
    wait_until(lambda: db("SELECT count(*) FROM acks WHERE object_id = %s", pointer.object_id) == [(2,)], 30,
               "both early ACKs recorded")
    assert state_of(db, pointer) == "awaiting_pointer"
    assert object_exists(pointer)

    publish_pointer(broker, pointer)
    wait_until(lambda: state_of(db, pointer) == "deleted", 30, "deletion")
    assert not object_exists(pointer)
    assert deletions_of(db, pointer) == 1


def test_out_of_order_interleaving_of_many_objects(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
) -> None:
    names = recipients("a", "b", "c")
    job = unique("shuffle")
    pointers = [stored(names, size=2_000, job=job) for _ in range(12)]
    messages: list[Callable[[], None]] = []
    for pointer in pointers:
        messages += [functools.partial(publish_pointer, broker, pointer)] * 2
        messages += [functools.partial(publish_ack, broker, ack_for(pointer, name)) for name in names]
    random.Random(7).shuffle(messages)
    for send in messages:
        send()

    wait_until(lambda: all(state_of(db, p) == "deleted" for p in pointers), 60, "every object deleted")
    assert not any(object_exists(p) for p in pointers)
    assert [deletions_of(db, p) for p in pointers] == [1] * len(pointers)


def test_ack_from_a_recipient_outside_the_set_never_counts(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query, dead_letters: DeadLetters,
) -> None:
    billing, intruder = recipients("billing", "mallory")
    audit = recipients("audit")[0]
    pointer = stored([billing, audit])
    publish_pointer(broker, pointer)
    wait_until(lambda: state_of(db, pointer) == "pending", 30, "the pointer in the ledger")

    publish_ack(broker, ack_for(pointer, intruder), message_id="foreign-" + pointer.object_id)
    publish_ack(broker, ack_for(pointer, billing))
    reason = dead_letters.reason_for("foreign-" + pointer.object_id)
    assert reason.startswith("foreign_recipient:") and intruder in reason
    wait_until(lambda: db("SELECT recipient FROM acks WHERE object_id = %s", pointer.object_id) == [(billing,)], 30,
               "the billing ACK")
    assert state_of(db, pointer) == "pending"
    assert object_exists(pointer)

    publish_ack(broker, ack_for(pointer, audit))
    wait_until(lambda: state_of(db, pointer) == "deleted", 30, "deletion")


def test_ack_with_another_payload_checksum_never_counts(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query, dead_letters: DeadLetters,
) -> None:
    (only,) = recipients("billing")
    pointer = stored([only])
    publish_pointer(broker, pointer)
    wait_until(lambda: state_of(db, pointer) == "pending", 30, "the pointer in the ledger")
    publish_ack(broker, ack_for(pointer, only, sha256="f" * 64), message_id="wrongsha-" + pointer.object_id)
    assert dead_letters.reason_for("wrongsha-" + pointer.object_id).startswith("mismatch:")
    assert state_of(db, pointer) == "pending"
    assert object_exists(pointer)


def test_an_early_ack_with_a_wrong_checksum_never_blocks_the_correct_one(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
) -> None:
    """Before its pointer, an ACK naming another sha256 is stored but occupies no slot: the
    correct ACK that follows counts, and the object is deleted once the pointer arrives."""
    billing, audit = recipients("billing", "audit")
    pointer = stored([billing, audit])
    publish_ack(broker, ack_for(pointer, billing, sha256="f" * 64), message_id="early-wrong-" + pointer.object_id)
    wait_until(lambda: db("SELECT count(*) FROM acks WHERE object_id = %s", pointer.object_id) == [(1,)], 30,
               "the wrong early ACK stored")
    publish_ack(broker, ack_for(pointer, billing))
    publish_ack(broker, ack_for(pointer, audit))
    wait_until(lambda: db("SELECT count(*) FROM acks WHERE object_id = %s", pointer.object_id) == [(3,)], 30,
               "the correct early ACKs stored beside it")
    publish_pointer(broker, pointer)
    wait_until(lambda: state_of(db, pointer) == "deleted", 30, "deletion once the pointer arrived")
    assert not object_exists(pointer)
    assert deletions_of(db, pointer) == 1


def test_checksum_mismatch_is_dead_lettered_and_never_acked(
    settings: Settings, coordinator_url: str, recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query, dead_letters: DeadLetters,
) -> None:
    (name,) = recipients("billing")
    consumer = start_consumer(name)
    genuine = stored([name])
    forged = make_pointer(**{**genuine.model_dump(exclude={"type", "version", "recipients_total", "created_at"}),
                             "payload_sha256": "0" * 64})
    publish_pointer(broker, forged)

    reason = dead_letters.reason_for(forged.object_id)
    assert reason.startswith("integrity:") and "payload sha256 mismatch" in reason
    assert db("SELECT count(*) FROM acks WHERE object_id = %s", forged.object_id) == [(0,)]
    assert consumer.stats.acked == 0
    assert object_exists(genuine)


def test_corrupted_object_is_dead_lettered(
    settings: Settings, s3: Any, coordinator_url: str, recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer], stored: Callable[..., Pointer], broker: BrokerSession,
    db: Query, dead_letters: DeadLetters,
) -> None:
    (name,) = recipients("billing")
    start_consumer(name)
    pointer = stored([name])
    s3.put_object(Bucket=pointer.bucket, Key=pointer.key, Body=gzip.compress(b"{}"))
    publish_pointer(broker, pointer)
    reason = dead_letters.reason_for(pointer.object_id)
    assert reason.startswith("integrity:") and "object size mismatch" in reason
    assert db("SELECT count(*) FROM acks WHERE object_id = %s", pointer.object_id) == [(0,)]


def test_missing_object_is_dead_lettered(
    settings: Settings, s3: Any, coordinator_url: str, recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer], stored: Callable[..., Pointer], broker: BrokerSession,
    db: Query, dead_letters: DeadLetters,
) -> None:
    (name,) = recipients("billing")
    start_consumer(name)
    pointer = stored([name])
    s3.delete_object(Bucket=pointer.bucket, Key=pointer.key)
    publish_pointer(broker, pointer)
    assert dead_letters.reason_for(pointer.object_id).startswith("missing_object:")
    assert state_of(db, pointer) == "pending"


def test_malformed_messages_are_dead_lettered_and_components_keep_running(
    settings: Settings, coordinator_url: str, recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query, dead_letters: DeadLetters,
) -> None:
    (name,) = recipients("billing")
    start_consumer(name)
    tag = unique("garbage")
    broker.channel()
    topology.declare(broker.channel(), [name])
    for exchange, key, body, suffix, signer in [
        (topology.POINTER_EXCHANGE, name, b"not json at all", "recipient", KEYS.pointer),
        (topology.POINTER_EXCHANGE, topology.COORDINATOR_ROUTING_KEY, b'{"type": "pointer", "version": 9}', "coordinator",
         KEYS.pointer),
        (topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, b'{"type": "ack", "version": 1}', "ack", KEYS.ack(name)),
    ]:
        broker.publish(exchange, key, body, message_id=f"{tag}-{suffix}", headers=signer.sign(body))

    assert dead_letters.reason_for(f"{tag}-recipient").startswith("invalid: not JSON")
    assert "unsupported pointer version 9" in dead_letters.reason_for(f"{tag}-coordinator")
    assert dead_letters.reason_for(f"{tag}-ack").startswith("invalid: invalid ack:")

    pointer = stored([name])
    publish_pointer(broker, pointer)
    wait_until(lambda: state_of(db, pointer) == "deleted", 30, "a good pointer processed after the bad ones")


def test_two_more_coordinators_racing_delete_each_object_once(
    settings: Settings, coordinator_url: str, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
) -> None:
    from claimcheck.coordinator import Coordinator
    from tests.integration.integration_helpers import Running

    racers = [Running(f"coordinator-{i}", Coordinator(settings, prefetch=5).run) for i in range(2)]
    try:
        names = recipients("billing", "audit")
        job = unique("race")
        pointers = [stored(names, size=1_000, job=job) for _ in range(40)]
        for pointer in pointers:
            publish_pointer(broker, pointer)
            for name in names:
                publish_ack(broker, ack_for(pointer, name))
                publish_ack(broker, ack_for(pointer, name))
        wait_until(lambda: all(state_of(db, p) == "deleted" for p in pointers), 60, "every object deleted")
    finally:
        for racer in racers:
            racer.stop()
    assert [deletions_of(db, p) for p in pointers] == [1] * len(pointers)
    assert not any(object_exists(p) for p in pointers)


def test_a_payload_whose_processing_keeps_failing_is_dead_lettered_after_the_delivery_limit(
    coordinator_url: str, recipients: Callable[..., list[str]], start_consumer: Callable[..., RecipientConsumer],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query,
    dead_letters: DeadLetters,
) -> None:
    (name,) = recipients("billing")
    attempts: list[str] = []

    def failing_hook(pointer: Pointer, payload: Any) -> None:
        attempts.append(pointer.object_id)
        raise RuntimeError("downstream system rejected the payload")

    consumer = start_consumer(name, hook=failing_hook)
    pointer = stored([name])
    publish_pointer(broker, pointer)

    reason = dead_letters.reason_for(pointer.object_id)
    assert reason.startswith(f"processing_failed: object {pointer.object_id}: failed {topology.DELIVERY_LIMIT} times")
    assert "downstream system rejected the payload" in reason
    assert len(attempts) == topology.DELIVERY_LIMIT
    assert consumer.stats.acked == 0
    assert db("SELECT count(*) FROM acks WHERE object_id = %s", pointer.object_id) == [(0,)]
    assert object_exists(pointer)


def publish_ack_batch(broker: BrokerSession, recipient: str, pointers: list[Pointer], message_id: str) -> None:
    batch = AckBatch(recipient=recipient, consumer="test", acked_at=now(),
                     acks=tuple(AckedObject(object_id=p.object_id, job=p.job, payload_sha256=p.payload_sha256) for p in pointers))
    body = batch.encode()
    broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, body, message_id=message_id,
                   headers=KEYS.ack(recipient).sign(body))


def test_an_ack_batch_counts_each_object_once_and_a_refused_item_dead_letters_only_the_batch(
    coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, db: Query, dead_letters: DeadLetters,
) -> None:
    billing, audit = recipients("billing", "audit")
    both = [stored([billing, audit]) for _ in range(3)]
    audit_only = stored([audit])
    for pointer in [*both, audit_only]:
        publish_pointer(broker, pointer)
    wait_until(lambda: all(state_of(db, p) == "pending" for p in [*both, audit_only]), 30, "the pointers in the ledger")

    publish_ack_batch(broker, billing, [*both, audit_only], message_id="billing-batch-" + audit_only.object_id)
    reason = dead_letters.reason_for("billing-batch-" + audit_only.object_id)
    assert reason.startswith("foreign_recipient: object " + audit_only.object_id), reason
    wait_until(lambda: all(db("SELECT recipient FROM acks WHERE object_id = %s", p.object_id) == [(billing,)] for p in both),
               30, "billing's ACKs of the objects it receives")
    assert all(state_of(db, p) == "pending" and object_exists(p) for p in [*both, audit_only])

    publish_ack_batch(broker, audit, [*both, audit_only], message_id="audit-batch-" + audit_only.object_id)
    publish_ack_batch(broker, audit, both[:2], message_id="audit-again-" + audit_only.object_id)  # a duplicate batch
    wait_until(lambda: all(state_of(db, p) == "deleted" for p in [*both, audit_only]), 30, "deletion")
    assert not any(object_exists(p) for p in [*both, audit_only])
    assert [deletions_of(db, p) for p in [*both, audit_only]] == [1] * 4
    wait_until(lambda: db("SELECT sum(duplicates) FROM acks WHERE object_id = ANY (%s) AND recipient = %s",
                          [p.object_id for p in both[:2]], audit) == [(2,)], 30, "the duplicate batch counted as duplicates")
