"""Fault-injection harness: real component processes, stack control, ledger probes, the shared
end-of-scenario checks and the recovery measurements.

Every component runs as ``python -m claimcheck ...`` in its own process group with its own log
file; faults are injected with ``scripts/stack.sh`` (RabbitMQ nodes, HAProxy, PostgreSQL, S3)
or with signals (our own components). Nothing here sleeps to hide a race: every wait polls a
condition until a deadline (:func:`wait_until`).
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pika
import psycopg2

from claimcheck import store, topology
from claimcheck.config import Settings
from claimcheck.protocol import parse_object_key
from claimcheck.publisher import parameters
from tests.testkit import free_port as free_port  # re-exported for the suite
from tests.testkit import unique as unique
from tests.testkit import wait_until as wait_until

REPO = Path(__file__).resolve().parents[2]
STACK_SH = REPO / "scripts" / "stack.sh"
NODES = (0, 1, 2)

# Log lines the components write (apps/claimcheck): a confirmed pointer, a confirmed business ACK.
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
PUBLISHED = re.compile(r"published object (?P<object_id>[0-9a-f]{32}) of job (?P<job>\S+)")
ACKED = re.compile(r"verified and acked object (?P<object_id>[0-9a-f]{32}) of job (?P<job>\S+)")
# A pointer redelivered after its object was deleted with this recipient's ACK counted (its
# delivery-ack was lost with a connection): the consumer asks the coordinator and settles it.
SETTLED = re.compile(r"object (?P<object_id>[0-9a-f]{32}) was deleted: \S+ confirmed it before; settling the redelivered")
DEAD_LETTERED = re.compile(r"dead-lettered message (?P<message_id>\S+) from (?P<queue>\S+): (?P<reason>.*)")


# ------------------------------------------------------------------------ the stack --


class StackError(AssertionError):
    """A ``scripts/stack.sh`` command failed."""


def stack(*args: str, timeout: float = 300, check: bool = True) -> str:
    """Run ``scripts/stack.sh ARGS`` and return its combined output."""
    result = subprocess.run(
        ["bash", str(STACK_SH), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise StackError(f"stack.sh {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}")
    return result.stdout


def stack_status() -> dict[str, str]:
    """Component -> 'running' / 'stopped' (from ``stack.sh status``), plus the cluster line."""
    states: dict[str, str] = {}
    for line in stack("status", check=False, timeout=120).splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
            if parts[0] == "rmq-cluster":
                match = re.search(r"running nodes \((\d+)\)", line)
                states["rmq-cluster-size"] = match.group(1) if match else "0"
    return states


def running_node() -> int:
    """A RabbitMQ node that is up, to run the CLI against."""
    states = stack_status()
    for n in NODES:
        if states.get(f"rmq-{n}") == "running":
            return n
    raise StackError("no RabbitMQ node is running")


def queue_leaders(queues: Iterable[str]) -> dict[str, str]:
    """Quorum queue -> node name of its current leader (``list_queues name leader``, 3.10)."""
    wanted = set(queues)
    out = stack("rabbitmqctl", str(running_node()), "-q", "list_queues", "name", "leader", "--formatter", "json")
    rows = json.loads(out[out.index("[") :])
    return {row["name"]: row["leader"] for row in rows if row["name"] in wanted}


def queue_consumers(queues: Iterable[str]) -> dict[str, int]:
    """Quorum queue -> number of consumers (``list_queues name consumers``)."""
    wanted = set(queues)
    out = stack("rabbitmqctl", str(running_node()), "-q", "list_queues", "name", "consumers", "--formatter", "json")
    rows = json.loads(out[out.index("[") :])
    return {row["name"]: int(row["consumers"]) for row in rows if row["name"] in wanted}


def node_index(node_name: str) -> int:
    """``rmq-1@localhost`` -> 1."""
    return int(re.match(r"rmq-(\d)@", node_name).group(1))  # type: ignore[union-attr]


def quorum_critical(n: int) -> bool:
    """Would stopping rmq-N leave some quorum queue without a quorum?"""
    result = subprocess.run(
        ["bash", str(STACK_SH), "rabbitmq-queues", str(n), "check_if_node_is_quorum_critical"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode != 0


def restore_stack() -> list[str]:
    """Bring every component of the stack back (idempotent); return what had to be restarted.

    Ends only when all three RabbitMQ nodes run in one cluster, no quorum queue depends on a
    lagging member (no node is quorum-critical), HAProxy routes AMQP, PostgreSQL and S3 answer.
    """
    restarted: list[str] = []
    states = stack_status()
    commands = [(f"rmq-{n}", ("rmq-start", str(n))) for n in NODES]
    commands += [("postgres", ("pg-start",)), ("seaweedfs", ("s3-start",)), ("haproxy", ("haproxy-restart",))]
    for component, command in commands:
        if states.get(component) != "running":
            restarted.append(component)
            try:
                stack(*command)
            except StackError as exc:
                # stack.sh can report a start as failed that still comes up (it checks the
                # launched process's name before setsid has exec'd it); the wait below decides.
                print(f"restore: {exc}")
    wait_until(
        lambda: (
            (s := stack_status()).get("rmq-cluster-size") == "3"
            and all(s.get(name) == "running" for name in ("rmq-0", "rmq-1", "rmq-2", "haproxy", "postgres", "seaweedfs"))
        ),
        180,
        "the whole stack running, RabbitMQ cluster of 3",
        poll=1.0,
    )
    for n in NODES:
        wait_until(lambda n=n: not quorum_critical(n), 180, f"rmq-{n} not quorum-critical", poll=1.0)
    return restarted


# ------------------------------------------------------------------------- processes --


def parse_log_line(line: str) -> tuple[float, str] | None:
    """(epoch seconds, message) of a component's log line: JSON (``CLAIMCHECK_LOG_FORMAT=json``,
    what the harness asks for) or the terminal text format (components run with TZ=UTC)."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
            return datetime.fromisoformat(record["time"]).timestamp(), str(record.get("message", ""))
        except (ValueError, KeyError, TypeError):
            return None
    match = _LOG_TIME.match(line)
    if not match:
        return None
    at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc).timestamp()
    return at, line[match.end() :]


class Component:
    """One ``python -m claimcheck ...`` process; restartable, logging to one file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path, http_port: int | None = None) -> None:
        self.name = name
        self.http_port = http_port
        self.args = args
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []
        self.start()

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            log.write(f"==== fault harness: starting {self.name}: claimcheck {' '.join(self.args)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "claimcheck", *self.args],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids.append(self.popen.pid)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def kill9(self) -> float:
        """SIGKILL the process; return the moment (epoch) it was sent."""
        assert self.popen is not None and self.alive, f"{self.name} is not running"
        at = time.time()
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        with open(self.log_path, "ab") as log:
            log.write(f"==== fault harness: {self.name} killed with SIGKILL\n".encode())
        return at

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait, then SIGKILL; return the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, pattern: re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
        """(time, match) of every log line matching ``pattern``."""
        found = []
        for line in self.log_text().splitlines():
            parsed = parse_log_line(line)
            if parsed is not None:
                match = pattern.search(parsed[1])
                if match:
                    found.append((parsed[0], match))
        return found

    def messages(self) -> list[str]:
        return [parsed[1] for line in self.log_text().splitlines() if (parsed := parse_log_line(line))]

    def metrics(self) -> dict[str, float]:
        """This process's Prometheus metrics, ``name{label="v",...}`` -> value (empty while unreachable)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        assert self.http_port is not None, f"{self.name} has no HTTP endpoint"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}"] = sample.value
        return values

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# ---------------------------------------------------------------------------- ledger --


class LedgerProbe:
    """Read-only queries against the ledger; a fresh connection per call (PostgreSQL may be down)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._columns: dict[tuple[str, str], bool] = {}

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        connection = psycopg2.connect(self.dsn, connect_timeout=3)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, args[0] if len(args) == 1 and isinstance(args[0], dict) else args)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def states(self, job: str) -> dict[str, int]:
        """Objects of ``job`` per state (swept orphans counted separately as 'swept')."""
        swept = self.has_column("objects", "swept_at")
        label = "CASE WHEN swept_at IS NOT NULL THEN 'swept' ELSE state END" if swept else "state"
        rows = self.query(f"SELECT {label}, count(*) FROM objects WHERE job = %s GROUP BY 1", job)
        return {state: int(count) for state, count in rows}

    def has_column(self, table: str, column: str) -> bool:
        key = (table, column)
        if key not in self._columns:
            self._columns[key] = bool(
                self.query("SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", table, column)
            )
        return self._columns[key]

    def published_ids(self, job: str) -> set[str]:
        """Objects of ``job`` whose pointer the coordinator recorded."""
        return {row[0] for row in self.query("SELECT object_id FROM objects WHERE job = %s AND pointer_seen_at IS NOT NULL", job)}

    def all_ids(self, job: str) -> set[str]:
        return {row[0] for row in self.query("SELECT object_id FROM objects WHERE job = %s", job)}

    def counted_acks(self, job: str) -> dict[str, int]:
        """Recipient -> ACKs that count (recipient in the set, same sha256) for ``job``."""
        rows = self.query(
            """SELECT a.recipient, count(*) FROM acks a JOIN objects o USING (object_id)
                WHERE o.job = %s AND a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256
                GROUP BY 1""",
            job,
        )
        return {recipient: int(count) for recipient, count in rows}

    def write_times(self, job: str) -> list[float]:
        """Epochs of every ledger write the coordinator made for ``job``: pointers recorded, ACKs counted."""
        rows = self.query(
            """SELECT extract(epoch FROM pointer_seen_at) FROM objects WHERE job = %(job)s AND pointer_seen_at IS NOT NULL
               UNION ALL
               SELECT extract(epoch FROM a.acked_at) FROM acks a JOIN objects o USING (object_id) WHERE o.job = %(job)s""",
            {"job": job},
        )
        return sorted(float(row[0]) for row in rows)


def recovery_of(times: list[float], fault: float, restored: float | None) -> dict[str, Any]:
    """How one client's stream of confirmed events (``times``) went through a fault.

    A stall is a gap between two consecutive events that starts between 2 s before the fault
    and 1 s after its repair (or after the fault, if nothing was repaired) and lasts at least
    0.5 s and 4x the client's median gap in the 10 s before the fault. With a stall, the client
    recovered at its end: ``resumed_s`` seconds after the fault. Without one the client kept
    going, and ``resumed_s`` is simply the time to its next confirmed event.
    """
    times = sorted(times)
    after = [t for t in times if t > fault]
    if not after:
        return {"resumed_s": None, "stall_s": None, "note": "no confirmed event after the fault"}
    before = [t for t in times if fault - 10 <= t <= fault]
    gaps_before = sorted(b - a for a, b in zip(before, before[1:], strict=False))
    median = gaps_before[len(gaps_before) // 2] if gaps_before else 0.0
    threshold = max(0.5, 4 * median)
    latest_start = (restored if restored is not None else fault) + 1.0
    best: tuple[float, float] | None = None
    for a, b in zip(times, times[1:], strict=False):
        if b <= fault or not fault - 2.0 <= a <= latest_start:
            continue
        if best is None or b - a > best[1] - best[0]:
            best = (a, b)
    if best is not None and best[1] - best[0] >= threshold:
        resumed = best[1]
        entry = {"resumed_s": round(resumed - fault, 3), "stall_s": round(best[1] - best[0], 3)}
    else:
        resumed = after[0]
        entry = {"resumed_s": round(resumed - fault, 3), "stall_s": None}
    if restored is not None:
        entry["after_repair_s"] = round(resumed - restored, 3) if resumed > restored else None
    entry["median_gap_before_s"] = round(median, 3)
    return entry


# --------------------------------------------------------------------------- traffic --


@dataclass
class Fault:
    """One injected fault: when it started and when the component was back (if restored)."""

    label: str
    at: float
    restored_at: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class Scenario:
    """One scenario's job, recipient groups and processes (coordinator, consumers, producer)."""

    def __init__(self, name: str, workdir: Path, settings: Settings, ledger: LedgerProbe, s3: Any) -> None:
        self.name = name
        self.workdir = workdir
        self.settings = settings
        self.ledger = ledger
        self.s3 = s3
        tag = uuid.uuid4().hex[:6]
        self.job = f"faults-{name.replace('_', '-')[:40]}-{tag}"
        # 3 recipient groups, 2 replicas in the first one.
        self.groups: dict[str, int] = {f"billing-{tag}": 2, f"audit-{tag}": 1, f"archive-{tag}": 1}
        self.coordinator_port = free_port()
        self.env = {
            **os.environ,
            "TZ": "UTC",
            "PYTHONUNBUFFERED": "1",
            "CLAIMCHECK_LOG_FORMAT": "json",
            "CLAIMCHECK_COORDINATOR_URL": f"http://127.0.0.1:{self.coordinator_port}",
            "CLAIMCHECK_HTTP_PORT": str(self.coordinator_port),
        }
        for variable in ("JOB", "COUNT", "MSG_SIZE", "RECIPIENT", "RECIPIENTS", "VERIFY"):
            self.env.pop(variable, None)
        self.coordinator: Component | None = None
        self.consumers: list[Component] = []
        self.producers: list[Component] = []
        self.faults: list[Fault] = []
        self.recoveries: list[dict[str, Any]] = []

    @property
    def recipients(self) -> list[str]:
        return sorted(self.groups)

    @property
    def components(self) -> list[Component]:
        return [c for c in [self.coordinator, *self.consumers, *self.producers] if c is not None]

    def _log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # -- starting ---------------------------------------------------------------------

    def start_coordinator(self, extra_env: dict[str, str] | None = None) -> Component:
        self.coordinator = Component(
            "coordinator",
            ["coordinator", "--http-port", str(self.coordinator_port)],
            {**self.env, **(extra_env or {})},
            self._log("coordinator"),
        )
        self.wait_coordinator_ready()
        return self.coordinator

    def wait_coordinator_ready(self, timeout: float = 60) -> None:
        import urllib.request

        def ready() -> bool:
            assert self.coordinator is not None
            if not self.coordinator.alive:
                raise AssertionError(f"coordinator exited {self.coordinator.returncode}:\n{self.coordinator.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.coordinator_port}/readyz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(ready, timeout, "the coordinator ready (/readyz 200)", poll=0.2)

    def start_consumers(self, extra_args: list[str] | None = None, log_level: str = "INFO") -> list[Component]:
        started = []
        for recipient, replicas in self.groups.items():
            for replica in range(replicas):
                started.append(self.start_consumer(recipient, replica, extra_args, log_level))
        for consumer in started:
            self.wait_consuming(consumer)
        return started

    def start_consumer(
        self, recipient: str, replica: int, extra_args: list[str] | None = None, log_level: str = "INFO"
    ) -> Component:
        port = free_port()
        env = {**self.env, "CLAIMCHECK_LOG_LEVEL": log_level, "CLAIMCHECK_CONSUMER_HTTP_PORT": str(port)}
        consumer = Component(
            f"consumer-{recipient}-{replica}",
            ["consumer", "--recipient", recipient, *(extra_args or [])],
            env,
            self._log(f"consumer-{recipient}-{replica}"),
            http_port=port,
        )
        self.consumers.append(consumer)
        return consumer

    def wait_consuming(self, consumer: Component, since_line: int = 0, timeout: float = 60) -> None:
        def consuming() -> bool:
            if not consumer.alive:
                raise AssertionError(f"{consumer.name} exited {consumer.returncode}:\n{consumer.tail()}")
            lines = consumer.messages()[since_line:]
            return any(line.startswith("consuming claimcheck.pointers.") for line in lines)

        wait_until(consuming, timeout, f"{consumer.name} consuming", poll=0.1)

    def start_producer(self, count: int, size: str = "8KB", rate: float = 0, parallelism: int = 2) -> Component:
        producer = Component(
            f"producer-{len(self.producers)}",
            [
                "producer",
                "--job",
                self.job,
                "--count",
                str(count),
                "--size",
                size,
                "--recipients",
                ",".join(self.recipients),
                "--no-verify",
                "--rate",
                str(rate),
                "--parallelism",
                str(parallelism),
            ],
            self.env,
            self._log(f"producer-{len(self.producers)}"),
        )
        self.producers.append(producer)
        return producer

    def start_all(
        self,
        count: int,
        size: str = "8KB",
        rate: float = 0,
        parallelism: int = 2,
        coordinator_env: dict[str, str] | None = None,
        consumer_log_level: str = "INFO",
    ) -> Component:
        """Coordinator, then every consumer replica (each consuming), then the producer."""
        self.start_coordinator(coordinator_env)
        self.start_consumers(log_level=consumer_log_level)
        return self.start_producer(count, size, rate, parallelism)

    # -- observing ---------------------------------------------------------------------

    def published_log(self) -> list[tuple[float, str]]:
        """(time, object id) of every pointer a producer logged as confirmed."""
        return [(at, m["object_id"]) for p in self.producers for at, m in p.events(PUBLISHED) if m["job"] == self.job]

    def acked_log(self, consumers: Iterable[Component] | None = None) -> list[tuple[float, str, str]]:
        """(time, recipient, object id) of every business ACK a consumer logged as confirmed."""
        out = []
        for consumer in self.consumers if consumers is None else consumers:
            recipient = consumer.name.removeprefix("consumer-").rsplit("-", 1)[0]
            out += [(at, recipient, m["object_id"]) for at, m in consumer.events(ACKED) if m["job"] == self.job]
        return out

    def settled_log(self) -> list[tuple[str, str]]:
        """(recipient, object id) of every redelivered pointer a consumer settled as already confirmed."""
        return [(consumer.name.removeprefix("consumer-").rsplit("-", 1)[0], m["object_id"])
                for consumer in self.consumers for _, m in consumer.events(SETTLED)]

    def wait_flowing(self, acks_per_recipient: int = 10, published: int = 20, timeout: float = 60) -> None:
        """Wait until traffic demonstrably flows end to end: pointers confirmed, every group acking."""

        def flowing() -> bool:
            for producer in self.producers:
                if producer.returncode not in (None, 0):
                    raise AssertionError(f"{producer.name} failed:\n{producer.tail()}")
            if len(self.published_log()) < published:
                return False
            per_recipient: dict[str, int] = {}
            for _, recipient, _ in self.acked_log():
                per_recipient[recipient] = per_recipient.get(recipient, 0) + 1
            return all(per_recipient.get(r, 0) >= acks_per_recipient for r in self.recipients)

        wait_until(flowing, timeout, f"traffic flowing ({published} published, {acks_per_recipient} ACKs per group)")

    def wait_progress_after(
        self, since: float, published: int = 0, acks: int = 0, timeout: float = 30, what: str = "traffic to continue"
    ) -> None:
        """Wait until producers confirmed ``published`` more pointers and consumers ``acks`` more ACKs after ``since``."""

        def progressed() -> bool:
            new_published = sum(1 for at, _ in self.published_log() if at > since)
            new_acks = sum(1 for at, _, _ in self.acked_log() if at > since)
            return new_published >= published and new_acks >= acks

        wait_until(progressed, timeout, what, poll=0.1)

    def wait_quiet(self, quiet: float, timeout: float, what: str) -> float:
        """Wait until no component confirmed a publish or an ACK for ``quiet`` seconds; return that moment."""

        def is_quiet() -> bool:
            events = [at for at, _ in self.published_log()] + [at for at, _, _ in self.acked_log()]
            last = max(events, default=0.0)
            return time.time() - last >= quiet

        wait_until(is_quiet, timeout, what, poll=0.2)
        return time.time()

    def producers_alive(self) -> bool:
        return any(p.alive for p in self.producers)

    # -- recovery ----------------------------------------------------------------------

    def measure_recovery(self, fault: Fault) -> dict[str, Any]:
        """Per client, when it recovered from ``fault``: see :func:`recovery_of`.

        producer: pointers confirmed by the broker (producer log); consumers: business ACKs
        confirmed by the broker, per replica (consumer logs); coordinator: ledger writes
        (pointer recorded or ACK counted) for this job.
        """
        result: dict[str, Any] = {"scenario": self.name, "fault": fault.label, **fault.notes}
        if fault.restored_at is not None:
            result["outage_s"] = round(fault.restored_at - fault.at, 2)

        def of(times: list[float]) -> dict[str, Any]:
            return recovery_of(times, fault.at, fault.restored_at)

        result["producer"] = of([at for at, _ in self.published_log()])
        result["consumers"] = {c.name: of([at for at, _, _ in self.acked_log([c])]) for c in self.consumers}
        result["coordinator"] = of(self.ledger.write_times(self.job))
        resumed = [v["resumed_s"] for v in result["consumers"].values() if v["resumed_s"] is not None]
        result["consumers_slowest"] = max(resumed) if resumed else None
        self.recoveries.append(result)
        return result

    # -- teardown ----------------------------------------------------------------------

    def stop_all(self) -> None:
        for component in reversed(self.components):
            component.stop()

    def delete_recipient_queues(self) -> None:
        connection = pika.BlockingConnection(parameters(self.settings.amqp_url))
        try:
            channel = connection.channel()
            for name in self.recipients:
                channel.queue_delete(topology.recipient_queue(name))
        finally:
            connection.close()

    def recipient_queue_depths(self) -> dict[str, int]:
        """Ready messages per recipient queue (passive declare, answered by the queue leader)."""
        connection = pika.BlockingConnection(parameters(self.settings.amqp_url))
        try:
            channel = connection.channel()
            return {
                name: channel.queue_declare(topology.recipient_queue(name), passive=True).method.message_count
                for name in self.recipients
            }
        finally:
            connection.close()


# ------------------------------------------------------------------- the shared check --


def assert_job_complete(
    scenario: Scenario,
    expected: int | None = None,
    timeout: float = 120,
    allow_orphans: bool = False,
) -> dict[str, Any]:
    """The end of every scenario: every published object verified by every recipient, deleted
    exactly once, nothing of the job left in S3, the ledger consistent.

    ``expected``: how many pointers were published (None: whatever the ledger recorded, for a
    producer killed mid-run). ``allow_orphans``: keys under the job prefix that no pointer ever
    named may remain (returned as ``orphans``); every other check still applies to them.
    """
    job, ledger, recipients = scenario.job, scenario.ledger, scenario.recipients
    db_down = (psycopg2.OperationalError,)

    def settled() -> dict[str, int] | None:
        states = ledger.states(job)
        published = len(ledger.published_ids(job))
        if expected is not None and published < expected:
            return None
        if any(states.get(s, 0) for s in ("pending", "deleting", "awaiting_pointer")):
            return None
        return states if published else None

    try:
        wait_until(settled, timeout, f"every object of job {job} deleted, nothing pending", poll=0.5, tolerate=db_down)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nledger states: {ledger.states(job)}\n{diagnostics(scenario)}") from None

    published = ledger.published_ids(job)
    if expected is not None:
        assert len(published) == expected, f"ledger recorded {len(published)} pointers, the producer confirmed {expected}"
    logged = {object_id for _, object_id in scenario.published_log()}
    assert logged <= published, f"pointers the producer confirmed but the ledger never recorded: {sorted(logged - published)[:5]}"

    # Verified by every recipient: ledger counts, and the consumers' own logs.
    acked = ledger.counted_acks(job)
    assert acked == {r: len(published) for r in recipients}, f"counted ACKs per recipient {acked}, published {len(published)}"
    stray = ledger.query(
        """SELECT a.object_id, a.recipient FROM acks a JOIN objects o USING (object_id)
            WHERE o.job = %s AND NOT (a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256)""",
        job,
    )
    assert not stray, f"ACKs that do not count (foreign recipient or other sha256): {stray[:5]}"
    # Dead letters: the only acceptable ones are `missing_object` for a pointer redelivered after
    # its object was already deleted with this recipient's ACK counted (the recipient's ACK was
    # confirmed, but the pointer's delivery-ack was lost with its connection): harmless
    # duplicates, see docs/failure-model.md. Anything else of this job is a failure.
    benign, harmful = classify_dead_letters(scenario, published)
    assert not harmful, f"messages of this job were dead-lettered: {harmful[:5]}"
    by_recipient: dict[str, set[str]] = {r: set() for r in recipients}
    for _, recipient, object_id in scenario.acked_log():
        by_recipient.setdefault(recipient, set()).add(object_id)
    for recipient, object_id in scenario.settled_log():  # its ACK was counted before: the ledger said so
        by_recipient.setdefault(recipient, set()).add(object_id)
    for recipient in recipients:
        # A consumer logs "verified and acked" after its pointer delivery-ack; the benign case
        # above verified and sent its ACK (counted in the ledger) but lost that delivery-ack.
        unexplained = published - by_recipient[recipient] - {d.object_id for d in benign if d.recipient == recipient}
        assert not unexplained, (
            f"{recipient}: no consumer log shows {len(unexplained)} objects verified, e.g. {sorted(unexplained)[:3]}"
        )

    # Deleted exactly once, the ledger consistent.
    rows = ledger.query(
        "SELECT object_id, state, deleted_at IS NOT NULL, cancelled_at IS NOT NULL FROM objects WHERE object_id = ANY (%s)",
        sorted(published),
    )
    not_deleted = [r for r in rows if r[1] != "deleted" or not r[2]]
    assert not not_deleted, f"objects not in state deleted: {not_deleted[:5]}"
    cancelled = [r[0] for r in rows if r[3]]
    assert not cancelled, f"objects deleted by cancellation instead of ACKs: {cancelled[:5]}"
    deletions = dict(
        ledger.query("SELECT object_id, count(*) FROM deletions WHERE object_id = ANY (%s) GROUP BY 1", sorted(published))
    )
    assert deletions == {object_id: 1 for object_id in published}, (
        f"deletions per object not exactly one: "
        f"{ {k: v for k, v in deletions.items() if v != 1} } missing {len(published - set(deletions))}"
    )
    states = ledger.states(job)
    assert set(states) <= {"deleted", "swept"}, f"ledger states of the job: {states}"
    assert states.get("deleted", 0) == len(published), f"ledger states {states}, published {len(published)}"

    # Nothing left in S3 under the job's prefix (except orphans, when allowed).
    keys = store.list_keys(scenario.s3, scenario.settings.s3_bucket, f"{job}/")
    leftovers = {}
    for key in keys:
        parsed = parse_object_key(key)
        assert parsed and parsed[0] == job, f"unexpected key under the job prefix: {key}"
        leftovers[parsed[1]] = key
    referenced = set(leftovers) & published
    assert not referenced, f"published objects still in S3 after their deletion: {sorted(referenced)[:5]}"
    orphans = sorted(set(leftovers) - published)
    if not allow_orphans:
        assert not orphans, f"{len(orphans)} objects left in S3 under {job}/ that no pointer named: {orphans[:5]}"

    ids = published | set(leftovers)
    _, harmful = classify_dead_letters(scenario, ids)
    assert not harmful, f"messages of this job were dead-lettered: {harmful[:5]}"
    return {"published": len(published), "orphans": orphans, "acked": acked, "benign_dead_letters": len(benign)}


@dataclass(frozen=True)
class DeadLetter:
    component: str
    recipient: str | None
    object_id: str
    at: float
    reason: str


def classify_dead_letters(scenario: Scenario, ids: set[str]) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Dead letters of ``ids`` logged by this scenario's components: (benign, harmful).

    Benign: a consumer's ``missing_object`` for an object the ledger had already deleted,
    after counting that consumer's recipient's ACK.
    """
    letters = []
    for component in scenario.components:
        recipient = component.name.removeprefix("consumer-").rsplit("-", 1)[0] if component.name.startswith("consumer-") else None
        for at, match in component.events(DEAD_LETTERED):
            object_id = match["message_id"].split(".")[0]
            if object_id in ids:
                letters.append(DeadLetter(component.name, recipient, object_id, at, match["reason"]))
    if not letters:
        return [], []
    rows = scenario.ledger.query(
        """SELECT o.object_id, extract(epoch FROM o.deleted_at), array_agg(a.recipient)
             FROM objects o JOIN acks a USING (object_id)
            WHERE o.object_id = ANY (%s) AND o.state = 'deleted' AND o.deleted_at IS NOT NULL
              AND a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256
            GROUP BY 1, 2""",
        sorted({letter.object_id for letter in letters}),
    )
    deleted = {object_id: (float(at), set(acked)) for object_id, at, acked in rows}
    benign, harmful = [], []
    for letter in letters:
        known = deleted.get(letter.object_id)
        ok = (
            letter.reason.startswith("missing_object:")
            and known is not None
            and known[0] <= letter.at + 0.5  # log and database clocks: same host, ms resolution
            and letter.recipient in known[1]
        )
        (benign if ok else harmful).append(letter)
    return benign, harmful


def diagnostics(scenario: Scenario) -> str:
    parts = []
    for component in scenario.components:
        parts.append(f"--- {component.name} (exit {component.returncode}) {component.log_path}\n{component.tail(15)}")
    return "\n".join(parts)
