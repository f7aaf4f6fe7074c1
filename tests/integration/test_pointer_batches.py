"""Pointer batches (issue 16): pointers published together reach every group and the coordinator
as one message each; every object is verified, confirmed and deleted once, a refused object
dead-letters its batch once per group without holding back the others, and an object to try
again brings its whole batch back without losing or double-counting anything."""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import IO, Any

import pytest

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.consumer import RecipientConsumer
from claimcheck.ledger import Ledger
from claimcheck.producer import PointerBatcher
from claimcheck.protocol import Pointer, PointerBatch, now
from claimcheck.publisher import BrokerSession
from tests.integration.integration_helpers import DeadLetters, LocalKeys, wait_until


def publish_together(settings: Settings, keyring: LocalKeys, pointers: list[Pointer]) -> int:
    """Hand every pointer to one PointerBatcher at once; the number of messages it published."""
    batcher = PointerBatcher(settings, keyring.pointer)
    try:
        sent: list[Future[None]] = batcher.submit_all(pointers)
        for future in sent:
            future.result(timeout=60)
    finally:
        batcher.close()
    return batcher.batches


def deleted_once(db: Callable[..., list[tuple[Any, ...]]], pointers: list[Pointer]) -> bool:
    ids = [pointer.object_id for pointer in pointers]
    return (db("SELECT count(*) FROM objects WHERE object_id = ANY (%s) AND state = 'deleted'", ids) == [(len(ids),)]
            and db("SELECT count(*) FROM deletions WHERE object_id = ANY (%s)", ids) == [(len(ids),)])


def dead_letter_reason(dead_letters: DeadLetters, message_id: str, queue: str) -> str | None:
    dead_letters.drain()
    return dead_letters.reasons.get((message_id, queue))


def test_pointers_published_together_are_verified_by_every_group_and_each_object_is_deleted_once(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], db: Callable[..., list[tuple[Any, ...]]], ledger: Ledger,
) -> None:
    groups = recipients("billing", "audit")
    consumers = [start_consumer(group) for group in groups]
    job = f"batch-{groups[0]}"
    pointers = [stored(groups, size=5_000, job=job) for _ in range(12)]

    assert publish_together(settings, keyring, pointers) == 1

    wait_until(lambda: deleted_once(db, pointers), 60, "every object deleted once")
    assert not any(object_exists(pointer) for pointer in pointers)
    progress = ledger.job_progress(job)
    assert (progress.published, progress.deleted) == (12, 12)
    assert progress.acked == {group: 12 for group in groups}
    assert [consumer.stats.verified_by_job.get(job) for consumer in consumers] == [12, 12]
    assert [consumer.stats.dead_lettered for consumer in consumers] == [0, 0]


def test_a_refused_object_dead_letters_its_batch_once_per_group_and_the_others_are_deleted(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], db: Callable[..., list[tuple[Any, ...]]],
    dead_letters: DeadLetters, ledger: Ledger,
) -> None:
    groups = recipients("billing", "audit")
    consumers = [start_consumer(group) for group in groups]
    good = [stored(groups, size=5_000) for _ in range(2)]
    stored_bad = stored(groups, size=5_000)
    bad = stored_bad.model_copy(update={"payload_sha256": "b" * 64})  # signed, but not what was stored
    batch = [good[0], bad, good[1]]

    assert publish_together(settings, keyring, batch) == 1

    wait_until(lambda: deleted_once(db, good), 60, "the good objects deleted once")
    message_id = f"pointers-{good[0].object_id}+2"
    for group in groups:
        reason = wait_until(partial(dead_letter_reason, dead_letters, message_id, f"claimcheck.pointers.{group}"), 30,
                            f"{group}'s dead letter")
        assert reason.startswith(f"integrity: object {bad.object_id}: "), reason
    dead_letters.drain()
    assert dead_letters.times[message_id] == len(groups)  # once per group, not once per object
    assert object_exists(bad), "a refused object was deleted"
    assert ledger.job_progress(bad.job).pending == 1
    assert [consumer.stats.verified for consumer in consumers] == [2, 2]
    assert [consumer.stats.dead_lettered for consumer in consumers] == [1, 1]


def test_an_object_to_try_again_brings_its_batch_back_and_each_object_is_deleted_once(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer], stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool], db: Callable[..., list[tuple[Any, ...]]], dead_letters: DeadLetters,
) -> None:
    (billing,) = recipients("billing")
    pointers = [stored([billing], size=5_000) for _ in range(3)]
    ids = [pointer.object_id for pointer in pointers]
    failed_once = threading.Event()
    calls: list[str] = []
    lock = threading.Lock()

    def hook(pointer: Pointer, payload: IO[bytes]) -> None:
        with lock:
            calls.append(pointer.object_id)
            fail = pointer.object_id == ids[1] and not failed_once.is_set()
            if fail:
                failed_once.set()
        if fail:
            raise RuntimeError("the application failed once")

    consumer = start_consumer(billing, hook)
    assert publish_together(settings, keyring, pointers) == 1

    wait_until(lambda: deleted_once(db, pointers), 60, "every object deleted once")
    assert not any(object_exists(pointer) for pointer in pointers)
    assert db("SELECT count(*) FROM acks WHERE object_id = ANY (%s)", ids) == [(3,)]
    assert calls.count(ids[1]) == 2  # failed, then processed on the batch's redelivery
    assert consumer.stats.dead_lettered == 0
    dead_letters.drain()
    assert f"pointers-{ids[0]}+2" not in dead_letters.seen


def test_a_redelivered_batch_settles_what_its_group_confirmed_before_without_processing_it_again(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    running: Callable[..., None], stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool],
    db: Callable[..., list[tuple[Any, ...]]], broker: BrokerSession, caplog: pytest.LogCaptureFixture,
) -> None:
    billing, audit = recipients("billing", "audit")  # audit never runs: nothing is deleted
    pointers = [stored([billing, audit], size=5_000) for _ in range(3)]
    ids = [pointer.object_id for pointer in pointers]
    calls: list[str] = []
    consumer = RecipientConsumer(settings.model_copy(update={"coordinator_url": coordinator_url}), billing,
                                 lambda pointer, payload: calls.append(pointer.object_id))
    running(billing, consumer.run, consumer.consuming)
    assert publish_together(settings, keyring, pointers) == 1
    wait_until(lambda: db("SELECT count(*) FROM acks WHERE object_id = ANY (%s)", ids) == [(3,)], 60,
               "billing's confirmation of every object")

    # The same signed batch once more, as the broker hands a batch back (x-delivery-count).
    body = PointerBatch(created_at=now(), pointers=tuple(pointers)).encode()
    caplog.set_level(logging.INFO, logger="claimcheck.consumer")
    broker.publish(topology.POINTER_EXCHANGE, billing, body, message_id="again",
                   headers={"x-delivery-count": 1, **keyring.sign(body)})

    def settled_lines() -> list[str] | None:
        lines = [record.getMessage() for record in caplog.records if "of a redelivered batch" in record.getMessage()]
        return lines if len(lines) == 3 else None

    settled = wait_until(settled_lines, 30, "the redelivered batch's objects settled")
    assert sorted(line.split()[1] for line in settled) == sorted(ids)
    assert sorted(calls) == sorted(ids)  # each processed once, on the first delivery only
    assert db("SELECT sum(duplicates) FROM acks WHERE object_id = ANY (%s)", ids) == [(0,)]
    assert all(object_exists(pointer) for pointer in pointers)


def test_a_pointer_waits_for_company_only_while_more_is_being_prepared(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer],
) -> None:
    """With a linger far longer than the test's deadlines: a pointer handed over while another
    payload is being prepared waits for its pointer and travels with it; a pointer handed over
    when nothing else is being prepared goes at once."""
    groups = recipients("billing")
    first, second, alone = (stored(groups, size=1_000) for _ in range(3))
    batcher = PointerBatcher(settings, keyring.pointer, linger=120.0)
    try:
        with batcher.preparing():
            sent = [batcher.submit(first)]
            with batcher.preparing():  # the second payload, stored meanwhile by another thread
                sent.append(batcher.submit(second))
        for future in sent:
            future.result(timeout=30)
        assert batcher.batches == 1
        batcher.submit(alone).result(timeout=30)
        assert batcher.batches == 2
    finally:
        batcher.close()
