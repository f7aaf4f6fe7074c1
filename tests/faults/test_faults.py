"""Fault injection against the real local stack, with traffic in flight.

Every scenario runs a coordinator, 3 recipient groups (2 replicas in the first, 1 in the
others) and a producer as real processes, injects one fault while pointers and ACKs flow,
repairs it, and ends with the same checks (:func:`assert_job_complete`): every published
object verified by every recipient, deleted exactly once, nothing left under the job's prefix
in S3, the ledger consistent. It also measures how long each client took to recover: from the
fault (and from its repair) to its next confirmed publish / ACK (docs/failure-model.md).
"""

import re
import time
import uuid
from typing import TYPE_CHECKING

import pika
import pytest

from claimcheck import store, topology
from claimcheck.producer import store_payload
from claimcheck.signing import KEY_ID_HEADER, SIGNATURE_HEADER
from tests.faults.fault_harness.checks import assert_job_complete
from tests.faults.fault_harness.components import Component
from tests.faults.fault_harness.recovery import Fault
from tests.faults.fault_harness.scenario import Scenario
from tests.faults.fault_harness.stack import STACK, node_index, queue_consumers, queue_leaders, wait_not_quorum_critical
from tests.testkit import wait_until

if TYPE_CHECKING:
    from pika.data import _ArgumentMapping  # the stubs' name for a header table; pika has none at runtime

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

# Long enough at 20 pointers/s that the producer is still publishing when the fault hits, even
# on a loaded 2-core machine.
COUNT = 600
SIZE = "8KB"


# Scenarios run a second time with two coordinator shards (docs/scaling.md): every guarantee
# must hold with an object's messages in its own shard's queues.
SHARDED = pytest.mark.parametrize("scenario", [1, 2], indirect=True, ids=["1-shard", "2-shards"])


def in_use_queues(sc: Scenario) -> list[str]:
    return [*sc.coordinator_queues, *(topology.recipient_queue(r) for r in sc.recipients)]


def inject(sc: Scenario, label: str, producer: Component, **notes: object) -> Fault:
    """Record a fault that starts now; traffic must be in flight (the producer still publishing)."""
    published = len(sc.published_log())
    assert producer.alive, f"{producer.name} already finished: no traffic in flight for the fault"
    fault = Fault(label, time.time(), notes={"published_before_fault": published, **notes})
    sc.faults.append(fault)
    return fault


def finish(sc: Scenario, producer: Component, faults: list[Fault], expected: int = COUNT) -> dict[str, object]:
    """The producer finishes its run, then the shared checks and the recovery measurements."""
    assert producer.wait(120).returncode == 0, f"{producer.name} failed:\n{producer.tail()}"
    result = assert_job_complete(sc, expected=expected)
    for fault in faults:
        fault.notes["benign_dead_letters"] = result["benign_dead_letters"]
        sc.measure_recovery(fault)
    return result


def restart_after_traffic_goes_on(sc: Scenario, fault: Fault, node: int, progress: int = 10) -> None:
    """Traffic must go on without rmq-``node`` (``progress`` more pointers and ACKs), then it comes back."""
    sc.wait_progress_after(fault.at, published=progress, acks=progress, what=f"traffic to continue without rmq-{node}")
    STACK.node(node).start()
    fault.restored_at = time.time()


def pick_follower(sc: Scenario) -> int:
    """A node that leads none of the queues in use (its clients' connections are what breaks)."""
    leaders = {node_index(node) for node in queue_leaders(in_use_queues(sc)).values()}
    followers = [n for n in (2, 1, 0) if n not in leaders]
    return followers[0] if followers else 2


def pick_leader(sc: Scenario) -> tuple[int, list[str]]:
    """The node leading the most queues in use (ties: the coordinator's pointer queue's leader)."""
    leaders = queue_leaders(in_use_queues(sc))
    led: dict[int, list[str]] = {}
    for queue, node in leaders.items():
        led.setdefault(node_index(node), []).append(queue)
    first = node_index(leaders[topology.COORDINATOR_POINTER_QUEUE])
    victim = max(led, key=lambda n: (len(led[n]), n == first))
    return victim, sorted(led[victim])


# ------------------------------------------------------------------------------ RabbitMQ --


def test_rmq_kill_node_and_restart(scenario: Scenario) -> None:
    producer = scenario.start_all(COUNT, SIZE, rate=20)
    scenario.wait_flowing()
    victim = pick_follower(scenario)
    fault = inject(scenario, f"kill -9 rmq-{victim} (follower)", producer)
    STACK.node(victim).kill()
    restart_after_traffic_goes_on(scenario, fault, victim)
    finish(scenario, producer, [fault])


@SHARDED
def test_rmq_kill_quorum_leader_and_restart(scenario: Scenario) -> None:
    producer = scenario.start_all(COUNT, SIZE, rate=20)
    scenario.wait_flowing()
    victim, led = pick_leader(scenario)
    fault = inject(scenario, f"kill -9 rmq-{victim} (leader of {len(led)} queues)", producer, led=led)
    STACK.node(victim).kill()
    victim_name = STACK.node(victim).node_name
    wait_until(
        lambda: all(node != victim_name for node in queue_leaders(led).values()),
        60,
        f"new leaders for the queues rmq-{victim} led",
        poll=0.2,
    )
    fault.notes["new_leaders_after_s"] = round(time.time() - fault.at, 2)
    restart_after_traffic_goes_on(scenario, fault, victim)
    finish(scenario, producer, [fault])


def test_rmq_graceful_stop_and_restart(scenario: Scenario) -> None:
    producer = scenario.start_all(COUNT, SIZE, rate=15)
    scenario.wait_flowing()
    victim, led = pick_leader(scenario)
    fault = inject(scenario, f"graceful stop rmq-{victim} (leader of {len(led)} queues)", producer, led=led)
    STACK.node(victim).stop()
    fault.notes["stop_took_s"] = round(time.time() - fault.at, 2)
    restart_after_traffic_goes_on(scenario, fault, victim)
    finish(scenario, producer, [fault])


def test_rmq_rolling_restart(scenario: Scenario) -> None:
    """Like a `helm upgrade` of the StatefulSet: highest ordinal first, each node stopped only
    when no quorum queue depends on it, started, and rejoined before the next one."""
    producer = scenario.start_all(COUNT, SIZE, rate=5)
    scenario.wait_flowing(acks_per_recipient=5, published=10)
    faults = []
    for n in (2, 1, 0):
        wait_not_quorum_critical(n, 120, poll=0.5)
        fault = inject(scenario, f"rolling restart: rmq-{n}", producer)
        STACK.node(n).stop()
        restart_after_traffic_goes_on(scenario, fault, n, progress=3)
        faults.append(fault)
    finish(scenario, producer, faults)


# ----------------------------------------------------------------------- our processes --


@SHARDED
def test_coordinator_kill_and_restart(scenario: Scenario) -> None:
    producer = scenario.start_all(COUNT, SIZE, rate=20)
    scenario.wait_flowing()
    assert scenario.coordinator is not None
    wait_until(lambda: scenario.ledger.states(scenario.job).get("deleted", 0) >= 20, 30, "the coordinator deleting")
    # The coordinator queues are shared: another coordinator on the stack (a concurrent test
    # session, a benchmark) would take over at once and hide this one's recovery.
    others = max(queue_consumers(scenario.coordinator_queues).values()) - 1
    fault = inject(scenario, "kill -9 coordinator", producer, other_coordinators=others)
    scenario.coordinator.kill()
    # The rest keeps working without it: pointers confirmed, payloads verified, ACKs queued.
    scenario.wait_progress_after(fault.at, published=20, acks=20, what="traffic to continue without a coordinator")
    if others == 0:
        recorded = scenario.ledger.write_times(scenario.job)
        assert not [t for t in recorded if t > fault.at + 0.5], "ledger writes while no coordinator was running"
    fault.restored_at = time.time()
    scenario.coordinator.start()
    scenario.wait_coordinator_ready()
    finish(scenario, producer, [fault])


def in_flight(consumer: Component, recipient: str) -> int:
    """Pointers this replica received but has not finished verifying: with prefetch = workers,
    each of them is being downloaded (and hashed, decompressed) right now."""
    values = consumer.metrics()
    label = f'{{recipient="{recipient}"}}'
    received = values.get(f"claimcheck_consumer_pointers_received_total{label}", 0.0)
    verified = values.get(f"claimcheck_consumer_payloads_verified_total{label}", 0.0)
    return int(received - verified) if verified >= 1 else 0


def test_consumer_kill_mid_download_and_restart(scenario: Scenario) -> None:
    """kill -9 of a billing replica after its first ACK, while it streams 8 MB payloads (its
    metrics show pointers received but not yet verified); its unacknowledged pointers go back
    to the queue and are verified by a live replica."""
    count = 20
    scenario.start_coordinator()
    scenario.start_consumers()
    producer = scenario.start_producer(count, "8MB", rate=0)
    victim = scenario.consumers[0]
    recipient = victim.name.removeprefix("consumer-").rsplit("-", 1)[0]
    assert recipient.startswith("billing-")

    wait_until(lambda: in_flight(victim, recipient), 90, f"{victim.name} verified one payload and downloads more", poll=0.02)
    fault = inject(scenario, "kill -9 consumer mid-download", producer)
    killed_as = re.findall(r"consumer (\S+) started", "\n".join(victim.messages()))[-1]
    victim.kill()
    fault.notes["acked_before_kill"] = len(scenario.acked_log([victim]))
    lines = len(victim.messages())
    fault.restored_at = time.time()
    victim.start()
    scenario.wait_consuming(victim, since_line=lines)
    finish(scenario, producer, [fault], expected=count)
    # Every object was verified by billing; what the killed replica held went to live replicas.
    rows = scenario.ledger.query(
        "SELECT a.consumer, count(*) FROM acks a JOIN objects o USING (object_id) WHERE o.job = %s AND a.recipient = %s"
        " GROUP BY 1",
        scenario.job,
        recipient,
    )
    by_consumer = dict(rows)
    fault.notes["billing_acks_by_replica"] = {("killed" if k == killed_as else k): v for k, v in by_consumer.items()}
    assert sum(by_consumer.values()) == count


@SHARDED
def test_producer_kill_between_upload_and_publish(scenario: Scenario) -> None:
    """A kill -9 mid-run can leave objects uploaded but never published: orphans. Every published
    object is handled; the orphans stay under the job's prefix until the sweeper, configured with
    a short grace period, removes them, and it touches no published object."""
    grace = 15
    coordinator_env = {"CLAIMCHECK_SWEEP_GRACE_SECONDS": str(grace), "CLAIMCHECK_SWEEP_INTERVAL_SECONDS": "1"}
    producer = scenario.start_all(1000, SIZE, rate=40, coordinator_env=coordinator_env)
    scenario.wait_flowing(published=60)
    fault = inject(scenario, "kill -9 producer mid-run", producer)
    producer.kill()
    killed_published = {object_id for _, object_id in scenario.published_log()}
    # The producer's Job is restarted with the same job id; it stores and publishes new payloads.
    fault.restored_at = time.time()
    rerun = scenario.start_producer(50, SIZE, rate=0)
    assert rerun.wait(120).returncode == 0, f"the restarted producer failed:\n{rerun.tail()}"
    wait_until(lambda: not any(scenario.recipient_queue_depths().values()), 60, "the recipient queues drained")
    result = assert_job_complete(scenario, expected=None, allow_orphans=True)
    published = scenario.ledger.published_ids(scenario.job)
    assert killed_published <= published
    assert len(published) >= len(killed_published) + 50
    orphans = result["orphans"]
    fault.notes.update(
        published_by_killed_run=len(killed_published),
        orphans=len(orphans),
        possibly_published_unlogged=len(published) - len(killed_published) - 50,
    )
    print(f"\n{scenario.name}: {len(orphans)} orphans (uploaded, never published) under {scenario.job}/, e.g. {orphans[:3]}")
    if not orphans and not scenario.ledger.states(scenario.job).get("swept"):
        # The producer paces uploads, so the kill can land where no upload was waiting for its
        # publish. Leave what such a kill leaves, payloads stored under the job and never
        # published, so the sweep below is always exercised.
        for seq in range(3):
            store_payload(scenario.s3, scenario.settings, scenario.job, 10_000 + seq, 8_000, ["orphan"])
        fault.notes["orphans_made_by_the_test"] = 3
    # Swept after the grace period; the published objects are untouched by the sweeper.
    assert_job_complete_after_sweep(scenario, grace)
    scenario.measure_recovery(fault)


def assert_job_complete_after_sweep(scenario: Scenario, grace: float) -> None:
    started = time.time()
    wait_until(
        lambda: not store.list_keys(scenario.s3, scenario.settings.s3_bucket, f"{scenario.job}/"),
        grace + 60,
        "the orphans swept",
        poll=0.5,
    )
    assert_job_complete(scenario, expected=None, allow_orphans=False)
    swept = scenario.ledger.query(
        "SELECT count(*) FROM objects WHERE job = %s AND swept_at IS NOT NULL AND pointer_seen_at IS NULL", scenario.job
    )[0][0]
    wrongly = scenario.ledger.query(
        "SELECT object_id FROM objects WHERE job = %s AND swept_at IS NOT NULL AND pointer_seen_at IS NOT NULL",
        scenario.job,
    )
    assert not wrongly, f"the sweeper removed published objects: {wrongly[:5]}"
    assert swept > 0, "nothing was swept"
    print(f"{scenario.name}: the sweeper removed {swept} orphans, {time.time() - started:.1f} s after the check began")


# ---------------------------------------------------------------- PostgreSQL, S3, HAProxy --


def test_postgres_restart(scenario: Scenario) -> None:
    producer = scenario.start_all(COUNT, SIZE, rate=20)
    scenario.wait_flowing()
    fault = inject(scenario, "PostgreSQL stop/start", producer)
    STACK.postgresql.stop()
    # The broker side keeps flowing while the ledger is down; then the ledger comes back.
    scenario.wait_progress_after(fault.at, published=40, acks=40, what="traffic to continue without the ledger")
    STACK.postgresql.start()
    fault.restored_at = time.time()
    finish(scenario, producer, [fault])


def test_s3_stop_and_restart(scenario: Scenario) -> None:
    """Payloads of 256 KB uploaded one at a time, so the producer is still storing when S3 goes."""
    producer = scenario.start_all(COUNT, "256KB", rate=0, parallelism=1)
    scenario.wait_flowing()
    fault = inject(scenario, "S3 stop/start", producer)
    STACK.s3.stop()
    # Down until the clients demonstrably stalled: no confirmed publish or ACK for 2 s.
    scenario.wait_quiet(2.0, 30, "traffic to stall without S3")
    fault.notes["stalled_after_s"] = round(time.time() - fault.at - 2.0, 2)
    STACK.s3.start()
    fault.restored_at = time.time()
    finish(scenario, producer, [fault])


def test_haproxy_restart(scenario: Scenario) -> None:
    producer = scenario.start_all(COUNT, SIZE, rate=20)
    scenario.wait_flowing()
    fault = inject(scenario, "HAProxy restart", producer)
    STACK.haproxy.restart()
    fault.restored_at = time.time()
    finish(scenario, producer, [fault])


# ------------------------------------------------------------------------- hostile input --


def hostile_messages() -> list[tuple[bytes, "_ArgumentMapping"]]:
    """Forged, malformed, oversized and odd-header messages; none of them may be processed."""
    return [
        (b"{}", {KEY_ID_HEADER: "local", SIGNATURE_HEADER: "\u00e9" * 64}),  # crashed every process before
        (b"{}", {KEY_ID_HEADER: ["local"], SIGNATURE_HEADER: 7, "x-delivery-count": "many"}),
        (b"[" * 50_000, {}),
        (b"\xff\xfe\xfd", {KEY_ID_HEADER: "local", SIGNATURE_HEADER: "00" * 32}),
        (b"x" * 100_000, {}),
        (b'{"type": "pointer", "version": 1}', {"x-padding": "p" * 30_000}),
    ]


@SHARDED
def test_hostile_burst_into_every_queue_during_a_run(scenario: Scenario) -> None:
    """Hundreds of such messages into the coordinator's queues and every recipient's queue while
    traffic flows: each one is dead-lettered, no process stops, the run completes untouched."""
    producer = scenario.start_all(COUNT, SIZE, rate=20)
    scenario.wait_flowing()
    fault = inject(scenario, "hostile burst into every queue", producer)
    routes = [(exchange, routing_key) for _, exchange, routing_key in topology.coordinator_queues(range(scenario.shards))]
    routes += [(topology.POINTER_EXCHANGE, recipient) for recipient in scenario.recipients]
    prefix = f"hostile-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(scenario.settings.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        sent = 0
        for round_ in range(15):
            for kind, (body, headers) in enumerate(hostile_messages()):
                for exchange, routing_key in routes:
                    channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(
                        message_id=f"{prefix}-{round_}-{kind}-{routing_key}", headers=headers), mandatory=True)
                    sent += 1
    finally:
        connection.close()
    fault.restored_at = time.time()
    fault.notes["hostile_messages"] = sent

    # Counted in the dead-letter queue: another coordinator on the stack (the integration tests'
    # in-process one, in the same session) may be the one that parks a message.
    wait_until(lambda: parked(scenario, prefix) >= sent, 120, f"all {sent} hostile messages dead-lettered", poll=0.5)
    assert parked(scenario, prefix) == sent, "a hostile message was dead-lettered twice"
    finish(scenario, producer, [fault])
    stopped = [c.name for c in [scenario.coordinator, *scenario.consumers] if c is not None and not c.alive]
    assert not stopped, f"components stopped by hostile input: {stopped}"


_PARKED: dict[str, int] = {}


def parked(scenario: Scenario, prefix: str) -> int:
    """How many messages whose id starts with ``prefix`` reached the dead-letter queue so far."""
    connection = pika.BlockingConnection(pika.URLParameters(scenario.settings.amqp_url))
    try:
        channel = connection.channel()
        while True:
            method, properties, _ = channel.basic_get(topology.DEAD_LETTER_QUEUE, auto_ack=True)
            if method is None:
                return _PARKED.get(prefix, 0)
            if properties is not None and (properties.message_id or "").startswith(f"{prefix}-"):
                _PARKED[prefix] = _PARKED.get(prefix, 0) + 1
    finally:
        connection.close()
