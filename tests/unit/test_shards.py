"""Coordinator shards without services: which shard owns an object, the shards' names, the
coordinator's broker permissions over every shard, and the shard settings' checks."""

import re
import uuid

import pytest
from pydantic import ValidationError

from claimcheck import topology
from claimcheck.config import Settings


def test_objects_spread_evenly_and_always_to_the_same_shard() -> None:
    ids = [uuid.uuid4().hex for _ in range(8_000)]
    for shards in (1, 2, 3, 8):
        counts = [0] * shards
        for object_id in ids:
            shard = topology.shard_of(object_id, shards)
            assert shard == topology.shard_of(object_id, shards)
            counts[shard] += 1
        assert min(counts) > len(ids) / shards * 0.85, (shards, counts)


def test_shard_0_keeps_the_unsharded_names() -> None:
    assert topology.coordinator_queues([0]) == [
        (topology.COORDINATOR_POINTER_QUEUE, topology.POINTER_EXCHANGE, topology.COORDINATOR_ROUTING_KEY),
        (topology.ACK_QUEUE, topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY),
    ]
    assert topology.coordinator_queues([3]) == [
        ("claimcheck.coordinator.pointers.3", topology.POINTER_EXCHANGE, "coordinator.3"),
        ("claimcheck.coordinator.acks.3", topology.ACK_EXCHANGE, "ack.3"),
    ]
    object_id = uuid.uuid4().hex
    assert topology.coordinator_route(object_id, 1) == "coordinator" and topology.ack_route(object_id, 1) == "ack"


@pytest.mark.parametrize("shard", [0, 1, 17, topology.MAX_SHARDS - 1])
def test_the_coordinator_may_use_every_shards_queues_and_nothing_of_a_group(shard: int) -> None:
    configure, write, read = topology.COORDINATOR_PERMISSIONS
    for queue, _, _ in topology.coordinator_queues([shard]):
        assert all(re.match(permission, queue) for permission in (configure, write, read)), queue
    for foreign in ("claimcheck.pointers.billing", "claimcheck.coordinator.pointers.", "claimcheck.coordinator.acksx",
                    "claimcheck.coordinator.pointers.1.x"):
        assert not any(re.match(permission, foreign) for permission in (configure, write, read)), foreign


def test_shard_settings_are_checked() -> None:
    assert Settings(coordinator_shards=3).owned_shards() == [0, 1, 2]
    assert Settings(coordinator_shards=3, coordinator_shard_ids=" 2,0 ").owned_shards() == [0, 2]
    for shards, ids in ((2, "2"), (2, "-1"), (2, "one"), (0, "")):
        with pytest.raises(ValidationError, match="COORDINATOR_SHARD|coordinator_shards"):
            Settings(coordinator_shards=shards, coordinator_shard_ids=ids)
    with pytest.raises(ValidationError):
        Settings(coordinator_shards=topology.MAX_SHARDS + 1)
