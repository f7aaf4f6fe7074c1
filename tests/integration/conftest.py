"""Fixtures for tests against the real local stack (``make up``): RabbitMQ cluster behind
HAProxy, PostgreSQL and SeaweedFS. A stack that is not running fails the tests loudly."""

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pika
import psycopg2
import pytest

from claimcheck import Consumer, Message, store, topology
from claimcheck.config import Settings
from claimcheck.consumer import Hook, RecipientConsumer, noop_hook
from claimcheck.coordinator import Coordinator
from claimcheck.ledger import Ledger
from claimcheck.migrate import migrate
from claimcheck.producer import store_payload
from claimcheck.protocol import Pointer
from claimcheck.provisioning import provision
from claimcheck.publisher import BrokerSession, parameters
from claimcheck.sweeper import PointerQueueBarrier
from tests import testkit
from tests.integration.integration_helpers import DeadLetters, LocalKeys, Running, free_port, unique, wait_until
from tests.testkit import reachable, require_stack

s3 = testkit.s3  # the shared session fixture


@pytest.fixture(scope="session")
def settings() -> Settings:
    config = Settings()
    require_stack(config)
    return config


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> None:
    migrate(settings.database_url)


@pytest.fixture
def ledger(settings: Settings, migrated: None) -> Iterator[Ledger]:
    instance = Ledger(settings.database_url)
    yield instance
    instance.close()


@pytest.fixture
def barrier(settings: Settings, ledger: Ledger, coordinator_url: str) -> PointerQueueBarrier:
    """The sweeper's barrier through the coordinator's pointer queue (applied by the session's coordinator)."""
    return PointerQueueBarrier(settings, ledger)


@pytest.fixture
def db(settings: Settings, migrated: None) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """Run a query against the ledger database and return its rows."""
    connection = psycopg2.connect(settings.database_url)
    connection.autocommit = True

    def query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall() if cursor.description else []

    yield query
    connection.close()


@pytest.fixture(scope="session")
def coordinator_url(settings: Settings, migrated: None) -> Iterator[str]:
    """One coordinator for the whole session, in this process, on a free port."""
    port = free_port()
    running = Running("coordinator", lambda stop: Coordinator(settings).run(stop, port))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: reachable(url, port), 30, "the coordinator's HTTP endpoint")
    yield url
    running.stop()


@pytest.fixture
def recipients(settings: Settings) -> Iterator[Callable[..., list[str]]]:
    """Make unique recipient groups, provisioned (their queues declared) as `make up` does for
    billing and audit; their queues are deleted after the test."""
    made: list[str] = []

    def make(*bases: str) -> list[str]:
        names = [unique(base) for base in bases]
        made.extend(names)
        provision(settings.amqp_url, settings.management_url, names, [])
        return names

    yield make
    if made:
        connection = pika.BlockingConnection(parameters(settings.amqp_url))
        channel = connection.channel()
        for name in made:
            channel.queue_delete(topology.recipient_queue(name))
        connection.close()


@pytest.fixture
def running() -> Iterator[Callable[[str, Callable[[threading.Event], None], threading.Event], None]]:
    """Run components in threads until they consume; all are stopped after the test."""
    started: list[Running] = []

    def start(name: str, run: Callable[[threading.Event], None], consuming: threading.Event) -> None:
        started.append(Running(name, run))
        # Consuming means its queue is declared: producers check that every recipient has one.
        wait_until(consuming.is_set, 30, f"{name} consuming")

    yield start
    for item in started:
        item.stop()


@pytest.fixture
def start_consumer(settings: Settings, running: Any) -> Callable[..., RecipientConsumer]:
    """Start consumer replicas in threads; all are stopped after the test."""

    def start(recipient: str, hook: Hook = noop_hook, workers: int = 4) -> RecipientConsumer:
        replica = RecipientConsumer(settings, recipient, hook, workers)
        running(f"consumer-{recipient}", replica.run, replica.consuming)
        return replica

    return start


@pytest.fixture
def library(settings: Settings, coordinator_url: str) -> Settings:
    """Settings as an application passes them in code, pointing at the session's coordinator."""
    return settings.model_copy(update={"coordinator_url": coordinator_url})


@pytest.fixture
def start_library_consumer(library: Settings, running: Any) -> Callable[..., Consumer]:
    """Start library Consumers (the public API) in threads; all are stopped after the test."""

    def start(group: str, handler: Callable[[Message], None], settings: Settings | None = None,
              workers: int = 2) -> Consumer:
        consumer = Consumer(group, handler, workers=workers, settings=settings or library)
        running(f"library-{group}", consumer.run, consumer.consuming)
        return consumer

    return start


@pytest.fixture
def broker(settings: Settings) -> Iterator[BrokerSession]:
    """A confirming publisher for hand-made pointers and ACKs."""
    session = BrokerSession(settings.amqp_url, topology.declare)
    yield session
    session.close()


@pytest.fixture(scope="session")
def keyring(settings: Settings) -> LocalKeys:
    return LocalKeys(settings)


@pytest.fixture
def dead_letters(settings: Settings) -> DeadLetters:
    return DeadLetters(settings.amqp_url)


@pytest.fixture
def stored(settings: Settings, s3: Any, broker: BrokerSession) -> Callable[..., Pointer]:
    """Upload one payload and return its pointer (not yet published); declares the recipients' queues."""

    def make(recipients: list[str], size: int = 20_000, job: str | None = None) -> Pointer:
        channel = broker.channel()
        topology.declare(channel, recipients)
        return store_payload(s3, settings, job or unique("job"), 0, size, recipients)

    return make


@pytest.fixture
def object_exists(settings: Settings, s3: Any) -> Callable[[Pointer], bool]:
    def exists(pointer: Pointer) -> bool:
        return bool(store.list_keys(s3, *pointer.stored[:2]))

    return exists
