"""The library API against the real stack: Producer.send, Consumer, wait_until_deleted.

Every payload is received byte-identical by two recipient groups through the public API, then
confirmed and deleted; inline payloads never touch S3.
"""

import hashlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from claimcheck import Message, Producer, Settings, wait_until_deleted
from claimcheck.ledger import Ledger
from claimcheck.producer import publish_pointer
from claimcheck.protocol import MAX_METADATA_ITEMS, Pointer
from claimcheck.topology import DELIVERY_LIMIT
from tests.integration.integration_helpers import DeadLetters, LocalKeys, unique, wait_until

THRESHOLD = 64 * 1024


class Received:
    """What each recipient group's handler got, by object id: (bytes, metadata, inline)."""

    def __init__(self) -> None:
        self.by_group: dict[str, dict[str, tuple[bytes, dict[str, str], bool, str]]] = {}
        self.lock = threading.Lock()

    def handler(self, group: str) -> Callable[[Message], None]:
        def handle(message: Message) -> None:
            data = message.read()
            with self.lock:
                self.by_group.setdefault(group, {})[message.object_id] = (
                    data, message.metadata, message.inline, message.content_type)

        return handle

    def got(self, group: str, object_id: str) -> tuple[bytes, dict[str, str], bool, str] | None:
        with self.lock:
            return self.by_group.get(group, {}).get(object_id)


def test_payloads_around_the_inline_threshold_reach_two_groups_byte_identical_and_are_deleted(
    library: Settings, recipients: Callable[..., list[str]], start_library_consumer: Any, ledger: Ledger, s3: Any,
) -> None:
    groups = recipients("lib-a", "lib-b")
    received = Received()
    for group in groups:
        start_library_consumer(group, received.handler(group))
    payloads = {size: os.urandom(size) for size in (0, 1, THRESHOLD, THRESHOLD + 1)}
    job = unique("lib")
    with Producer(library, job=job) as producer:
        sent = {size: producer.send(data, recipients=groups, content_type="application/x-test")
                for size, data in payloads.items()}
    assert [sent[size].is_inline for size in payloads] == [True, True, True, False]
    assert sent[THRESHOLD].encode().__len__() < 128 * 1024

    report = wait_until_deleted(job, len(payloads), 60, settings=library)
    assert report.deleted == len(payloads) and report.leftover_objects == 0
    for size, data in payloads.items():
        for group in groups:
            got = received.got(group, sent[size].object_id)
            assert got is not None, f"{group} did not get the {size}-byte payload"
            assert got[0] == data and got[2] == (size <= THRESHOLD) and got[3] == "application/x-test"
    deletions = [ledger.object_status(pointer.object_id) for pointer in sent.values()]
    assert all(status is not None and status.state == "deleted" and not status.swept for status in deletions)
    listed = s3.list_objects_v2(Bucket=library.s3_bucket, Prefix=f"{job}/").get("Contents", [])
    assert listed == []


def test_always_through_s3_stores_even_a_small_payload(library: Settings, recipients: Callable[..., list[str]],
                                                      start_library_consumer: Any) -> None:
    (group,) = recipients("lib-s3")
    received = Received()
    start_library_consumer(group, received.handler(group))
    job = unique("lib-s3")
    with Producer(library, job=job, always_through_s3=True) as producer:
        pointer = producer.send(b"tiny", recipients=[group])
    assert not pointer.is_inline and pointer.key is not None
    wait_until_deleted(job, 1, 60, settings=library)
    assert received.got(group, pointer.object_id) == (b"tiny", {}, False, "application/octet-stream")


def test_metadata_round_trips_and_tampering_is_refused_as_forged(
    library: Settings, recipients: Callable[..., list[str]], start_library_consumer: Any, keyring: LocalKeys,
    dead_letters: DeadLetters, broker: Any,
) -> None:
    (group,) = recipients("lib-meta")
    received = Received()
    start_library_consumer(group, received.handler(group))
    job = unique("lib-meta")
    metadata = {"filename": "report 2026.pdf", "customer-id": "42"}
    with Producer(library, job=job) as producer:
        pointer = producer.send(b"%PDF-1.7", recipients=[group], content_type="application/pdf", metadata=metadata)
        stored = producer.send(os.urandom(THRESHOLD + 10), recipients=[group], metadata=metadata)
        with pytest.raises(ValueError, match="metadata"):
            producer.send(b"x", recipients=[group], metadata={f"k{i}": "v" for i in range(MAX_METADATA_ITEMS + 1)})
        with pytest.raises(ValueError, match="metadata"):
            producer.send(b"x", recipients=[group], metadata={"k": "line\nbreak"})
    wait_until_deleted(job, 2, 60, settings=library)
    assert received.got(group, pointer.object_id) == (b"%PDF-1.7", metadata, True, "application/pdf")
    got = received.got(group, stored.object_id)
    assert got is not None and got[1] == metadata and not got[2]

    for original in (pointer, stored):  # the producer's signature, metadata changed afterwards
        body = original.encode()
        forged_body = json.dumps({**json.loads(body), "metadata": {"filename": "evil.exe"}}).encode()
        assert Pointer.model_validate_json(forged_body).metadata == {"filename": "evil.exe"}  # valid but for its signature
        broker.publish("claimcheck.pointers", "coordinator", forged_body, message_id=f"forged-{original.object_id}",
                       headers={"CC": [group], **keyring.sign(body)})
        reason = dead_letters.reason_for(f"forged-{original.object_id}")
        assert reason.startswith("forged:"), reason


def test_a_handler_that_raises_means_not_processed(
    library: Settings, recipients: Callable[..., list[str]], start_library_consumer: Any, ledger: Ledger,
    dead_letters: DeadLetters,
) -> None:
    flaky_group, broken_group = recipients("lib-flaky", "lib-broken")
    attempts: dict[str, int] = {}
    lock = threading.Lock()
    done = threading.Event()

    def flaky(message: Message) -> None:
        with lock:
            attempts[message.object_id] = attempts.get(message.object_id, 0) + 1
            if attempts[message.object_id] < 3:
                raise RuntimeError("downstream not ready")
        done.set()

    def broken(message: Message) -> None:
        raise RuntimeError("this handler always fails")

    start_library_consumer(flaky_group, flaky)
    start_library_consumer(broken_group, broken)
    job = unique("lib-raise")
    with Producer(library, job=job) as producer:
        pointer = producer.send(b"payload", recipients=[flaky_group, broken_group])
    reason = dead_letters.reason_for(pointer.object_id, timeout=120)
    assert reason.startswith("processing_failed:") and f"failed {DELIVERY_LIMIT} times" in reason, reason
    wait_until(done.is_set, 30, "the flaky handler succeeded on its third delivery")
    assert attempts[pointer.object_id] == 3
    status = ledger.object_status(pointer.object_id)
    assert status is not None and status.state == "pending" and status.confirmed_by == [flaky_group]


def test_arguments_a_pointer_cannot_carry_are_refused_before_anything_is_sent(library: Settings) -> None:
    with Producer(library) as producer:
        for kwargs, match in (({"recipients": []}, "recipients"), ({"recipients": ["Bad"]}, "recipients"),
                              ({"recipients": ["coordinator"]}, "reserved"),
                              ({"recipients": ["a"], "content_type": "no slash"}, "content_type"),
                              ({"recipients": ["a"], "job": "../etc"}, "job")):
            with pytest.raises(ValueError, match=match):
                producer.send(b"x", **kwargs)
        with pytest.raises(TypeError, match="not str"):
            producer.send("a path or text?", recipients=["a"])  # type: ignore[arg-type]


def test_a_payload_from_a_generator_is_streamed(library: Settings, recipients: Callable[..., list[str]],
                                                start_library_consumer: Any) -> None:
    (group,) = recipients("lib-gen")
    digests: dict[str, str] = {}

    def handle(message: Message) -> None:
        digest = hashlib.sha256()
        for chunk in iter(lambda: message.payload.read(65536), b""):
            digest.update(chunk)
        digests[message.object_id] = digest.hexdigest()

    start_library_consumer(group, handle)
    chunks = [os.urandom(300_000) for _ in range(10)]
    job = unique("lib-gen")
    with Producer(library, job=job) as producer:
        pointer = producer.send((chunk for chunk in chunks), recipients=[group])
    wait_until_deleted(job, 1, 60, settings=library)
    assert digests[pointer.object_id] == hashlib.sha256(b"".join(chunks)).hexdigest() == pointer.payload_sha256


def test_publish_pointer_of_an_inline_payload_is_counted_by_the_coordinator(
    library: Settings, recipients: Callable[..., list[str]], ledger: Ledger, keyring: LocalKeys, broker: Any,
) -> None:
    """The coordinator records an inline pointer like any other, with no bucket and no key."""
    (group,) = recipients("lib-ledger")
    with Producer(library) as producer:
        pointer = producer.send(b"inline", recipients=[group])
    wait_until(lambda: ledger.object_status(pointer.object_id) is not None, 30, "the coordinator recorded it")
    publish_pointer(broker, keyring.pointer, pointer)  # a duplicate changes nothing
    progress = ledger.job_progress(pointer.job)
    assert progress.published == 1 and progress.pending == 1
