"""Least privilege against the real local stack: each role's own credentials (the broker users,
S3 identities and PostgreSQL roles `make up` provisions, claimcheck/localstack/accounts.py) cannot do what
another role does, and a rotated pointer key rolls through a running system without a loss."""

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pika
import pika.exceptions
import psycopg2
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.consumer import RecipientConsumer
from claimcheck.coordinator import Coordinator
from claimcheck.ledger import Ledger
from claimcheck.localstack import accounts
from claimcheck.producer import RunRequest, publish_pointer
from claimcheck.producer import run as run_producer
from claimcheck.protocol import Pointer
from claimcheck.provisioning import parse_users, provision
from claimcheck.publisher import BrokerSession
from claimcheck.signing import new_pointer_key
from tests.integration.integration_helpers import DeadLetters, LocalKeys, Running, ack_for, free_port, unique, wait_until
from tests.testkit import reachable, temporary_vhost


@pytest.fixture(scope="module")
def groups(settings: Settings) -> Iterator[tuple[str, str]]:
    """Two recipient groups with their own broker users, provisioned like `make up` does."""
    billing, audit = unique("billing"), unique("audit")
    provision(settings.amqp_url, settings.management_url, [billing, audit],
              parse_users(accounts.broker_users([billing, audit])))
    yield billing, audit
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    for name in (billing, audit):
        channel.queue_delete(topology.recipient_queue(name))
    connection.close()


def as_role(settings: Settings, role: str, group: str | None = None) -> Settings:
    """``settings`` with a role's local credentials."""
    env = accounts.role_env(role, group)
    return settings.model_copy(update={key.removeprefix("CLAIMCHECK_").lower(): value for key, value in env.items()})


def publish(exchange: str, routing_key: str) -> Callable[[Any], object]:
    """A confirmed publish, so that a refusal arrives before the call returns."""
    def action(channel: Any) -> None:
        channel.confirm_delivery()
        channel.basic_publish(exchange, routing_key, b"{}")
    return action


def broker_refuses(url: str, action: Callable[[Any], object]) -> str:
    """Run ``action(channel)`` as the user of ``url``; return the broker's 403 reason (fails if it was allowed)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            action(connection.channel())
        assert refused.value.reply_code == 403, refused.value
        return str(refused.value.reply_text)
    finally:
        if connection.is_open:
            connection.close()


def s3_as(role: str) -> Any:
    account, _ = accounts.S3[role]
    return boto3.client("s3", endpoint_url=Settings().s3_endpoint_url, aws_access_key_id=account.user,
                        aws_secret_access_key=account.password, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def s3_refuses(call: Callable[[], object]) -> None:
    with pytest.raises(ClientError) as refused:
        call()
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "403"), refused.value.response


def test_the_producer_may_only_publish_pointers(settings: Settings, groups: tuple[str, str],
                                                stored: Callable[..., Pointer], s3: Any) -> None:
    billing, _ = groups
    url = as_role(settings, "producer").amqp_url
    broker_refuses(url, lambda channel: channel.basic_get(topology.recipient_queue(billing)))
    broker_refuses(url, publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY))
    broker_refuses(url, lambda channel: channel.queue_declare(unique("mine"), durable=True))
    pointer = stored([billing])
    s3_refuses(lambda: s3_as("producer").get_object(Bucket=settings.s3_bucket, Key=pointer.key))
    s3_refuses(lambda: s3_as("producer").list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"{pointer.job}/"))


def test_a_recipient_group_cannot_touch_another_groups_work(
    settings: Settings, groups: tuple[str, str], stored: Callable[..., Pointer], coordinator_url: str,
    keyring: LocalKeys, broker: BrokerSession, dead_letters: DeadLetters, ledger: Ledger, s3: Any,
) -> None:
    billing, audit = groups
    audit_settings = as_role(settings, "recipient", audit)
    # Its broker user: not billing's queue, not the pointer exchange.
    broker_refuses(audit_settings.amqp_url, lambda channel: channel.basic_get(topology.recipient_queue(billing)))
    broker_refuses(audit_settings.amqp_url,
                   publish(topology.POINTER_EXCHANGE, billing))
    # Its key: an ACK it sends for billing, through its own (permitted) connection, never counts.
    pointer = stored([billing, audit])
    publish_pointer(broker, keyring.pointer, pointer)
    wait_until(lambda: ledger.job_progress(pointer.job).pending == 1, 30, "the pointer in the ledger")
    body = ack_for(pointer, billing).encode()
    session = BrokerSession(audit_settings.amqp_url, lambda channel: topology.declare_for_recipient(channel, audit))
    try:
        session.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, body, message_id=f"as-billing-{pointer.object_id}",
                        headers=audit_settings.ack_signer(audit).sign(body))
    finally:
        session.close()
    reason = dead_letters.reason_for(f"as-billing-{pointer.object_id}")
    assert reason.startswith(f"forged: ACK for recipient '{billing}' signed with group '{audit}''s key"), reason
    assert ledger.job_progress(pointer.job).acked == {}
    # Its S3 identity: read only.
    consumer_s3 = s3_as("recipient")
    assert consumer_s3.get_object(Bucket=settings.s3_bucket, Key=pointer.key)["Body"].read()
    s3_refuses(lambda: consumer_s3.put_object(Bucket=settings.s3_bucket, Key=pointer.key, Body=b"overwritten"))
    refused = consumer_s3.delete_objects(Bucket=settings.s3_bucket, Delete={"Objects": [{"Key": pointer.key}]})
    assert [error["Code"] for error in refused.get("Errors", [])] == ["AccessDenied"]
    s3_refuses(lambda: consumer_s3.delete_object(Bucket=settings.s3_bucket, Key=pointer.key))
    assert s3.head_object(Bucket=settings.s3_bucket, Key=pointer.key)


def test_the_coordinator_may_not_confirm_or_read_a_groups_queue(settings: Settings, groups: tuple[str, str]) -> None:
    billing, _ = groups
    url = as_role(settings, "coordinator").amqp_url
    broker_refuses(url, publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY))
    broker_refuses(url, lambda channel: channel.basic_get(topology.recipient_queue(billing)))


def test_the_status_role_reads_the_ledger_and_writes_nothing(settings: Settings, migrated: None) -> None:
    connection = psycopg2.connect(accounts.role_env("reader")["CLAIMCHECK_DATABASE_URL"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM objects")
            assert cursor.fetchone() is not None
        connection.rollback()
        for statement in ("UPDATE objects SET state = 'deleting' WHERE false", "SET default_transaction_read_only = off; "
                          "UPDATE objects SET state = 'deleting' WHERE false", "DELETE FROM deletions WHERE false"):
            with pytest.raises(psycopg2.Error), connection.cursor() as cursor:
                cursor.execute(statement)
            connection.rollback()
    finally:
        connection.close()


def test_a_new_pointer_key_rolls_through_a_running_system_with_traffic_in_flight(
    settings: Settings, s3: Any, ledger: Ledger,
) -> None:
    """Verifiers learn the new key first, then producers sign with it, then the old one is dropped;
    each step restarts the components it concerns while pointers flow. Nothing is dead-lettered.
    In a vhost of its own, so that no coordinator with other keys shares its queues."""
    with temporary_vhost(settings.amqp_url) as url:
        rotate_pointer_key(settings.model_copy(update={"amqp_url": url}), ledger)


def rotate_pointer_key(settings: Settings, ledger: Ledger) -> None:
    group = unique("billing")
    old_signing, old_verify = new_pointer_key(f"old{uuid.uuid4().hex[:6]}")
    new_signing, new_verify = new_pointer_key(f"new{uuid.uuid4().hex[:6]}")
    job = unique("rotation")
    port = free_port()

    def components(verify_keys: str) -> list[Running]:
        keys = settings.model_copy(update={"pointer_verify_keys": verify_keys, "coordinator_url": f"http://127.0.0.1:{port}"})
        coordinator = Running("coordinator", lambda stop: Coordinator(keys).run(stop, port))
        consumer = RecipientConsumer(keys, group)
        running = [coordinator, Running("consumer", consumer.run)]
        wait_until(lambda: reachable(f"http://127.0.0.1:{port}", port) and consumer.consuming.is_set(), 30,
                   "coordinator and consumer up")
        return running

    def produce(signing_key: str, count: int) -> threading.Thread:
        producer_settings = settings.model_copy(update={"pointer_signing_key": signing_key})
        thread = threading.Thread(target=run_producer, args=(producer_settings, RunRequest(job, count, 2_000, [group],
                                                                                            rate=20)))
        thread.start()
        return thread

    def published() -> int:
        return ledger.job_progress(job).published

    running = components(old_verify)
    first = produce(old_signing, 60)
    wait_until(lambda: published() >= 10, 30, "traffic signed with the old key")
    for item in running:  # step 1: verifiers learn the new key, the producer still signs with the old
        item.stop()
    running = components(f"{new_verify},{old_verify}")
    first.join(timeout=60)
    second = produce(new_signing, 60)  # step 2: the producer switches to the new key
    wait_until(lambda: published() >= 90, 60, "traffic signed with the new key")
    second.join(timeout=60)
    wait_until(lambda: ledger.job_progress(job).deleted == 120, 60, "every object of both keys deleted")
    for item in running:  # step 3: the old key is dropped
        item.stop()
    running = components(new_verify)
    for item in running:
        item.stop()
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        parked = connection.channel().queue_declare(topology.DEAD_LETTER_QUEUE, passive=True).method.message_count
    finally:
        connection.close()
    assert parked == 0, f"{parked} messages dead-lettered during the rotation"
    progress = ledger.job_progress(job)
    assert (progress.published, progress.deleted, progress.pending) == (120, 120, 0)
