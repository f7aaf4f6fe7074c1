"""The orphan sweeper: removes payloads that no pointer will ever name.

A producer that dies between upload and publish leaves an object in S3 that no recipient will
ever confirm. The sweeper removes such objects, and nothing a recipient may still need. An
object is swept only when the ledger proves nobody can need it:

- every message queued on the coordinator's pointer queues (one per shard) before the pass
  began has been applied: the pass first sends a barrier through each and waits until the
  shard's coordinator applied it (a backlog older than the grace period therefore postpones the
  pass); a pointer queue has a single active consumer, so nothing queued before a barrier is
  still held unapplied by another replica when the barrier is applied;
- producers announce each upload with an intent on that same queue before storing a byte, so
  after the barrier the ledger knows every upload older than the grace period;
- under the object's row lock, no pointer made it live, no ACK names it (an ACK means some
  recipient holds a pointer), and what the ledger knows of it is older than the grace period.

The row is recorded as swept before the S3 delete, so a pointer arriving later is dead-lettered
instead of reviving it. Keys not of the :func:`claimcheck.protocol.object_key` form are never
touched. docs/failure-model.md states the guarantee and its limits.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from claimcheck import metrics, store, topology
from claimcheck.config import Settings
from claimcheck.ledger import Ledger
from claimcheck.protocol import Barrier, now, parse_object_key
from claimcheck.publisher import BrokerSession

if TYPE_CHECKING:  # the stubs of the client boto3 builds (dev extras), for the checker only
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)

PAGE = 1000
# The moment before which every message on the coordinator's pointer queue has been applied,
# on the ledger's clock; None when that could not be established.
SweepBarrier = Callable[[], datetime | None]


class PointerQueueBarrier:
    """Sends a barrier through every coordinator shard's pointer queue and waits until all were applied.

    Every shard, not only those whose objects a pass may touch: an object's messages belong to
    its own shard, but a component configured with another shard count would have sent them
    elsewhere, and the pass must not act before those are applied either. That includes the
    pointer queues of shards beyond the configured count that exist on the broker: nobody may be
    applying them, and then the pass waits (postponed) instead of deleting what they announce.
    """

    def __init__(self, settings: Settings, ledger: Ledger, stop: threading.Event | None = None,
                 timeout: float = 60.0) -> None:
        self._settings = settings
        self._ledger = ledger
        self._stop = stop or threading.Event()
        self._timeout = timeout

    def __call__(self) -> datetime | None:
        configured = self._settings.coordinator_shards
        session = BrokerSession(self._settings.amqp_url, partial(topology.declare_for_coordinator, shards=configured),
                                self._settings.confirm_timeout)
        signer = self._settings.coordinator_signer()
        try:
            shards = topology.existing_shards(session.channel(), configured)
            if shards > configured:
                log.warning("the broker has %d coordinator shards, CLAIMCHECK_COORDINATOR_SHARDS is %d: orphan sweeps "
                            "also wait for the barriers of shards %d to %d, which only a coordinator of those shards "
                            "applies (docs/scaling.md)", shards, configured, configured, shards - 1)
            barriers = [Barrier(nonce=uuid.uuid4().hex, created_at=now()) for _ in range(shards)]
            sent_at = self._ledger.now()  # before the publishes: everything queued earlier is ahead of them
            for shard, barrier in enumerate(barriers):
                body = barrier.encode()
                session.publish(topology.POINTER_EXCHANGE, topology.coordinator_routing_key(shard), body,
                                message_id=f"barrier-{barrier.nonce}", headers=signer.sign(body))
        finally:
            session.close()
        deadline = time.monotonic() + self._timeout
        pending = [barrier.nonce for barrier in barriers]
        while pending := [nonce for nonce in pending if not self._ledger.barrier_applied(nonce)]:
            if time.monotonic() >= deadline or self._stop.wait(0.2):
                return None
        return sent_at


def sweep(s3: S3Client, ledger: Ledger, bucket: str, grace_seconds: float, barrier: SweepBarrier, prefix: str = "",
          key_prefix: str = "") -> int:
    """Sweep the keys under ``key_prefix + prefix`` once; return how many orphans were removed.

    ``key_prefix`` is the deployment's (CLAIMCHECK_S3_KEY_PREFIX): only keys of the
    :func:`claimcheck.protocol.object_key` form directly under it are considered.
    """
    passed = barrier()
    if passed is None:
        metrics.SWEEPS_POSTPONED.inc()
        log.warning("orphan sweep postponed: the coordinators did not apply the barriers on their pointer queues "
                    "in time (a backlog, or a shard without a coordinator?)")
        return 0
    cutoff = passed - timedelta(seconds=grace_seconds)
    swept = 0
    # Objects in the bucket: those the ledger never heard of, or knows only from an intent.
    prefix = key_prefix + prefix
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": PAGE})
    for page in pages:
        for item in page.get("Contents", []):
            parsed = parse_object_key(item["Key"], key_prefix)
            if parsed is not None and item["LastModified"] < cutoff:
                swept += _sweep_one(s3, ledger, bucket, *parsed, item["Key"], cutoff)
    # Announced uploads whose pointer never came, including those that never reached S3.
    while True:
        expired = ledger.expired_intents(bucket, cutoff, prefix, PAGE)
        removed = sum(_sweep_one(s3, ledger, bucket, job, object_id, key, cutoff) for object_id, job, key in expired)
        swept += removed
        if len(expired) < PAGE or not removed:
            return swept


def _sweep_one(s3: S3Client, ledger: Ledger, bucket: str, job: str, object_id: str, key: str, cutoff: datetime) -> int:
    if not ledger.claim_orphan(object_id, job, bucket, key, cutoff):
        return 0
    store.delete(s3, bucket, key)
    metrics.SWEPT.inc()
    log.warning("swept orphan s3://%s/%s: no pointer names it", bucket, key, extra={"object_id": object_id, "job": job})
    return 1
