"""One scenario's job, recipient groups and processes (coordinator, consumers, producer), and what they logged."""

import os
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pika

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.publisher import parameters
from tests.faults.fault_harness.components import ACKED, PUBLISHED, SETTLED, Component
from tests.faults.fault_harness.ledger import LedgerProbe
from tests.faults.fault_harness.recovery import Fault, recovery_of
from tests.testkit import free_port, wait_until


class Scenario:
    """One scenario's job, recipient groups and processes (coordinator, consumers, producer)."""

    def __init__(self, name: str, workdir: Path, settings: Settings, ledger: LedgerProbe, s3: Any,
                 shards: int = 1) -> None:
        self.name = name
        self.shards = shards  # coordinator shards of every component (the coordinator declares their queues)
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
            "CLAIMCHECK_COORDINATOR_SHARDS": str(shards),
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
        def ready() -> bool:
            assert self.coordinator is not None
            if not self.coordinator.alive:
                raise AssertionError(f"coordinator exited {self.coordinator.returncode}:\n{self.coordinator.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.coordinator_port}/readyz", timeout=2) as response:
                    return bool(response.status == 200)
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

    @property
    def coordinator_queues(self) -> list[str]:
        """Every shard's pointer and ACK queue."""
        return [queue for queue, _, _ in topology.coordinator_queues(range(self.shards))]

    def delete_queues(self) -> None:
        """The recipients' queues, and those of the shards beyond the stack's own shard 0."""
        connection = pika.BlockingConnection(parameters(self.settings.amqp_url))
        try:
            channel = connection.channel()
            for queue in [*map(topology.recipient_queue, self.recipients), *self.coordinator_queues[2:]]:
                channel.queue_delete(queue)
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
