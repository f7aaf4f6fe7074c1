"""Business ACKs published together (issue 16): concurrent workers' ACKs share broker messages,
every object is still counted once and deleted once, and a refused publish reaches every worker."""

import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from claimcheck import topology
from claimcheck.ack_batcher import AckBatcher
from claimcheck.config import Settings
from claimcheck.producer import publish_pointer
from claimcheck.protocol import Pointer
from claimcheck.publisher import BrokerRefused, BrokerSession
from tests.integration.integration_helpers import LocalKeys, wait_until

WORKERS = 20


def confirm_concurrently(batcher: AckBatcher, pointers: list[Pointer]) -> list[BaseException | None]:
    """Every pointer's ACK from a thread of its own, all released at once; each thread's outcome."""
    start = threading.Barrier(len(pointers))
    outcomes: list[BaseException | None] = [None] * len(pointers)

    def worker(index: int) -> None:
        start.wait()
        try:
            batcher.confirm(pointers[index], timeout=60)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            outcomes[index] = exc

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(pointers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return outcomes


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

    ids = [pointer.object_id for pointer in pointers]
    wait_until(lambda: db("SELECT count(*) FROM objects WHERE object_id = ANY (%s) AND state = 'deleted'", ids)
               == [(WORKERS,)], 60, "every object deleted")
    assert db("SELECT count(*) FROM deletions WHERE object_id = ANY (%s)", ids) == [(WORKERS,)]
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
