"""Broker refusals that no retry can fix end publishers and consumers at once, with one line
naming the cause, against the real cluster behind HAProxy: wrong password, missing virtual
host, a user without access or permissions, a queue declared elsewhere with other arguments,
and (where the stack sets a small max_message_size) an oversized message. The CLI prints that
line and exits non-zero instead of reconnecting forever."""

import json
import os
import subprocess
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from claimcheck import topology
from claimcheck.config import Settings
from claimcheck.consumer import RecipientConsumer
from claimcheck.localstack.daemons import StackError
from claimcheck.localstack.services import LocalStack
from claimcheck.publisher import BrokerRefused, BrokerSession, parameters
from tests.testkit import management, unique

CLAIMCHECK = Path(sys.executable).with_name("claimcheck")
DEADLINE = 20.0  # seconds a refused component may take to give up; a retry loop never would


def with_amqp(settings: Settings, user: str | None = None, password: str | None = None, vhost: str | None = None) -> str:
    """The stack's AMQP URL with another user, password or virtual host."""
    parts = urllib.parse.urlsplit(settings.amqp_url)
    host = parts.netloc.rpartition("@")[2]
    user = user if user is not None else parts.username or "guest"
    password = password if password is not None else parts.password or "guest"
    path = "/" + urllib.parse.quote(vhost, safe="") if vhost is not None else parts.path
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}", path=path))


def refusal_within_deadline(run: Callable[[], Any]) -> BrokerRefused:
    """Run ``run`` on a thread; it must raise BrokerRefused before the deadline."""
    finished = threading.Event()
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            run()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)
        finally:
            finished.set()

    threading.Thread(target=target, name="refused", daemon=True).start()
    assert finished.wait(DEADLINE), f"still retrying after {DEADLINE:.0f} s instead of giving up on a refusal"
    error = outcome[0]
    assert isinstance(error, BrokerRefused), f"expected BrokerRefused, got {error!r}"
    assert "\n" not in str(error)
    return error


def publish_once(url: str, declare: Callable[[Any], None] = topology.declare) -> None:
    session = BrokerSession(url, declare, confirm_timeout=5)
    try:
        session.publish(topology.POINTER_EXCHANGE, "nowhere", b"{}", message_id=uuid.uuid4().hex)
    finally:
        session.close()


def consume(settings: Settings, recipient: str) -> Callable[[], None]:
    """A real recipient consumer's run, on a stop event nobody sets: only an error ends it."""
    return lambda: RecipientConsumer(settings, recipient, workers=1).run(threading.Event())


@pytest.fixture
def temporary_user() -> Iterator[Callable[..., tuple[str, str]]]:
    """Create RabbitMQ users (optionally with permissions on vhost '/'); all deleted afterwards."""
    made: list[str] = []

    def make(permissions: dict[str, str] | None = None) -> tuple[str, str]:
        name, password = f"claimcheck-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        made.append(name)
        management("PUT", f"/users/{name}", {"password": password, "tags": ""})
        if permissions is not None:
            management("PUT", f"/permissions/%2F/{name}", permissions)
        return name, password

    yield make
    for name in made:
        management("DELETE", f"/users/{name}")


def test_a_wrong_password_stops_publisher_and_consumer(settings: Settings) -> None:
    url = with_amqp(settings, password="not-the-password")
    for run in (lambda: publish_once(url), consume(settings.model_copy(update={"amqp_url": url}), "billing")):
        error = refusal_within_deadline(run)
        assert "403" in str(error) and "password" in str(error)
        assert "not-the-password" not in str(error)


def test_a_missing_virtual_host_stops_publisher_and_consumer(settings: Settings) -> None:
    vhost = f"claimcheck-missing-{uuid.uuid4().hex[:8]}"
    url = with_amqp(settings, vhost=vhost)
    for run in (lambda: publish_once(url), consume(settings.model_copy(update={"amqp_url": url}), "billing")):
        error = refusal_within_deadline(run)
        assert "530" in str(error) and vhost in str(error)


def test_a_user_without_access_to_the_virtual_host_is_refused(
    settings: Settings, temporary_user: Callable[..., tuple[str, str]]
) -> None:
    user, password = temporary_user()
    url = with_amqp(settings, user=user, password=password)
    for run in (lambda: publish_once(url), consume(settings.model_copy(update={"amqp_url": url}), "billing")):
        error = refusal_within_deadline(run)
        assert "530" in str(error) and user in str(error)


def test_a_user_without_permissions_is_refused(
    settings: Settings, temporary_user: Callable[..., tuple[str, str]]
) -> None:
    user, password = temporary_user({"configure": "^$", "write": "^$", "read": "^$"})
    url = with_amqp(settings, user=user, password=password)
    for run in (lambda: publish_once(url), consume(settings.model_copy(update={"amqp_url": url}), "billing")):
        error = refusal_within_deadline(run)
        assert "403" in str(error) and "ACCESS_REFUSED" in str(error) and "permission" in str(error)


def test_a_queue_declared_with_other_arguments_is_refused(settings: Settings) -> None:
    recipient = unique("refused")  # not provisioned: the test declares its queue wrongly first
    queue = topology.recipient_queue(recipient)
    connection = pika.BlockingConnection(parameters(settings.amqp_url))
    try:
        connection.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "classic"})
        declare_recipient: Callable[[Any], None] = lambda channel: topology.declare(channel, [recipient])  # noqa: E731
        for run in (lambda: publish_once(settings.amqp_url, declare_recipient), consume(settings, recipient)):
            error = refusal_within_deadline(run)
            assert "406" in str(error) and "inequivalent arg" in str(error) and queue in str(error)
    finally:
        if not connection.is_open:
            connection = pika.BlockingConnection(parameters(settings.amqp_url))
        connection.channel().queue_delete(queue)
        connection.close()


def configured_max_message_size() -> int | None:
    try:
        text = LocalStack.from_env().node(0).rabbitmqctl("eval", "application:get_env(rabbit, max_message_size).", timeout=60)
    except StackError:
        return None
    text = text.strip()
    return int(text.removeprefix("{ok,").rstrip("}")) if text.startswith("{ok,") else None


def test_a_message_over_the_brokers_max_message_size_is_refused(
    settings: Settings, recipients: Callable[..., list[str]]
) -> None:
    limit = configured_max_message_size()
    if limit is None or limit > 8 * 1024 * 1024:
        pytest.skip(f"the stack's max_message_size is {limit}: set a small one in localstack/templates/rabbitmq.conf.tmpl")
    (recipient,) = recipients("oversized")
    session = BrokerSession(settings.amqp_url, lambda channel: topology.declare(channel, [recipient]), confirm_timeout=5)
    try:
        error = refusal_within_deadline(
            lambda: session.publish(topology.POINTER_EXCHANGE, recipient, b"x" * (limit + 1), message_id="oversized")
        )
    finally:
        session.close()
    assert "406" in str(error) and "max_message_size" in str(error)


def cli_error_lines(stderr: str) -> list[str]:
    """stderr without INFO/DEBUG log records: what the command reports as going wrong."""
    lines = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("level") in ("DEBUG", "INFO"):
            continue
        lines.append(line)
    return lines


@pytest.mark.parametrize(
    "arguments",
    [["producer", "--count", "1", "--size", "1KB", "--recipients", "billing"], ["consumer", "--recipient", "billing"]],
    ids=["producer", "consumer"],
)
def test_the_cli_reports_a_refusal_in_one_line_and_exits(settings: Settings, arguments: list[str]) -> None:
    env = os.environ | {
        "CLAIMCHECK_AMQP_URL": with_amqp(settings, password="not-the-password"),
        "CLAIMCHECK_LOG_FORMAT": "json",
    }
    try:
        result = subprocess.run([str(CLAIMCHECK), *arguments], capture_output=True, text=True, env=env,
                                timeout=60, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"claimcheck {arguments[0]} kept retrying a refused login; stderr so far: {exc.stderr!r}")
    assert result.returncode != 0
    errors = cli_error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("claimcheck: error: ")
    assert "403" in errors[0] and "password" in errors[0]
    assert "not-the-password" not in result.stderr
