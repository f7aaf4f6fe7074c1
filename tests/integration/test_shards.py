"""Coordinator shards against the real stack: two shards, each owned by its own coordinator,
deliver and delete every object once; a shard queue has one active consumer and another
replica takes over when it leaves; the sweeper's barrier needs every shard; components whose
shard count the broker does not have refuse in one line (docs/scaling.md)."""

import functools
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from claimcheck import Consumer, Message, Producer, topology, wait_until_deleted
from claimcheck.config import Settings
from claimcheck.coordinator import Coordinator
from claimcheck.ledger import Ledger
from claimcheck.provisioning import provision
from claimcheck.publisher import parameters
from claimcheck.sweeper import PointerQueueBarrier
from claimcheck.topology import NotProvisioned
from tests.integration.integration_helpers import Running, unique, wait_until
from tests.testkit import management, temporary_vhost

SHARDS = 2


@pytest.fixture
def sharded(library: Settings) -> Iterator[Settings]:
    """Settings of every role for a vhost provisioned with two coordinator shards."""
    with temporary_vhost(library.amqp_url, shards=SHARDS) as url:
        yield library.model_copy(update={"amqp_url": url, "coordinator_shards": SHARDS})


def _vhost(settings: Settings) -> str:
    return urllib.parse.urlsplit(settings.amqp_url).path.lstrip("/")


def _queue(settings: Settings, queue: str) -> dict[str, Any]:
    answer: dict[str, Any] = management("GET", f"/queues/{_vhost(settings)}/{urllib.parse.quote(queue, safe='')}")
    return answer


def _coordinator(settings: Settings, shard_ids: str = "") -> Running:
    return Running(f"coordinator-{shard_ids or 'all'}",
                   Coordinator(settings.model_copy(update={"coordinator_shard_ids": shard_ids})).run)


def _receivers(sharded: Settings, start_library_consumer: Callable[..., Consumer],
               groups: list[str]) -> dict[str, dict[str, bytes]]:
    received: dict[str, dict[str, bytes]] = {group: {} for group in groups}
    lock = threading.Lock()

    def receiver(group: str) -> Callable[[Message], None]:
        def handle(message: Message) -> None:
            data = message.read()
            with lock:
                received[group][message.object_id] = data
        return handle

    for group in groups:
        start_library_consumer(group, receiver(group), settings=sharded)
    return received


def _send(settings: Settings, groups: list[str], count: int) -> tuple[str, dict[str, bytes]]:
    """``count`` payloads, every other one stored in S3, the rest inline."""
    job = unique("sharded")
    sent: dict[str, bytes] = {}
    with Producer(settings, job=job) as producer:
        for seq in range(count):
            data = f"payload {seq} ".encode() * (7_000 if seq % 2 else 3)  # ~70 KiB: above the inline threshold
            sent[producer.send(data, recipients=groups).object_id] = data
    return job, sent


def test_two_shards_each_with_its_own_coordinator_deliver_and_delete_every_object_once(
    sharded: Settings, start_library_consumer: Callable[..., Consumer], ledger: Ledger,
    db: Callable[..., list[tuple[Any, ...]]],
) -> None:
    groups = [unique("billing"), unique("audit")]
    received = _receivers(sharded, start_library_consumer, groups)
    coordinators = [_coordinator(sharded, str(shard)) for shard in range(SHARDS)]
    try:
        job, sent = _send(sharded, groups, 40)
        report = wait_until_deleted(job, len(sent), 120, settings=sharded)
        assert report.ok and report.deleted == len(sent), report
        # Deleted means every group ACKed, and a group ACKs only after its handler returned.
        assert all(received[group] == sent for group in groups), "a group missed a payload or got other bytes"
        deletions = db("SELECT object_id, count(*) FROM deletions WHERE object_id = ANY (%s) GROUP BY object_id",
                       [oid for oid, data in sent.items() if len(data) > 64 * 1024])
        assert len(deletions) == len(sent) // 2 and {count for _, count in deletions} == {1}, deletions

        # Each object's messages went through its own shard's queues, and both shards carried some.
        owners = {shard: [oid for oid in sent if topology.shard_of(oid, SHARDS) == shard] for shard in range(SHARDS)}
        assert all(owners.values()), owners
        def published(queue: str) -> int:
            return int(_queue(sharded, queue).get("message_stats", {}).get("publish", 0))

        def counted(shard: int) -> bool:
            # A pointer copy per object, an intent per stored one (one producer thread: intents
            # travel alone), and some ACK messages.
            stored = sum(len(sent[oid]) > 64 * 1024 for oid in owners[shard])
            return (published(topology.coordinator_pointer_queue(shard)) == len(owners[shard]) + stored
                    and published(topology.ack_queue(shard)) >= 1)

        for shard in range(SHARDS):  # the management API's counters lag by a few seconds
            wait_until(functools.partial(counted, shard), 30, f"shard {shard}'s queues counting its objects")
        assert PointerQueueBarrier(sharded, ledger, timeout=60)() is not None, "both shards apply their barriers"
    finally:
        for coordinator in coordinators:
            coordinator.stop()


def test_a_shard_has_one_active_coordinator_and_another_takes_over_when_it_leaves(
    sharded: Settings, start_library_consumer: Callable[..., Consumer], ledger: Ledger,
) -> None:
    groups = [unique("billing")]
    _receivers(sharded, start_library_consumer, groups)
    first = _coordinator(sharded)
    second: Running | None = None
    try:
        job, sent = _send(sharded, groups, 10)
        assert wait_until_deleted(job, len(sent), 120, settings=sharded).ok
        second = _coordinator(sharded)
        queues = [queue for queue, _, _ in topology.coordinator_queues(range(SHARDS))]
        wait_until(lambda: all(len(_queue(sharded, queue)["consumer_details"]) == 2 for queue in queues), 30,
                   "both coordinators subscribed to every shard queue")
        for queue in queues:
            statuses = sorted(c["activity_status"] for c in _queue(sharded, queue)["consumer_details"])
            assert statuses == ["single_active", "waiting"], (queue, statuses)

        first.stop()
        job, sent = _send(sharded, groups, 10)
        assert wait_until_deleted(job, len(sent), 120, settings=sharded).ok, "the standby took over every shard"
    finally:
        first.stop_event.set()
        if second is not None:
            second.stop()


def test_the_sweepers_barrier_waits_for_every_shard_the_broker_has(sharded: Settings, ledger: Ledger) -> None:
    """A shard without a coordinator postpones every sweep: its queue may hold an intent or pointer.
    So does a shard beyond the sweeper's own count whose queue exists (a component configured
    for more shards may have announced uploads there)."""
    one_shard = sharded.model_copy(update={"coordinator_shards": 1})
    only_shard_0 = _coordinator(sharded, "0")
    try:
        assert PointerQueueBarrier(sharded, ledger, timeout=3)() is None
        assert PointerQueueBarrier(one_shard, ledger, timeout=3)() is None
        only_shard_1 = _coordinator(sharded, "1")
        try:
            assert PointerQueueBarrier(sharded, ledger, timeout=60)() is not None
            assert PointerQueueBarrier(one_shard, ledger, timeout=60)() is not None
        finally:
            only_shard_1.stop()
    finally:
        only_shard_0.stop()


def test_components_configured_for_shards_the_broker_lacks_refuse_in_one_line(
    sharded: Settings, start_library_consumer: Callable[..., Consumer],
) -> None:
    three = sharded.model_copy(update={"coordinator_shards": 3})
    group = unique("billing")
    start_library_consumer(group, lambda message: None, settings=sharded)
    producer = Producer(three)
    try:
        with pytest.raises(NotProvisioned, match=r"coordinator shard 2 has no queue 'claimcheck\.coordinator\.pointers\.2'"):
            producer.send(b"x", recipients=[group])
    finally:
        producer.close()
    with pytest.raises(NotProvisioned, match=r"coordinator shard 2 has no queue 'claimcheck\.coordinator\.acks\.2'.*"
                                             r"CLAIMCHECK_COORDINATOR_SHARDS=3"):
        Consumer(unique("audit"), lambda message: None, settings=three).run(threading.Event())



def test_coordinator_queues_from_before_shards_are_used_as_they_are(library: Settings, ledger: Ledger,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An upgraded deployment: shard 0's queues exist without a single active consumer, and
    RabbitMQ cannot add one. The coordinator and provisioning use them, warn, and do not refuse."""
    with temporary_vhost(library.amqp_url, shards=0) as url:
        legacy = library.model_copy(update={"amqp_url": url})
        connection = pika.BlockingConnection(parameters(url))
        try:
            channel = connection.channel()
            for queue, exchange, routing_key in topology.coordinator_queues([0]):
                channel.queue_declare(queue, durable=True, arguments={
                    "x-queue-type": "quorum", "x-dead-letter-exchange": topology.DEAD_EXCHANGE,
                    "x-delivery-limit": topology.DELIVERY_LIMIT})
                channel.queue_bind(queue, exchange, routing_key=routing_key)
        finally:
            connection.close()
        provision(url, "", [], [], shards=1)
        coordinator = _coordinator(legacy)
        try:
            assert PointerQueueBarrier(legacy, ledger, timeout=60)() is not None, "the coordinator applies shard 0"
        finally:
            coordinator.stop()
        assert "claimcheck.coordinator.pointers was declared before coordinator shards" in caplog.text
