"""The orphan sweeper removes payloads no pointer will ever name, and nothing a recipient may still need:
not while their intent or pointer waits in the coordinator's queue, not once any recipient ACKed them."""

import uuid
from collections.abc import Callable
from typing import Any

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.coordinator import Coordinator
from claimcheck.ledger import Ledger
from claimcheck.producer import IntentBatcher, publish_pointer, store_payload
from claimcheck.protocol import Intent, Pointer, now, object_key
from claimcheck.publisher import BrokerSession
from claimcheck.signing import new_pointer_key, pointer_signer
from claimcheck.sweeper import PointerQueueBarrier, sweep
from tests.integration.integration_helpers import DeadLetters, LocalKeys, Running, ack_for, unique, wait_until
from tests.testkit import counted, temporary_vhost

Query = Callable[..., list[tuple[Any, ...]]]
EVIL = pointer_signer(new_pointer_key("evil")[0])


def publish_ack(broker: BrokerSession, keyring: LocalKeys, pointer: Pointer, recipient: str) -> None:
    body = ack_for(pointer, recipient).encode()
    broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, body, message_id=f"{pointer.object_id}.{recipient}",
                   headers=keyring.ack(recipient).sign(body))


def test_sweeps_orphans_and_never_objects_with_pending_recipients(
    settings: Settings, s3: Any, coordinator_url: str, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession,
    ledger: Ledger, db: Query, dead_letters: DeadLetters, keyring: LocalKeys, barrier: PointerQueueBarrier,
) -> None:
    billing, audit = recipients("billing", "audit")
    job = unique("sweep")
    never_published = stored([billing, audit], job=job)
    half_confirmed = stored([billing, audit], job=job)
    rejected_pointer = stored([billing, audit], job=job)
    foreign_key = f"{job}/notes.txt"
    s3.put_object(Bucket=settings.s3_bucket, Key=foreign_key, Body=b"not ours")

    publish_pointer(broker, keyring.pointer, half_confirmed)
    publish_ack(broker, keyring, half_confirmed, billing)
    publish_pointer(broker, EVIL, rejected_pointer)
    dead_letters.reason_for(rejected_pointer.object_id)
    wait_until(lambda: ledger.job_progress(job).acked == {billing: 1}, 30, "the half-confirmed object in the ledger")

    swept_early = sweep(s3, ledger, settings.s3_bucket, grace_seconds=3600, barrier=barrier, prefix=f"{job}/")
    assert swept_early == 0, "grace period ignored"
    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=barrier, prefix=f"{job}/") == 2

    assert not object_exists(never_published) and not object_exists(rejected_pointer)
    assert object_exists(half_confirmed), "an object with a pending recipient was swept"
    assert s3.head_object(Bucket=settings.s3_bucket, Key=foreign_key)
    swept = db("SELECT object_id FROM objects WHERE job = %s AND swept_at IS NOT NULL ORDER BY object_id", job)
    assert swept == sorted([(never_published.object_id,), (rejected_pointer.object_id,)])

    publish_ack(broker, keyring, half_confirmed, audit)
    wait_until(lambda: ledger.job_progress(job).deleted == 1, 30, "the half-confirmed object deleted normally")
    progress = ledger.job_progress(job)
    assert (progress.published, progress.deleted, progress.swept) == (1, 1, 2), "swept objects counted as confirmed"
    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=barrier, prefix=f"{job}/") == 0
    s3.delete_object(Bucket=settings.s3_bucket, Key=foreign_key)


def test_a_pointer_arriving_after_its_object_was_swept_is_dead_lettered(
    settings: Settings, s3: Any, coordinator_url: str, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer], broker: BrokerSession, ledger: Ledger, db: Query, dead_letters: DeadLetters,
    keyring: LocalKeys, barrier: PointerQueueBarrier,
) -> None:
    (billing,) = recipients("billing")
    late = stored([billing])
    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=barrier, prefix=f"{late.job}/") == 1

    publish_pointer(broker, keyring.pointer, late)
    assert "already swept" in dead_letters.reason_for(late.object_id)
    assert db("SELECT state, deleted_at IS NOT NULL FROM objects WHERE object_id = %s", late.object_id) == [
        ("deleted", True)
    ]


def test_an_object_whose_pointer_waits_in_a_backlog_is_never_swept(
    settings: Settings, s3: Any, ledger: Ledger, keyring: LocalKeys, object_exists: Callable[[Pointer], bool],
) -> None:
    """The coordinator is not consuming (down, or far behind): the producer's intent and pointer
    sit in its queue. No grace period makes that object sweepable: the sweep waits for its barrier."""
    with temporary_vhost(settings.amqp_url) as url:
        isolated = settings.model_copy(update={"amqp_url": url})
        job, billing = unique("backlog"), unique("billing")
        broker = BrokerSession(url, lambda channel: topology.declare(channel, [billing]))
        announce = IntentBatcher(isolated, keyring.pointer)
        try:
            pointer = store_payload(s3, isolated, job, 0, 5_000, [billing], announce.confirm)
            publish_pointer(broker, keyring.pointer, pointer)
        finally:
            announce.close()
            broker.close()

        no_coordinator = PointerQueueBarrier(isolated, ledger, timeout=2)
        assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=no_coordinator, prefix=f"{job}/") == 0
        assert object_exists(pointer), "swept while its intent and pointer were still queued"

        coordinator = Running("coordinator", Coordinator(isolated).run)
        try:
            barrier = PointerQueueBarrier(isolated, ledger, timeout=60)
            assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=barrier, prefix=f"{job}/") == 0
            assert object_exists(pointer), "swept although its pointer was applied before the barrier"
            assert ledger.job_progress(job).pending == 1
        finally:
            coordinator.stop()


def test_an_object_a_recipient_confirmed_is_never_swept_even_without_its_pointer(
    settings: Settings, s3: Any, coordinator_url: str, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession,
    ledger: Ledger, keyring: LocalKeys, barrier: PointerQueueBarrier,
) -> None:
    """The coordinator's copy of the pointer is late or was dead-lettered, but a recipient already
    verified the payload and ACKed: a pointer exists somewhere, so the object is not an orphan."""
    billing, audit = recipients("billing", "audit")
    pointer = stored([billing, audit])
    publish_ack(broker, keyring, pointer, billing)
    wait_until(lambda: ledger.job_progress(pointer.job).awaiting_pointer == 1, 30, "the early ACK in the ledger")
    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=barrier, prefix=f"{pointer.job}/") == 0
    assert object_exists(pointer), "an object a recipient confirmed was swept"
    publish_pointer(broker, keyring.pointer, pointer)
    publish_ack(broker, keyring, pointer, audit)
    wait_until(lambda: ledger.job_progress(pointer.job).deleted == 1, 30, "the object deleted after both ACKs")


def test_announced_uploads_are_swept_only_after_the_grace_period_even_if_never_stored(
    settings: Settings, s3: Any, coordinator_url: str, ledger: Ledger, keyring: LocalKeys,
    object_exists: Callable[[Pointer], bool], barrier: PointerQueueBarrier,
) -> None:
    job = unique("intent")
    announce = IntentBatcher(settings, keyring.pointer)
    try:
        stored = store_payload(s3, settings, job, 0, 5_000, ["billing"], announce.confirm)  # died before publishing
        object_id = uuid.uuid4().hex  # the producer died before this upload finished
        announce.confirm(Intent(object_id=object_id, job=job, bucket=settings.s3_bucket, key=object_key(job, object_id),
                        created_at=now()))
    finally:
        announce.close()
    wait_until(lambda: ledger.job_progress(job).awaiting_pointer == 2, 30, "both intents in the ledger")

    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=3600, barrier=barrier, prefix=f"{job}/") == 0
    assert object_exists(stored), "an upload announced moments ago was swept"
    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=barrier, prefix=f"{job}/") == 2
    assert not object_exists(stored)
    progress = ledger.job_progress(job)
    assert (progress.awaiting_pointer, progress.swept, progress.deleted) == (0, 2, 0), "intent rows left behind"


def test_sweep_is_postponed_when_no_coordinator_applies_its_barrier(
    settings: Settings, s3: Any, ledger: Ledger, stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool],
) -> None:
    orphan = stored(["billing"])  # uploaded without an intent, never published: an orphan
    with temporary_vhost(settings.amqp_url) as url:
        nobody_consumes = PointerQueueBarrier(settings.model_copy(update={"amqp_url": url}), ledger, timeout=1)
        before = counted("claimcheck_coordinator_sweeps_postponed_total")
        assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=nobody_consumes,
                     prefix=f"{orphan.job}/") == 0
    assert object_exists(orphan)
    assert counted("claimcheck_coordinator_sweeps_postponed_total") == before + 1
