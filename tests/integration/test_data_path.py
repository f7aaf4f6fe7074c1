"""The whole path, producer to delete, through real RabbitMQ, PostgreSQL and S3."""

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from claimcheck import store
from claimcheck.config import Settings
from claimcheck.consumer import RecipientConsumer
from claimcheck.coordinator_client import fetch_progress
from claimcheck.ledger import Ledger
from claimcheck.producer import RunRequest, publish_pointer
from claimcheck.producer import run as run_producer
from claimcheck.protocol import Pointer
from tests.integration.integration_helpers import unique, wait_until


@pytest.mark.parametrize(
    "replicas",
    [{"billing": 1}, {"billing": 2, "audit": 1}, {"billing": 1, "audit": 2, "search": 1}],
    ids=["1-group", "2-groups", "3-groups"],
)
def test_every_object_is_verified_by_every_group_then_deleted_once(
    replicas: dict[str, int],
    settings: Settings,
    s3: Any,
    coordinator_url: str,
    ledger: Ledger,
    db: Callable[..., list[tuple[Any, ...]]],
    recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer],
) -> None:
    names = recipients(*replicas)
    consumers = [start_consumer(name) for name, base in zip(names, replicas, strict=True) for _ in range(replicas[base])]
    job = unique("happy")

    report = run_producer(settings, RunRequest(job, count=8, size=50_000, recipients=names))

    assert report.count == 8
    progress = wait_until(
        lambda: (p := fetch_progress(coordinator_url, job)) and p["deleted"] == 8 and p, 60, "all 8 objects deleted"
    )
    assert progress["published"] == 8
    assert progress["acked"] == {name: 8 for name in sorted(names)}
    assert progress["pending"] == 0
    assert store.list_keys(s3, settings.s3_bucket, f"{job}/") == []
    deletions = dict(db("SELECT object_id, count(*) FROM deletions WHERE object_id = ANY(%s) GROUP BY 1", report.object_ids))
    assert deletions == {object_id: 1 for object_id in report.object_ids}
    verified = sum(consumer.stats.verified_by_job.get(job, 0) for consumer in consumers)
    assert verified >= 8 * len(names)


def test_object_stays_until_the_last_recipient_confirms(
    settings: Settings,
    coordinator_url: str,
    recipients: Callable[..., list[str]],
    start_consumer: Callable[..., RecipientConsumer],
    stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool],
    broker: Any,
    ledger: Ledger,
) -> None:
    fast, slow = recipients("fast", "slow")
    start_consumer(fast)
    pointer = stored([fast, slow])
    publish_pointer(broker, settings.pointer_signer(), pointer)

    wait_until(lambda: ledger.job_progress(pointer.job).acked.get(fast) == 1, 30, "the first recipient's ACK")
    assert object_exists(pointer), "deleted before every recipient confirmed"
    assert ledger.job_progress(pointer.job).deleted == 0

    start_consumer(slow)
    wait_until(lambda: ledger.job_progress(pointer.job).deleted == 1, 30, "deletion after the last ACK")
    assert not object_exists(pointer)


def test_cancelling_a_job_deletes_its_pending_objects_once(
    settings: Settings,
    coordinator_url: str,
    recipients: Callable[..., list[str]],
    stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool],
    broker: Any,
    ledger: Ledger,
    db: Callable[..., list[tuple[Any, ...]]],
) -> None:
    names = recipients("billing", "audit")
    job = unique("cancel")
    pointers = [stored(names, job=job) for _ in range(3)]
    for pointer in pointers:
        publish_pointer(broker, settings.pointer_signer(), pointer)
    wait_until(lambda: ledger.job_progress(job).pending == 3, 30, "three pending objects")

    def cancel(token: str | None = settings.sent_control_token()) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{coordinator_url}/jobs/{job}", method="DELETE", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            return {"status": exc.code}

    # Without the control token, or with a wrong one: 401, and nothing changes.
    assert cancel(None) == {"status": 401}
    assert cancel("not-the-token") == {"status": 401}
    assert ledger.job_progress(job).pending == 3
    assert cancel() == {"job": job, "cancelled": 3}
    wait_until(lambda: not any(object_exists(p) for p in pointers), 30, "the cancelled objects deleted")
    wait_until(lambda: ledger.job_progress(job).pending == 0, 30, "no pending objects left")
    progress = ledger.job_progress(job)
    assert (progress.cancelled, progress.deleted) == (3, 0), "cancelled objects counted as confirmed deletions"
    assert cancel() == {"job": job, "cancelled": 0}

    # A pointer of the cancelled run that arrives afterwards is settled as cancelled, not left pending.
    late = stored(names, job=job)
    publish_pointer(broker, settings.pointer_signer(), late)
    wait_until(lambda: not object_exists(late), 30, "the late pointer's object deleted as cancelled")
    wait_until(lambda: ledger.job_progress(job).cancelled == 4, 30, "the late object recorded as cancelled")
    progress = ledger.job_progress(job)
    assert (progress.published, progress.pending, progress.deleted) == (4, 0, 0)
    everything = [p.object_id for p in [*pointers, late]]
    assert db("SELECT count(*) FROM deletions WHERE object_id = ANY(%s)", everything) == [(4,)]
