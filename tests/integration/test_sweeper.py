"""The orphan sweeper removes payloads no live pointer references, and nothing else."""

from collections.abc import Callable
from typing import Any

from claimcheck import topology
from claimcheck.broker import BrokerSession
from claimcheck.config import Settings
from claimcheck.ledger import Ledger
from claimcheck.producer import publish_pointer
from claimcheck.protocol import Pointer
from claimcheck.signing import Keyring
from claimcheck.sweeper import PointerQueueBarrier, sweep
from integration_helpers import DeadLetters, ack_for, unique, wait_until

Query = Callable[..., list[tuple[Any, ...]]]
EVIL = Keyring.parse("evil:attacker-controlled-secret")


def publish_ack(broker: BrokerSession, keyring: Keyring, pointer: Pointer, recipient: str) -> None:
    body = ack_for(pointer, recipient).encode()
    broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, body, message_id=f"{pointer.object_id}.{recipient}",
                   headers=keyring.sign(body))


def test_sweeps_orphans_and_never_objects_with_pending_recipients(
    settings: Settings, s3: Any, coordinator_url: str, recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer], object_exists: Callable[[Pointer], bool], broker: BrokerSession,
    ledger: Ledger, db: Query, dead_letters: DeadLetters, keyring: Keyring, barrier: PointerQueueBarrier,
) -> None:
    billing, audit = recipients("billing", "audit")
    job = unique("sweep")
    never_published = stored([billing, audit], job=job)
    half_confirmed = stored([billing, audit], job=job)
    rejected_pointer = stored([billing, audit], job=job)
    foreign_key = f"{job}/notes.txt"
    s3.put_object(Bucket=settings.s3_bucket, Key=foreign_key, Body=b"not ours")

    publish_pointer(broker, keyring, half_confirmed)
    publish_ack(broker, keyring, half_confirmed, billing)
    publish_pointer(broker, EVIL, rejected_pointer)
    dead_letters.reason_for(rejected_pointer.object_id)
    wait_until(lambda: ledger.job_progress(job).acked == {billing: 1}, 30, "the half-confirmed object in the ledger")

    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=3600, barrier=barrier, prefix=f"{job}/") == 0, "grace period ignored"
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
    keyring: Keyring, barrier: PointerQueueBarrier,
) -> None:
    (billing,) = recipients("billing")
    late = stored([billing])
    assert sweep(s3, ledger, settings.s3_bucket, grace_seconds=0, barrier=barrier, prefix=f"{late.job}/") == 1

    publish_pointer(broker, keyring, late)
    assert "already swept" in dead_letters.reason_for(late.object_id)
    assert db("SELECT state, deleted_at IS NOT NULL FROM objects WHERE object_id = %s", late.object_id) == [
        ("deleted", True)
    ]
