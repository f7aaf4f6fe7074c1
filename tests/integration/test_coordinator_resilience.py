"""The coordinator keeps its promises when parts of it fail or are pushed: the deleter survives any
error and says so on /readyz, a flood of HTTP requests cannot take the ledger from the consuming
path, leases outlast the S3 client's retries, and a pointer redelivered after its object was
deleted is settled quietly. Each test runs against the real broker, PostgreSQL and S3."""

import http.client
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2

from claimcheck import store, topology
from claimcheck.config import Settings
from claimcheck.consumer import RecipientConsumer
from claimcheck.coordinator import HTTP_LEDGER_CONNECTIONS, Coordinator
from claimcheck.httpapi import MAX_CONCURRENT_REQUESTS
from claimcheck.ledger import Ledger
from claimcheck.producer import publish_pointer
from claimcheck.protocol import Pointer, object_key
from claimcheck.publisher import BrokerSession
from tests.integration.integration_helpers import DeadLetters, LocalKeys, Running, ack_for, free_port, unique, wait_until
from tests.testkit import counted, management, reachable, temporary_database, temporary_vhost


def readiness(coordinator: Coordinator) -> str | None:
    """What the coordinator's /readyz would say (None: ready)."""
    for method, pattern, handler in coordinator._routes():  # noqa: SLF001 - the endpoint's own route table
        if method == "GET" and pattern.match("/readyz"):
            status, document = handler(pattern.match("/readyz"))  # type: ignore[arg-type]
            return None if status == 200 else str(document["reason"])
    raise AssertionError("no /readyz route")


def execute(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def test_the_deleter_survives_any_error_and_reports_it_until_it_recovers(settings: Settings, s3: Any) -> None:
    with temporary_database(settings.database_url) as dsn:
        coordinator = Coordinator(settings.model_copy(update={"database_url": dsn}))
        job, object_id = unique("deleter"), uuid.uuid4().hex
        key = object_key(job, object_id)
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"due for deletion")
        execute(dsn, """INSERT INTO objects (object_id, job, bucket, key, recipients, payload_sha256, state, decided_at)
                        VALUES (%s, %s, %s, %s, '{billing}', %s, 'deleting', now())""",
                object_id, job, settings.s3_bucket, key, "a" * 64)
        # A failure no earlier deleter caught (not a lost connection): the table it records into is gone.
        execute(dsn, "ALTER TABLE deletions RENAME TO deletions_away")
        errors = "claimcheck_coordinator_deleter_errors_total"
        errors_before = counted(errors)
        stop = threading.Event()
        deleter = threading.Thread(target=coordinator._delete_loop, args=(stop,), daemon=True)  # noqa: SLF001
        coordinator._deleter = deleter  # noqa: SLF001 - what run() does
        deleter.start()
        try:
            reason = wait_until(lambda: (r := readiness(coordinator)) and r.startswith("deletions failing") and r, 30,
                                "/readyz to report the failing deleter")
            assert "deletions" in reason
            wait_until(lambda: counted(errors) >= errors_before + 2, 30, "the failure retried")
            assert deleter.is_alive(), "the deleter thread died"

            execute(dsn, "ALTER TABLE deletions_away RENAME TO deletions")
            wait_until(lambda: execute(dsn, "SELECT state FROM objects WHERE object_id = %s", object_id) == [("deleted",)],
                       60, "the deletion to complete once the ledger works again")
            assert not store.list_keys(s3, settings.s3_bucket, key)
            assert execute(dsn, "SELECT count(*) FROM deletions WHERE object_id = %s", object_id) == [(1,)]
            assert not (readiness(coordinator) or "").startswith("deletions failing")
        finally:
            stop.set()
            deleter.join(timeout=30)


def test_a_lease_is_renewed_while_its_owner_is_still_deleting(settings: Settings) -> None:
    """An S3 delete that hangs far longer than the lease (a silent S3 endpoint): the lease is
    renewed all along, so no second coordinator takes the object over and deletes it too."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    with temporary_database(settings.database_url) as dsn:
        coordinator = Coordinator(settings.model_copy(update={"database_url": dsn, "s3_endpoint_url": endpoint}),
                                  lease_seconds=1.5)
        object_id = uuid.uuid4().hex
        execute(dsn, """INSERT INTO objects (object_id, job, bucket, key, recipients, payload_sha256, state, decided_at)
                        VALUES (%s, 'lease', %s, %s, '{billing}', %s, 'deleting', now())""",
                object_id, settings.s3_bucket, object_key("lease", object_id), "a" * 64)
        stop = threading.Event()
        threading.Thread(target=coordinator._delete_loop, args=(stop,), daemon=True).start()  # noqa: SLF001
        try:
            wait_until(lambda: execute(dsn, "SELECT lease_owner FROM objects WHERE object_id = %s", object_id)
                       == [(coordinator.owner,)], 30, "the deleter leasing the object")
            other = Ledger(dsn)
            try:
                # Three lease periods later the first owner still holds it, and nobody else can claim it.
                deadline = time.monotonic() + 4.5
                while time.monotonic() < deadline:
                    assert other.claim_deletions("another-coordinator", 1.5) == [], "the lease expired mid-delete"
                    time.sleep(0.25)
                owner, renewed = execute(dsn, "SELECT lease_owner, lease_until > now() FROM objects WHERE object_id = %s",
                                         object_id)[0]
                assert (owner, renewed) == (coordinator.owner, True)
            finally:
                other.close()
        finally:
            stop.set()
            silent.close()


@contextmanager
def isolated_coordinator(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """A coordinator with its own vhost and ledger database, serving HTTP; yields its settings and URL."""
    with temporary_vhost(settings.amqp_url) as url, temporary_database(settings.database_url) as dsn:
        own = settings.model_copy(update={"amqp_url": url, "database_url": dsn})
        port = free_port()
        running = Running("coordinator", lambda stop: Coordinator(own).run(stop, port))
        try:
            wait_until(lambda: reachable(f"http://127.0.0.1:{port}", port), 30, "the coordinator's HTTP endpoint")
            yield own, f"http://127.0.0.1:{port}"
        finally:
            running.stop()


def test_a_flood_of_requests_cannot_take_the_ledger_from_the_consuming_path(
    settings: Settings, s3: Any, keyring: LocalKeys, stored: Callable[..., Pointer],
    object_exists: Callable[[Pointer], bool],
) -> None:
    with isolated_coordinator(settings) as (own, url):
        port = int(url.rsplit(":", 1)[1])
        database = own.database_url.rsplit("/", 1)[1]
        # Silent connections that hold a request slot until their socket times out.
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONCURRENT_REQUESTS // 2)]
        answers: dict[int, int] = {}
        peak = [0]
        lock = threading.Lock()
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                try:
                    connection.request("GET", f"/jobs/{unique('flood')}")
                    status = connection.getresponse().status
                except OSError:
                    status = 0
                finally:
                    connection.close()
                with lock:
                    answers[status] = answers.get(status, 0) + 1

        def watch() -> None:
            while not stop.is_set():
                count = execute(settings.database_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                database)[0][0]
                peak[0] = max(peak[0], count)
                stop.wait(0.05)

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(48)] + [threading.Thread(target=watch)]
        for thread in threads:
            thread.start()
        try:
            # Meanwhile the consuming path counts ACKs and the deleter deletes, on ledger connections of their own.
            (billing,) = [unique("billing")]
            broker = BrokerSession(own.amqp_url, lambda channel: topology.declare(channel, [billing]))
            try:
                pointer = stored([billing])
                publish_pointer(broker, keyring.pointer, pointer)
                body = ack_for(pointer, billing).encode()
                broker.publish(topology.ACK_EXCHANGE, topology.ACK_ROUTING_KEY, body, message_id="flood-ack",
                               headers=keyring.ack(billing).sign(body))
            finally:
                broker.close()
            wait_until(lambda: not object_exists(pointer), 60, "the object deleted during the flood")
            wait_until(lambda: sum(answers.values()) >= 200, 60, "the flood to be answered")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            for connection in silent:
                connection.close()
        assert answers.get(200, 0) > 0, answers
        assert set(answers) <= {200, 503}, f"requests failed otherwise than with 503: {answers}"
        # consume + deleter + sweeper + at most the HTTP pool; a connection per request thread before.
        assert peak[0] <= 3 + HTTP_LEDGER_CONNECTIONS, f"{peak[0]} ledger connections during the flood"


def test_a_pointer_redelivered_after_its_object_was_deleted_is_settled_quietly(
    settings: Settings, coordinator_url: str, recipients: Callable[..., list[str]], stored: Callable[..., Pointer],
    broker: BrokerSession, keyring: LocalKeys, ledger: Ledger, dead_letters: DeadLetters,
) -> None:
    (billing,) = recipients("billing")
    consumer = RecipientConsumer(settings.model_copy(update={"coordinator_url": coordinator_url}), billing)
    running = Running("consumer", consumer.run)
    try:
        pointer = stored([billing])
        publish_pointer(broker, keyring.pointer, pointer)
        wait_until(lambda: ledger.job_progress(pointer.job).deleted == 1, 30, "the object confirmed and deleted")
        def settled() -> float:
            return counted("claimcheck_consumer_messages_total", recipient=billing, result="already_settled")

        before = settled()
        # What a lost delivery-ack causes: the same pointer delivered to billing again.
        body = pointer.encode()
        broker.publish(topology.POINTER_EXCHANGE, billing, body, message_id=f"again-{pointer.object_id}",
                       headers=keyring.sign(body))
        wait_until(lambda: settled() == before + 1, 30, "the redelivered pointer settled quietly")
        dead_letters.drain()
        assert f"again-{pointer.object_id}" not in dead_letters.seen
        assert consumer.stats.dead_lettered == 0
    finally:
        running.stop()


def test_a_batch_whose_connection_died_while_it_was_applied_is_dead_lettered_once(
    settings: Settings, stored: Callable[..., Pointer], keyring: LocalKeys,
) -> None:
    """The ledger transaction runs on the applier thread while the connection's thread reads on.
    If the connection dies meanwhile, the broker redelivers the batch and its second application
    settles it; the first, stale one must neither count it nor dead-letter it a second time."""
    with temporary_vhost(settings.amqp_url) as url, temporary_database(settings.database_url) as dsn:
        own = settings.model_copy(update={"amqp_url": url, "database_url": dsn})
        vhost = url.rsplit("/", 1)[1]
        (billing,) = [unique("billing")]
        publisher = BrokerSession(url, lambda channel: topology.declare(channel, [billing]))
        running = Running("coordinator", Coordinator(own).run)
        holder = psycopg2.connect(dsn)
        try:
            pointer = stored([billing])
            publish_pointer(publisher, keyring.pointer, pointer)
            wait_until(lambda: execute(dsn, "SELECT state FROM objects WHERE object_id = %s", pointer.object_id)
                       == [("pending",)], 30, "the pointer recorded")

            def consuming_connection() -> str | None:
                # A consumer listed before its channel's details reached the node answering has
                # ``channel_details: []``: not known yet.
                consumers = management("GET", f"/consumers/{vhost}") or []
                names = [details["connection_name"] for consumer in consumers
                         if consumer.get("queue", {}).get("name") == topology.ack_queue(0)
                         and isinstance(details := consumer.get("channel_details"), dict)
                         and "connection_name" in details]
                return names[0] if names else None

            first = wait_until(consuming_connection, 30, "the coordinator consuming its ACK queue")
            # Hold the object's row, so the coordinator's transaction for the next ACK waits on it.
            with holder.cursor() as cursor:
                cursor.execute("SELECT 1 FROM objects WHERE object_id = %s FOR UPDATE", (pointer.object_id,))
            wrong = ack_for(pointer, billing, sha256="b" * 64).encode()
            publisher.publish(topology.ACK_EXCHANGE, topology.ack_route(pointer.object_id, 1), wrong,
                              message_id="stale-batch", headers=keyring.ack(billing).sign(wrong))
            wait_until(lambda: execute(settings.database_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                       "AND wait_event_type = 'Lock'", urllib.parse.urlsplit(dsn).path.lstrip("/")) == [(1,)], 30,
                       "the coordinator's transaction waiting for the row")
            management("DELETE", f"/connections/{urllib.parse.quote(first, safe='')}")
            wait_until(lambda: (name := consuming_connection()) is not None and name != first, 60,
                       "the coordinator consuming again on a new connection (the ACK redelivered)")
            holder.rollback()  # both applications of the wrong ACK go ahead, the stale one first
            # A marker behind it: once the object is deleted, every earlier delivery was settled.
            right = ack_for(pointer, billing).encode()
            publisher.publish(topology.ACK_EXCHANGE, topology.ack_route(pointer.object_id, 1), right,
                              message_id="marker", headers=keyring.ack(billing).sign(right))
            wait_until(lambda: execute(dsn, "SELECT state FROM objects WHERE object_id = %s", pointer.object_id)
                       == [("deleted",)], 60, "the object confirmed and deleted")
            dead_letters = DeadLetters(url)
            dead_letters.drain()
            times = dead_letters.times["stale-batch"]
            assert times == 1, f"the wrong ACK was dead-lettered {times} times"
            reason = dead_letters.reasons[("stale-batch", topology.ack_queue(0))]
            assert reason.startswith("mismatch: "), reason
        finally:
            holder.close()
            running.stop()
            publisher.close()
