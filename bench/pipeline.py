"""The whole product on the local stack: a coordinator, one consumer replica per recipient group
and a producer run per measurement, every one a ``python -m claimcheck`` process.

Throughput is ``N / (last deleted_at - first pointer_created_at)``: from the first object stored
to the last one deleted, so process start-up is not in it; latency is
per object ``deleted_at - pointer_created_at`` (and ``- pointer_seen_at``), all from the ledger.
The stack's limit (:mod:`bench.s3limit`) is measured the same way from its own timestamps.
"""

import json
import logging
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg2
from psycopg2 import extensions as pg

from bench.stack import PYTHON, BenchEnv, CpuMeter, Proc, mgmt, queue_counters, quote
from claimcheck.localstack.ports import free_port

log = logging.getLogger("bench")
MiB = 1024 * 1024


@dataclass
class Run:
    """One repetition of one configuration."""

    kind: str  # "pipeline" or "limit"
    size: int
    count: int
    groups: int
    rate: float = 0.0
    objects_per_s: float = 0.0
    wall_objects_per_s: float = 0.0
    latency_created: list[float] = field(default_factory=list)
    latency_seen: list[float] = field(default_factory=list)
    object_bytes: int = 0
    producer_seconds: float = 0.0
    producer_rss: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    leftover_objects: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    failed_attempts: list[str] = field(default_factory=list)
    error: str = ""
    # From the broker's own counters (runs asked to count them): per object, over every queue.
    enqueues_per_object: float = 0.0
    settlements_per_object: float = 0.0

    @property
    def mib_per_s(self) -> float:
        return self.objects_per_s * self.size / MiB

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"mib_per_s": self.mib_per_s}


def throughput(stored: list[float], deleted: list[float]) -> float:
    """Objects per second from the first object stored to the last one deleted.

    Not ``(N - 1) / (last - first deletion)``: the coordinator deletes in batches, so several
    objects share a deletion time and a run of a few large objects would look faster than it
    is. Both the pipeline and the limit are measured from their first finished upload.
    """
    if not deleted or max(deleted) <= min(stored):
        return float("nan")
    return len(deleted) / (max(deleted) - min(stored))


def producer_summary(output: str) -> dict[str, Any]:
    """The JSON line ``claimcheck producer`` prints last."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except json.JSONDecodeError:
                continue
    return {}


class Pipeline:
    """A running coordinator and consumers of ``groups`` recipient groups in the run's own vhost."""

    def __init__(self, env: BenchEnv, groups: int, name: str = "pipe", consumer_args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.name = name
        self.groups = [f"{env.run_id}-g{index}" for index in range(1, groups + 1)]
        self.amqp_url = env.vhost(name, self.groups)
        self.vhost = f"ccbench-{env.run_id}-{name}"
        self.dsn = env.database(name)
        self.port = free_port()
        self.child_env = env.env(self.amqp_url, self.dsn, self.port)
        self.meter = CpuMeter()
        self._seq = 0
        self._consumer_args = consumer_args
        self.coordinator: Proc | None = None
        self.consumers: list[Proc] = []
        self._db: pg.connection | None = None

    def start(self) -> "Pipeline":
        self.coordinator = self.env.claimcheck(f"{self.name}-coordinator", ["coordinator", "--http-port", str(self.port)],
                                               self.child_env)
        self.meter.children[self.coordinator.pid] = "coordinator"
        for group in self.groups:
            consumer = self.env.claimcheck(f"{self.name}-consumer-{group}",
                                           ["consumer", "--recipient", group, *self._consumer_args], self.child_env)
            self.meter.children[consumer.pid] = "consumers"
            self.consumers.append(consumer)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in [self.coordinator, *self.consumers]:
                assert proc is not None
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited early:\n{proc.tail(40)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as response:
                    coordinator_ready = response.status == 200
            except OSError:
                coordinator_ready = False
            consuming = 0
            for group in self.groups:
                try:
                    queue = mgmt("GET", f"/api/queues/{quote(self.vhost)}/{quote('claimcheck.pointers.' + group)}")
                    consuming += int(queue.get("consumers", 0) >= 1)
                except OSError:
                    pass
            if coordinator_ready and consuming == len(self.groups):
                return
            time.sleep(0.3)
        raise TimeoutError("coordinator or consumers did not become ready")

    def stop(self) -> None:
        for proc in [*self.consumers, self.coordinator]:
            if proc is not None:
                proc.stop()
        if self._db is not None:
            self._db.close()

    # -- ledger ---------------------------------------------------------------------------------

    def _ledger(self) -> pg.connection:
        if self._db is None or self._db.closed:
            self._db = psycopg2.connect(self.dsn, connect_timeout=10)
            self._db.autocommit = True
        return self._db

    def _query(self, sql: str, args: tuple[Any, ...], attempts: int = 30) -> list[tuple[Any, ...]]:
        """Run one query, reconnecting while PostgreSQL restarts (other users of the stack do that)."""
        for attempt in range(attempts):
            try:
                with self._ledger().cursor() as cursor:
                    cursor.execute(sql, args)
                    return list(cursor.fetchall())
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if self._db is not None:
                    self._db.close()
                self._db = None
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")

    def wait_deleted(self, job: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            deleted = self._query("SELECT count(*) FILTER (WHERE state = 'deleted') FROM objects WHERE job = %s",
                                  (job,))[0][0]
            if deleted >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job}: only {deleted} of {count} objects deleted after {timeout:.0f} s")
            time.sleep(0.05)

    def stages(self, job: str) -> dict[str, float]:
        """Median seconds from the pointer's creation to each later step in the ledger."""
        row = self._query(
            """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM o.pointer_seen_at - o.pointer_created_at)),
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.first_ack - o.pointer_created_at)),
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.last_ack - o.pointer_created_at)),
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM o.decided_at - o.pointer_created_at)),
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM o.deleted_at - o.pointer_created_at))
                     FROM objects o JOIN (SELECT object_id, min(acked_at) AS first_ack, max(acked_at) AS last_ack
                                            FROM acks GROUP BY object_id) a USING (object_id)
                    WHERE o.job = %s""",
                (job,),
            )[0]
        names = ("pointer seen by coordinator", "first ACK counted", "last ACK counted", "delete decided", "deleted")
        return {name: float(value) for name, value in zip(names, row, strict=True) if value is not None}

    def timestamps(self, job: str) -> list[tuple[float, float, float]]:
        """(pointer_created_at, pointer_seen_at, deleted_at) of each object, epoch seconds."""
        rows = self._query(
            """SELECT extract(epoch FROM pointer_created_at), extract(epoch FROM pointer_seen_at),
                      extract(epoch FROM deleted_at)
                 FROM objects WHERE job = %s AND state = 'deleted'""",
            (job,),
        )
        return [(float(a), float(b), float(c)) for a, b, c in rows]

    # -- measurements ---------------------------------------------------------------------------

    def run(self, size: int, count: int, groups: int, rate: float = 0.0, parallelism: int | None = None,
            broker_commands: bool = False) -> Run:
        """One producer run through the whole pipeline, until every object is deleted; with
        ``broker_commands``, also the broker's enqueues and settlements per object."""
        self._seq += 1
        job = f"{self.env.run_id}-{self.name}-{self._seq:03d}"
        result = Run("pipeline", size, count, groups, rate)
        args = ["producer", "--job", job, "--count", str(count), "--size", str(size),
                "--recipients", ",".join(self.groups[:groups]), "--no-verify"]
        if rate:
            args += ["--rate", f"{rate:.3f}"]
        if parallelism:
            args += ["--parallelism", str(parallelism)]
        counters = queue_counters(self.vhost) if broker_commands else (0, 0)
        before = self.meter.snapshot()
        producer = self.env.claimcheck(f"{self.name}-producer-{self._seq:03d}", args, self.child_env, measure=True)
        timeout = 120 + count * size / MiB * 1.0 + (count / rate if rate else 0)
        try:
            finished = producer.wait(timeout)
            if finished.returncode != 0:
                raise RuntimeError(f"producer failed ({finished.returncode}): {finished.output[-2000:]}")
            self.wait_deleted(job, count, timeout)
        except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
            producer.stop()
            result.error = str(exc)[:500]
            log.warning("pipeline run %s failed: %s", job, result.error)
            return result
        cpu = CpuMeter.delta(before, self.meter.snapshot())
        cpu["producer"] = finished.cpu_seconds
        stamps = self.timestamps(job)
        deleted = [stamp[2] for stamp in stamps]
        result.objects_per_s = throughput([stamp[0] for stamp in stamps], deleted)
        result.wall_objects_per_s = len(deleted) / (max(deleted) - producer.started_wall)
        result.latency_created = [d - c for c, _, d in stamps]
        result.latency_seen = [d - s for _, s, d in stamps]
        result.object_bytes = int(producer_summary(finished.output).get("object_bytes", 0))
        result.producer_seconds = finished.seconds
        result.producer_rss = finished.maxrss_bytes
        result.cpu = cpu
        result.stages = self.stages(job)
        if broker_commands:
            enqueues, settlements = (after - start for after, start in zip(queue_counters(self.vhost), counters, strict=True))
            result.enqueues_per_object, result.settlements_per_object = enqueues / count, settlements / count
        from bench.stack import count_prefix

        result.leftover_objects = count_prefix(self.env.bucket, f"{job}/")
        return result

    def limit(self, size: int, count: int, groups: int, object_size: int) -> Run:
        """The same object count and sizes through S3 alone (bench.s3limit)."""
        self._seq += 1
        prefix = f"{self.env.run_id}-limit-{self._seq:03d}/"
        result = Run("limit", size, count, groups, object_bytes=object_size * count)
        proc = self.env.spawn(f"limit-{self._seq:03d}", [
            PYTHON, "-m", "bench.s3limit", "--bucket", self.env.bucket, "--prefix", prefix, "--count", str(count),
            "--object-size", str(object_size), "--groups", str(groups)], self.child_env | {"PYTHONPATH": str(_repo())})
        before = self.meter.snapshot()
        try:
            finished = proc.wait(120 + count * size / MiB)
            if finished.returncode != 0:
                raise RuntimeError(f"s3limit failed: {finished.output[-2000:]}")
            document = producer_summary(finished.output)
        except Exception as exc:  # noqa: BLE001
            proc.stop()
            result.error = str(exc)[:500]
            return result
        objects = document["objects"]
        deleted = [item["deleted"] for item in objects]
        result.objects_per_s = throughput([item["put"] for item in objects], deleted)
        result.wall_objects_per_s = len(deleted) / (max(deleted) - document["started"])
        result.latency_created = [item["deleted"] - item["put"] for item in objects]
        # The S3 server's share too: the limit's CPU budget per object is clients plus server.
        result.cpu = {"limit (all processes)": finished.cpu_seconds,
                      "seaweedfs": CpuMeter.delta(before, self.meter.snapshot()).get("seaweedfs", 0.0)}
        return result


def _repo() -> str:
    from bench.stack import REPO

    return str(REPO)
