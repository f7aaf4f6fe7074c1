"""Fixtures of the observability tests: one real run through the local stack, scraped by the
local Prometheus (``make up`` starts it, claimcheck/localstack).

The run is isolated from whatever else uses the stack at the same time (other tests, a demo,
benchmarks, fault injection): its own RabbitMQ vhost, ledger database and bucket, so its
coordinator sees only its own messages and every counter can be checked exactly. The
coordinator and the two recipient groups run as real processes with ``--http-port``; the
producer runs in this process and serves its metrics the way ``claimcheck producer --http-port``
does. Their ports are handed to Prometheus as a file_sd file.
"""

import functools
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import psycopg2
import pytest

from claimcheck import producer as producing
from claimcheck import store, topology
from claimcheck.config import Settings
from claimcheck.httpapi import routes_for, serve
from claimcheck.localstack.ports import LOCAL
from claimcheck.migrate import migrate
from claimcheck.publisher import parameters
from tests.observability.observability_support import (
    PROMETHEUS_URL,
    ObservedRun,
    free_port,
    get_json,
    http_delete,
    http_put,
    reachable,
    scrape,
    wait_until,
)
from tests.testkit import MANAGEMENT_API

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("CLAIMCHECK_STACK_DIR", ROOT / ".stack"))
TARGETS_DIR = STACK_DIR / "prometheus" / "targets"
VHOST = "claimcheck-observability"
DATABASE = "claimcheck_observability"
BUCKET = "claimcheck-observability"
RECIPIENTS = ("audit", "billing")
COUNT = 8
SIZE = 64 * 1024


def _isolated_settings(base: Settings) -> Settings:
    amqp = urllib.parse.urlparse(base.amqp_url)
    database = urllib.parse.urlparse(base.database_url)
    return base.model_copy(update={
        "amqp_url": urllib.parse.urlunparse(amqp._replace(path="/" + VHOST)),
        "database_url": urllib.parse.urlunparse(database._replace(path="/" + DATABASE)),
        "s3_bucket": BUCKET,
    })


def _fresh_vhost(settings: Settings) -> None:
    api = MANAGEMENT_API

    def recreate() -> bool:
        try:
            http_delete(f"{api}/vhosts/{VHOST}")
            http_put(f"{api}/vhosts/{VHOST}", {})
            http_put(f"{api}/permissions/{VHOST}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        except OSError:
            return False
        return True

    wait_until(recreate, 120, f"RabbitMQ management API to create vhost {VHOST}", poll=1.0)

    def declared() -> bool:
        try:
            connection = pika.BlockingConnection(parameters(settings.amqp_url))
        except (pika.exceptions.AMQPError, OSError):
            return False
        try:
            topology.declare(connection.channel(), list(RECIPIENTS))
        finally:
            connection.close()
        return True

    wait_until(declared, 120, f"the topology in vhost {VHOST}", poll=1.0)


def _fresh_database(base: Settings) -> None:
    connection = psycopg2.connect(base.database_url, connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
    connection.close()


@pytest.fixture(scope="session")
def observed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedRun]:
    base = Settings()
    if not reachable(LOCAL.prometheus):
        pytest.fail(f"Prometheus is not reachable at {PROMETHEUS_URL}: start the local stack with `make up`")
    settings = _isolated_settings(base)
    _fresh_database(base)
    migrate(settings.database_url)
    _fresh_vhost(settings)
    store.ensure_bucket(store.client(settings), BUCKET)

    logs_dir = tmp_path_factory.mktemp("observability-logs")
    coordinator_port = free_port()
    consumer_ports = {recipient: free_port() for recipient in RECIPIENTS}
    env = {
        **os.environ,
        "CLAIMCHECK_AMQP_URL": settings.amqp_url,
        "CLAIMCHECK_DATABASE_URL": settings.database_url,
        "CLAIMCHECK_S3_BUCKET": BUCKET,
        "CLAIMCHECK_COORDINATOR_URL": f"http://127.0.0.1:{coordinator_port}",
        "CLAIMCHECK_LOG_FORMAT": "json",
        "CLAIMCHECK_RECIPIENTS": "",
    }
    commands = {"coordinator": ["coordinator", "--http-port", str(coordinator_port)]}
    commands |= {f"consumer-{r}": ["consumer", "--recipient", r, "--http-port", str(p)] for r, p in consumer_ports.items()}
    processes: list[subprocess.Popen[bytes]] = []
    logs: dict[str, Path] = {}
    producer_port = free_port()
    server = serve(producer_port, routes_for(lambda: None, []), host="127.0.0.1")
    targets = TARGETS_DIR / f"observability-test-{os.getpid()}.json"
    try:
        for name, args in commands.items():
            logs[name] = logs_dir / f"{name}.log"
            with logs[name].open("wb") as log:
                processes.append(subprocess.Popen([sys.executable, "-m", "claimcheck", *args], env=env,
                                                  stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        TARGETS_DIR.mkdir(parents=True, exist_ok=True)
        file_sd = [
            {"targets": [f"127.0.0.1:{producer_port}"], "labels": {"job": "claimcheck-producer", "test": "observability"}},
            {"targets": [f"127.0.0.1:{coordinator_port}"], "labels": {"job": "claimcheck-coordinator", "test": "observability"}},
            {"targets": [f"127.0.0.1:{p}" for p in consumer_ports.values()],
             "labels": {"job": "claimcheck-consumer", "test": "observability"}},
        ]
        targets.with_suffix(".tmp").write_text(json.dumps(file_sd))
        targets.with_suffix(".tmp").rename(targets)  # Prometheus must never read half a file

        def ready(port: int) -> bool:
            """Whether the component on ``port`` is ready; fails at once if any component exited."""
            try:
                answered = get_json(f"http://127.0.0.1:{port}/readyz").get("status") == "ready"
            except OSError:
                answered = False
            return bool(answered) or _died(processes, logs)

        for name, port in [("coordinator", coordinator_port), *((f"consumer-{r}", p) for r, p in consumer_ports.items())]:
            wait_until(functools.partial(ready, port), 90, f"{name} ready on port {port}")

        before = scrape(producer_port)
        job = producing.new_job_id()
        report = producing.run(settings, producing.RunRequest(job, COUNT, SIZE, RECIPIENTS, parallelism=2))
        _publish_garbage(settings, "billing")

        def all_deleted() -> bool:
            progress = get_json(f"{env['CLAIMCHECK_COORDINATOR_URL']}/jobs/{job}")
            return progress["deleted"] >= COUNT or _died(processes, logs)

        wait_until(all_deleted, 120, f"all {COUNT} objects of {job} deleted")
        yield ObservedRun(job, COUNT, RECIPIENTS, producer_port, coordinator_port, consumer_ports, logs,
                          report.object_ids, before)
    finally:
        targets.unlink(missing_ok=True)
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        server.shutdown()


def _died(processes: list[subprocess.Popen[bytes]], logs: dict[str, Path]) -> bool:
    for process, (name, log) in zip(processes, logs.items(), strict=False):
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
    return False


def _publish_garbage(settings: Settings, recipient: str) -> None:
    """One unsigned, malformed pointer: the consumer must dead-letter it (a dead-letter metric moves)."""
    connection = pika.BlockingConnection(parameters(settings.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", topology.recipient_queue(recipient), b'{"type": "pointer", "garbage": true}',
                              pika.BasicProperties(message_id="observability-garbage", delivery_mode=2))
    finally:
        connection.close()

