"""Group commit on the broker (issue 16): concurrent workers' business ACKs, and concurrent
uploads' intents, share broker messages; every object is still counted once and deleted once, and
a refused publish reaches every caller of its message."""

import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from claimcheck import topology
from claimcheck.ack_batcher import AckBatcher
from claimcheck.config import Settings
from claimcheck.group_commit import GroupCommit
from claimcheck.ledger import Ledger
from claimcheck.producer import AheadAnnouncer, IntentBatcher, Producer, publish_pointer, store_payload
from claimcheck.protocol import Pointer
from claimcheck.publisher import BrokerRefused, BrokerSession
from claimcheck.sources import Source
from tests.integration.integration_helpers import DeadLetters, LocalKeys, wait_until

WORKERS = 20
T = TypeVar("T")


def confirm_concurrently(batcher: GroupCommit[T], items: list[T]) -> list[BaseException | None]:
    """Every item from a thread of its own, all released at once; each thread's outcome."""
    start = threading.Barrier(len(items))
    outcomes: list[BaseException | None] = [None] * len(items)

    def worker(index: int) -> None:
        start.wait()
        try:
            batcher.confirm(items[index], timeout=60)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            outcomes[index] = exc

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return outcomes


def wait_deleted_once(db: Callable[..., list[tuple[Any, ...]]], pointers: list[Pointer]) -> list[str]:
    """Wait until the ledger deleted every object of ``pointers``; each deletion recorded once. Their ids."""
    ids = [pointer.object_id for pointer in pointers]
    wait_until(lambda: db("SELECT count(*) FROM objects WHERE object_id = ANY (%s) AND state = 'deleted'", ids)
               == [(len(ids),)], 60, "every object deleted")
    assert db("SELECT count(*) FROM deletions WHERE object_id = ANY (%s)", ids) == [(len(ids),)]
    return ids


def test_concurrent_acks_share_messages_and_each_object_is_deleted_once(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession,
    db: Callable[..., list[tuple[Any, ...]]],
) -> None:
    (group,) = recipients("billing")
    pointers = [stored([group], size=1_000) for _ in range(WORKERS)]
    for pointer in pointers:
        publish_pointer(broker, keyring.pointer, pointer)
    batcher = AckBatcher(BrokerSession(settings.amqp_url, topology.declare), keyring.ack(group), group, "test")
    try:
        # A redelivered pointer confirmed again while its first ACK may still wait: counted once.
        assert confirm_concurrently(batcher, [*pointers, pointers[0]]) == [None] * (WORKERS + 1)
    finally:
        batcher.close()
    assert 1 <= batcher.batches < WORKERS + 1  # some ACKs travelled together

    ids = wait_deleted_once(db, pointers)
    assert db("SELECT count(*) FROM acks WHERE object_id = ANY (%s)", ids) == [(WORKERS,)]
    assert not any(object_exists(pointer) for pointer in pointers)


def test_a_refused_batch_fails_every_worker_in_it(settings: Settings, keyring: LocalKeys,
                                                  stored: Callable[..., Pointer]) -> None:
    url = urllib.parse.urlsplit(settings.amqp_url)
    wrong = url._replace(netloc=f"{url.username}:not-the-password@{url.hostname}:{url.port}").geturl()
    pointers = [stored(["billing"], size=1_000) for _ in range(4)]
    batcher = AckBatcher(BrokerSession(wrong, topology.declare), keyring.ack("billing"), "billing", "test")
    try:
        outcomes = confirm_concurrently(batcher, pointers)
    finally:
        batcher.close()
    assert all(isinstance(outcome, BrokerRefused) for outcome in outcomes), outcomes
    with pytest.raises(RuntimeError, match="closed"):
        batcher.confirm(pointers[0])


def test_concurrent_uploads_announce_together_and_each_object_is_deleted_once(
    coordinator_url: str, settings: Settings, s3: Any, keyring: LocalKeys, recipients: Callable[..., list[str]],
    object_exists: Callable[[Pointer], bool], broker: BrokerSession, ledger: Ledger,
    db: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """Uploads in several threads share one IntentBatcher: their intents travel in fewer messages
    than objects, the ledger knows every object before its pointer, and each is deleted once."""
    (group,) = recipients("billing")
    job = f"intents-{group}"
    intents = IntentBatcher(settings, keyring.pointer)
    start = threading.Barrier(WORKERS)
    stored: list[Pointer] = []

    def upload(seq: int) -> None:
        start.wait()
        stored.append(store_payload(s3, settings, job, seq, 2_000, [group], intents.confirm))

    threads = [threading.Thread(target=upload, args=(seq,)) for seq in range(WORKERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        intents.close()
    assert len(stored) == WORKERS
    assert 1 <= intents.batches < WORKERS  # some intents travelled together
    wait_until(lambda: ledger.job_progress(job).awaiting_pointer == WORKERS, 30, "every intent in the ledger")

    for pointer in stored:
        publish_pointer(broker, keyring.pointer, pointer)
    batcher = AckBatcher(BrokerSession(settings.amqp_url, topology.declare), keyring.ack(group), group, "test")
    try:
        assert confirm_concurrently(batcher, stored) == [None] * WORKERS
    finally:
        batcher.close()
    wait_deleted_once(db, stored)
    assert not any(object_exists(pointer) for pointer in stored)


def test_the_first_ack_lingers_for_company_and_workers_do_not_wait(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer], broker: BrokerSession, db: Callable[..., list[tuple[Any, ...]]],
) -> None:
    """ACKs handed over one after another (submit returns at once) within the linger travel in
    one message; each future is done once that message was confirmed, and each object is deleted."""
    (group,) = recipients("billing")
    pointers = [stored([group], size=1_000) for _ in range(3)]
    for pointer in pointers:
        publish_pointer(broker, keyring.pointer, pointer)
    batcher = AckBatcher(BrokerSession(settings.amqp_url, topology.declare), keyring.ack(group), group, "test",
                         linger=1.0)
    try:
        sent = [batcher.submit(pointer) for pointer in pointers]
        for future in sent:
            future.result(timeout=30)
    finally:
        batcher.close()
    assert batcher.batches == 1
    wait_deleted_once(db, pointers)


def test_a_run_announces_its_uploads_ahead_and_each_pointer_follows_its_own_intent(
    coordinator_url: str, settings: Settings, keyring: LocalKeys, recipients: Callable[..., list[str]],
    ledger: Ledger, db: Callable[..., list[tuple[Any, ...]]], dead_letters: DeadLetters,
) -> None:
    """Ten uploads announced four at a time: three intent messages; each object is stored under
    its announced id, its pointer matches the intent the ledger recorded (nothing refused), and
    the run cannot take more ids than it announced."""
    (group,) = recipients("billing")
    job = f"ahead-{group}"
    intents = IntentBatcher(settings, keyring.pointer)
    ahead = AheadAnnouncer(intents, settings, job, count=10, window=4)
    try:
        announced = [ahead.take() for _ in range(10)]
        with pytest.raises(RuntimeError, match="every upload of the run was announced"):
            ahead.take()
    finally:
        intents.close()
    assert intents.batches == 3
    wait_until(lambda: ledger.job_progress(job).awaiting_pointer == 10, 30, "every intent in the ledger")

    with Producer(settings, job=job, always_through_s3=True) as producer:
        pointers = [producer.submit_source(lambda object_id: Source(lambda: iter([b"{}"]), True), recipients=[group],
                                           job=job, content_type="application/json", metadata=None, announced=one)[0]
                    for one in announced]
    assert [pointer.object_id for pointer in pointers] == [one.object_id for one in announced]
    batcher = AckBatcher(BrokerSession(settings.amqp_url, topology.declare), keyring.ack(group), group, "test")
    try:
        assert confirm_concurrently(batcher, pointers) == [None] * 10
    finally:
        batcher.close()
    wait_deleted_once(db, pointers)
    dead_letters.drain()
    assert not [reason for reason in dead_letters.reasons.values() if any(p.object_id in reason for p in pointers)]
