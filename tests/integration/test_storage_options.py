"""Storage options against the local S3 server (SeaweedFS): SSE-S3, SSE-C, SSE-KMS, tags, a key prefix.

Each is tried for real; what the server cannot do is skipped with the server's own answer.
"""

import base64
import os
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from claimcheck import Message, Producer, Settings, StorageOptions, wait_until_deleted
from claimcheck.store import MANAGED_TAG, StorageConfigError
from claimcheck.topology import DELIVERY_LIMIT
from tests.integration.integration_helpers import DeadLetters, unique, wait_until

SIZE = 200_000  # above the inline threshold: stored in S3


@pytest.fixture
def receive(start_library_consumer: Callable[..., Any]) -> Callable[..., dict[str, bytes]]:
    """Start a Consumer of ``group`` collecting payloads by object id."""

    def start(group: str, settings: Settings | None = None) -> dict[str, bytes]:
        got: dict[str, bytes] = {}

        def handle(message: Message) -> None:
            got[message.object_id] = message.read()

        start_library_consumer(group, handle, settings)
        return got

    return start


def _customer_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def test_sse_s3_objects_are_encrypted_at_rest_and_received(
    library: Settings, recipients: Callable[..., list[str]], receive: Any, s3: Any,
) -> None:
    (group,) = recipients("sse-s3")
    job = unique("sse-s3")
    data = os.urandom(SIZE)
    with Producer(library, job=job, storage=StorageOptions(sse="AES256")) as producer:
        pointer = producer.send(data, recipients=[group])
    assert s3.head_object(Bucket=pointer.bucket, Key=pointer.key)["ServerSideEncryption"] == "AES256"
    got = receive(group)
    wait_until_deleted(job, 1, 60, settings=library)
    assert got[pointer.object_id] == data


def test_sse_c_needs_the_customer_key_to_read_and_a_consumer_without_it_never_acks(
    library: Settings, recipients: Callable[..., list[str]], receive: Any, s3: Any, dead_letters: DeadLetters,
) -> None:
    keyed, keyless = recipients("sse-c", "sse-c-nokey")
    old, new = _customer_key(), _customer_key()
    producing = library.model_copy(update={"s3_sse": "SSE-C", "s3_sse_customer_keys": new})
    job = unique("sse-c")
    data = os.urandom(9 * 1024 * 1024)  # multipart (above 8 MiB): every part carries the key
    with Producer(producing, job=job) as producer:
        pointer = producer.send(data, recipients=[keyed, keyless])
    with pytest.raises(ClientError):  # without its key, S3 refuses to read the object
        s3.get_object(Bucket=pointer.bucket, Key=pointer.key)
    got = receive(keyed, library.model_copy(update={"s3_sse_customer_keys": f"{old},{new}"}))  # mid-rotation
    receive(keyless, library.model_copy(update={"s3_sse_customer_keys": old}))
    reason = dead_letters.reason_for(pointer.object_id, timeout=120)
    assert reason.startswith("processing_failed:") and f"failed {DELIVERY_LIMIT} times" in reason
    assert "no SSE-C key with MD5" in reason, reason
    wait_until(lambda: pointer.object_id in got, 30, "the consumer holding the key verified it")
    assert got[pointer.object_id] == data


def test_sse_kms_is_tried_and_skipped_where_the_server_has_no_kms(
    library: Settings, recipients: Callable[..., list[str]], receive: Any, s3: Any,
) -> None:
    (group,) = recipients("sse-kms")
    job = unique("sse-kms")
    data = os.urandom(SIZE)
    with Producer(library, job=job, storage=StorageOptions(sse="aws:kms", kms_key_id="claimcheck-test")) as producer:
        try:
            pointer = producer.send(data, recipients=[group])
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code not in ("InternalError", "NotImplemented"):
                raise
            pytest.skip(f"the S3 server refused SSE-KMS ({code}: {exc.response['Error'].get('Message', '')}); "
                        "SeaweedFS as scripts/stack.sh starts it has no KMS provider configured "
                        "(its log: 'handleSSEKMSEncryption: encryption failed: KMS is not configured')")
    assert s3.head_object(Bucket=pointer.bucket, Key=pointer.key)["ServerSideEncryption"] == "aws:kms"
    got = receive(group)
    wait_until_deleted(job, 1, 60, settings=library)
    assert got[pointer.object_id] == data


def test_tagged_objects_carry_the_lifecycle_tags_and_the_users(
    library: Settings, recipients: Callable[..., list[str]], receive: Any, s3: Any,
) -> None:
    (group,) = recipients("tags")
    job = unique("tags")
    tagging = library.model_copy(update={"s3_tag_objects": True, "s3_tags": "team=payments,retention=short"})
    with Producer(tagging, job=job) as producer:
        pointer = producer.send(os.urandom(SIZE), recipients=[group])
    tags = {tag["Key"]: tag["Value"] for tag in s3.get_object_tagging(Bucket=pointer.bucket, Key=pointer.key)["TagSet"]}
    assert tags == {MANAGED_TAG[0]: MANAGED_TAG[1], "claimcheck-job": job, "team": "payments", "retention": "short"}
    receive(group)
    wait_until_deleted(job, 1, 60, settings=library)


def test_storage_options_that_cannot_work_are_refused_at_once(library: Settings) -> None:
    for kwargs, match in (({"sse": "rot13"}, "unknown server-side encryption"), ({"sse": "SSE-C"}, "customer key"),
                          ({"kms_key_id": "k"}, "aws:kms"), ({"tags": {str(n): "v" for n in range(9)}}, "at most 8")):
        with pytest.raises(StorageConfigError, match=match):
            StorageOptions(**kwargs)
    with pytest.raises(StorageConfigError, match="CLAIMCHECK_S3_SSE_CUSTOMER_KEYS"):
        Producer(library.model_copy(update={"s3_sse": "SSE-C", "s3_sse_customer_keys": "short"}))


def test_a_key_prefix_places_objects_under_it_and_consumers_configured_alike_verify_them(
    library: Settings, recipients: Callable[..., list[str]], receive: Any, s3: Any, dead_letters: DeadLetters,
) -> None:
    """Producer and consumer with the prefix; a consumer configured without it refuses the pointer
    as foreign (the prefix is a deployment setting, like the bucket)."""
    prefixed, unprefixed = recipients("prefix", "noprefix")
    config = library.model_copy(update={"s3_key_prefix": "tenant-a/claims/"})
    job = unique("prefix")
    data = os.urandom(SIZE)
    with Producer(config, job=job) as producer:
        pointer = producer.send(data, recipients=[prefixed, unprefixed])
    try:
        assert pointer.key is not None and pointer.key.startswith(f"tenant-a/claims/{job}/")
        got = receive(prefixed, config)
        receive(unprefixed)
        wait_until(lambda: pointer.object_id in got, 30, "the prefixed consumer verified it")
        assert got[pointer.object_id] == data
        reason = dead_letters.reason_for(pointer.object_id)
        assert reason.startswith("foreign_bucket:") and "key prefix" in reason, reason
    finally:
        s3.delete_object(Bucket=pointer.bucket, Key=pointer.key)
