"""Helpers every suite that talks to the local stack shares: deadlines, free ports, unique names,
and the ``s3`` fixture (a suite's conftest imports it; it uses that suite's ``settings``)."""

import base64
import json
import socket
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import pika
import psycopg2
import psycopg2.errors
import pytest
from prometheus_client import REGISTRY
from psycopg2 import extensions as pg

from claimcheck import metrics, store, topology
from claimcheck.config import Settings
from claimcheck.localstack.ports import HOST, LOCAL
from claimcheck.localstack.ports import free_port as free_port  # re-exported for the suites
from claimcheck.migrate import migrate

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None | Literal[False]],
    timeout: float,
    what: str,
    poll: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline.

    Exceptions listed in ``tolerate`` (a dependency that is down on purpose) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    value: T | Literal[False] | None = None
    last_error: BaseException | None = None
    while True:
        try:
            value, last_error = predicate(), None
        except tolerate as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"last error {last_error!r}" if last_error else f"last value {value!r}"
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {detail}")
        time.sleep(poll)


def counted(name: str, **labels: str) -> float:
    """A counter's current value in this process's metrics registry (0 before its first increment).

    Registers claimcheck's metrics first: importing the library registers none, and a test run
    alone must not depend on an earlier test having served metrics."""
    metrics.register()
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unique(name: str) -> str:
    """A recipient or job name no other test run uses, so queues never share leftovers."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def reachable(url: str, default_port: int) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port."""
    parsed = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_stack(config: Settings) -> None:
    """Fail loudly, naming the service, unless the local stack answers (tests never skip it)."""
    for name, url, port in [
        ("RabbitMQ (HAProxy)", config.amqp_url, 5672),
        ("PostgreSQL", config.database_url, 5432),
        ("S3", config.s3_endpoint_url, 80),
    ]:
        if not reachable(url, port):
            pytest.fail(f"{name} is not reachable at {url}: start the local stack with `make up`")


@pytest.fixture(scope="session")
def s3(settings: Settings) -> Any:
    """A boto3 client for the stack's S3, with the configured bucket created."""
    client = store.client(settings)
    store.ensure_bucket(client, settings.s3_bucket)
    return client


MANAGEMENT_API = f"http://{HOST}:{LOCAL.management}/api"  # RabbitMQ's management API through HAProxy


def management(method: str, path: str, body: Any = None) -> Any:
    """Call the local broker's management API as guest; the decoded JSON answer, or None."""
    request = urllib.request.Request(
        f"{MANAGEMENT_API}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


@contextmanager
def temporary_vhost(amqp_url: str, shards: int = 1) -> Iterator[str]:
    """A fresh vhost that guest may use, provisioned with ``shards`` coordinator shards; yields
    ``amqp_url`` pointing at it, deletes it afterwards."""
    name = unique("cc-test")
    management("PUT", f"/vhosts/{name}", {})
    management("PUT", f"/permissions/{name}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    parsed = urllib.parse.urlsplit(amqp_url)
    url = urllib.parse.urlunsplit(parsed._replace(path=f"/{name}"))
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            topology.declare(connection.channel(), shards=shards)  # what provisioning does for a real vhost
        finally:
            connection.close()
        yield url
    finally:
        management("DELETE", f"/vhosts/{name}")


@contextmanager
def temporary_database(dsn: str) -> Iterator[str]:
    """A fresh ledger database beside ``dsn``'s, migrated; yields its DSN, drops it afterwards."""
    name = unique("cc_test").replace("-", "_")
    admin = psycopg2.connect(dsn, connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        temporary = urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(path=f"/{name}"))
        migrate(temporary)
        yield temporary
    finally:
        drop_database(admin, name)
        admin.close()


def drop_database(admin: pg.connection, name: str) -> None:
    """Drop ``name``, ending its sessions; retried while an autovacuum worker (a superuser's
    session, which a non-superuser may not end) is still busy in it."""

    def dropped() -> bool:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return True

    wait_until(dropped, 60, f"database {name} dropped", poll=0.5,
               tolerate=(psycopg2.errors.InsufficientPrivilege, psycopg2.errors.ObjectInUse))
