"""Coordinator ACK throughput from pre-filled queues, against plain upserts into PostgreSQL.

Filling: the product itself makes the messages. With no coordinator running, ``claimcheck
producer`` publishes N small payloads for two recipient groups and one consumer replica per group
verifies each and publishes its signed business ACK; the coordinator's two queues then hold N
pointers and 2N ACKs. The benchmark takes them off the queues once and keeps them.

Each repetition: a fresh, migrated ledger database; the kept messages are put back into the
coordinator's queues unchanged (same bodies and headers, so signatures verify); then one
``claimcheck coordinator`` process starts and the drain is timed from the ledger's own
timestamps: from the first object row written (``objects.first_seen_at``) to the last ACK
counted (``acks.acked_at``). Baseline, in the same database: the same number of single-row
``INSERT ... ON CONFLICT DO UPDATE`` upserts into a copy of the ``acks`` table, each its own
transaction, from one connection.

With ``shards`` > 1 everything above runs with that many coordinator shards (docs/scaling.md):
the fill's producer and consumers route each object to its shard's queues, and the drain starts
one coordinator process per shard, all writing the one ledger.
"""

import json
import logging
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pika
import psycopg2

from bench import profiling
from bench.stack import BenchEnv, CpuMeter, delete_prefix
from claimcheck import topology
from claimcheck.ledger import single_row

log = logging.getLogger("bench")

class CoordinatorBench:
    def __init__(self, env: BenchEnv, objects: int, shards: int = 1) -> None:
        self.env = env
        self.objects = objects
        self.shards = shards
        self.groups = [f"{env.run_id}-a1", f"{env.run_id}-a2"]
        self.amqp_url = env.vhost("coord" if shards == 1 else f"coord{shards}", self.groups, shards)
        self.pointer_queues = {topology.coordinator_pointer_queue(shard) for shard in range(shards)}
        self.messages: dict[str, list[tuple[Any, bytes]]] = {
            queue: [] for queue, _, _ in topology.coordinator_queues(range(shards))}
        self.fill_seconds = 0.0

    def _env(self, database_url: str | None = None, **extra: str) -> dict[str, str]:
        env = self.env.env(self.amqp_url, database_url)
        env.update(CLAIMCHECK_COORDINATOR_SHARDS=str(self.shards), **extra)
        return env

    def _channel(self) -> tuple[Any, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        return connection, connection.channel()

    def _depth(self, channel: Any, queue: str) -> int:
        return int(channel.queue_declare(queue, passive=True).method.message_count)

    def harvest(self) -> None:
        """Let the product fill the coordinator's queues, then keep their messages."""
        started = time.monotonic()
        child_env = self._env()
        def start_consumers() -> list[Any]:
            return [self.env.claimcheck(f"coord-fill-consumer-{group}", ["consumer", "--recipient", group], child_env)
                    for group in self.groups]

        consumers = start_consumers()
        job = f"{self.env.run_id}-coordfill"
        producer = self.env.claimcheck("coord-fill-producer", [
            "producer", "--job", job, "--count", str(self.objects), "--size", "1KiB",
            "--recipients", ",".join(self.groups), "--parallelism", "8", "--no-verify"], child_env)
        finished = producer.wait(600)
        if finished.returncode != 0:
            raise RuntimeError(f"fill producer failed: {finished.output[-2000:]}")
        connection, channel = self._channel()
        # Every pointer ACKed: the groups' queues are empty once their consumers stopped (a
        # consumer settles a pointer only after its ACK was confirmed; stopping requeues the rest).
        group_queues = [topology.recipient_queue(group) for group in self.groups]
        deadline = time.monotonic() + 600
        while True:
            while any(self._depth(channel, queue) for queue in group_queues):
                if time.monotonic() > deadline:
                    raise TimeoutError("consumers did not ACK every fill object")
                time.sleep(0.2)
            for consumer in consumers:
                consumer.stop()
            if not any(self._depth(channel, queue) for queue in group_queues):
                break
            consumers = start_consumers()
        for queue in self.messages:
            expected = self._depth(channel, queue)
            channel.basic_qos(prefetch_count=500)
            kept = self.messages[queue]
            for method, properties, body in channel.consume(queue, inactivity_timeout=5):
                if method is None:
                    break
                kept.append((properties, body))
                if len(kept) % 500 == 0 or len(kept) >= expected:
                    channel.basic_ack(method.delivery_tag, multiple=True)
                if len(kept) >= expected:
                    break
            channel.cancel()
        connection.close()
        delete_prefix(self.env.bucket, f"{job}/")
        self.fill_seconds = time.monotonic() - started
        pointer_side = sum(len(self.messages[queue]) for queue in self.pointer_queues)
        log.info("coordinator bench (%d shards): kept %d pointer-queue and %d ACK-queue messages in %.1f s", self.shards,
                 pointer_side, sum(map(len, self.messages.values())) - pointer_side, self.fill_seconds)

    def _refill(self) -> None:
        connection, channel = self._channel()
        for queue, kept in self.messages.items():
            for properties, body in kept:
                channel.basic_publish("", queue, body, properties)
        deadline = time.monotonic() + 120
        while any(self._depth(channel, queue) < len(kept) for queue, kept in self.messages.items()):
            if time.monotonic() > deadline:
                raise TimeoutError("refilling the coordinator's queues timed out")
            time.sleep(0.1)
        connection.close()

    def distinct(self) -> tuple[int, int]:
        """Distinct objects and distinct (object, recipient) ACKs among the kept messages: a consumer
        redelivery during the fill can leave a duplicate ACK, which the ledger counts once."""
        objects: set[str] = set()
        acks: set[tuple[str, str]] = set()
        for queue, kept in self.messages.items():
            for doc in (json.loads(body) for _, body in kept):
                if queue in self.pointer_queues:  # intents, barriers, a pointer or a pointer_batch
                    objects.update(item["object_id"] for item in doc.get("pointers", [doc]) if item["type"] == "pointer")
                else:  # an ack, or an ack_batch of several objects
                    acks.update((item["object_id"], doc["recipient"]) for item in doc.get("acks", [doc]))
        return len(objects), len(acks)

    def drain(self, rep: int, profile_out: "Path | None" = None) -> dict[str, Any]:
        """Refill, start a coordinator per shard on a fresh ledger, time the drain; then the upsert baseline."""
        pointers, acks = self.distinct()
        self._attempts = getattr(self, "_attempts", 0) + 1
        dsn = self.env.database(f"coord{rep}_{self._attempts}")
        result: dict[str, Any] = {"pointers": pointers, "acks": acks, "error": "",
                                  "kept_messages": sum(len(kept) for kept in self.messages.values())}
        try:
            self._refill()
            coordinators = [
                self.env.claimcheck(f"coord{self.shards}-drain-{rep}-{shard}", ["coordinator", "--http-port", "0"],
                                    self._env(dsn, CLAIMCHECK_COORDINATOR_SHARD_IDS=str(shard)))
                for shard in range(self.shards)]
            spy = profiling.attach(coordinators[0].pid, profile_out) if profile_out is not None else None
            meter = CpuMeter()
            meter.children.update((coordinator.pid, "coordinator") for coordinator in coordinators)
            cpu_before: dict[int, tuple[str, float]] | None = None  # once the first object row is there
            db = psycopg2.connect(dsn)
            db.autocommit = True
            deadline = time.monotonic() + 600
            while True:
                try:
                    with db.cursor() as cursor:
                        cursor.execute("SELECT (SELECT count(*) FROM acks), "
                                       "(SELECT count(*) FROM objects WHERE state = 'deleted'), "
                                       "EXISTS (SELECT 1 FROM objects)")
                        counted, deleted, started = single_row(cursor)
                        if started and cpu_before is None:
                            cpu_before = meter.snapshot()
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    time.sleep(1.0)  # PostgreSQL restarted by another user of the stack
                    db = psycopg2.connect(dsn)
                    db.autocommit = True
                    continue
                if counted >= acks and deleted >= pointers:
                    cpu = CpuMeter.delta(cpu_before or {}, meter.snapshot())
                    break
                if any(coordinator.poll() is not None for coordinator in coordinators) or time.monotonic() > deadline:
                    raise RuntimeError(f"coordinator drain stopped at {counted}/{acks} ACKs, {deleted} deleted")
                time.sleep(0.05)
            with db.cursor() as cursor:
                cursor.execute("""SELECT extract(epoch FROM (SELECT min(first_seen_at) FROM objects)),
                                         extract(epoch FROM (SELECT max(acked_at) FROM acks)),
                                         extract(epoch FROM (SELECT max(pointer_seen_at) FROM objects)),
                                         extract(epoch FROM (SELECT max(deleted_at) FROM objects))""")
                first, last_ack, last_pointer, last_deleted = (float(value) for value in single_row(cursor))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            finished = [coordinator.stop() for coordinator in coordinators]
            span = max(last_ack, last_pointer) - first
            result.update(
                drain_seconds=span,
                acks_per_s=acks / span,
                messages_per_s=(acks + pointers) / span,
                all_deleted_seconds=last_deleted - first,
                coordinator_cpu_seconds=sum(done.cpu_seconds for done in finished),
                coordinator_rss=max(done.maxrss_bytes for done in finished),
            )
            result.update(self._upsert_baseline(db, acks))
            db.close()
            result["broker_messages_per_s"] = result["kept_messages"] / span
            # CPU from the first object row to the last deletion, per broker message drained.
            result["cpu_us_per_message"] = {part: 1e6 * seconds / result["kept_messages"] for part, seconds in cpu.items()
                                            if part in ("coordinator", "postgresql", "rabbitmq")}
            result.update(self._bare_drain())
        except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
            result["error"] = str(exc)[:500]
            log.warning("coordinator drain %d failed: %s", rep, exc)
        finally:
            self.env.drop_database(dsn)
        return result

    def _bare_drain(self) -> dict[str, float]:
        """The coordinator's limit on this broker: the same messages put back and drained by a
        consumer that only acknowledges (same prefetch, one multiple-ack per 100 messages)."""
        self._refill()
        connection, channel = self._channel()
        channel.basic_qos(prefetch_count=1000)
        total = sum(len(kept) for kept in self.messages.values())
        taken = 0

        def on_message(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
            nonlocal taken
            taken += 1
            if taken % 100 == 0 or taken == total:
                channel.basic_ack(method.delivery_tag, multiple=True)

        for queue in self.messages:
            channel.basic_consume(queue, on_message)
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        while taken < total and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
        seconds = time.perf_counter() - started
        connection.close()  # everything taken was acknowledged by the callback (the last one included)
        if taken < total:
            raise TimeoutError(f"bare drain took {taken} of {total} messages")
        return {"bare_messages_per_s": total / seconds, "bare_seconds": seconds}

    def _upsert_baseline(self, db: Any, count: int) -> dict[str, float]:
        with db.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_upserts (LIKE acks INCLUDING ALL)")
        rows = [(uuid.uuid4().hex, "g1" if index % 2 else "g2", "0" * 64, "bench") for index in range(count)]
        started = time.perf_counter()
        with db.cursor() as cursor:
            for row in rows:
                cursor.execute(
                    """INSERT INTO bench_upserts (object_id, recipient, payload_sha256, consumer)
                       VALUES (%s, %s, %s, %s)
                       ON CONFLICT (object_id, recipient, payload_sha256)
                       DO UPDATE SET duplicates = bench_upserts.duplicates + 1""",
                    row,
                )
        seconds = time.perf_counter() - started
        return {"upserts_per_s": count / seconds, "upsert_seconds": seconds}
