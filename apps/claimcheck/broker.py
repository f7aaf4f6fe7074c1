"""Publish step: one AMQP connection that reconnects itself and publishes with confirms.

Every publish is persistent, mandatory and confirmed. A NACK, a confirm that does not come
within the timeout (seen during quorum leader elections) or a lost connection throws the
connection away and retries on a fresh one; a retry may duplicate a message, which the ledger
absorbs. An unroutable message is an error, never silence.
"""

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_random_exponential

from claimcheck import metrics

log = logging.getLogger(__name__)

Declare = Callable[[BlockingChannel], None]


class ConfirmTimeout(Exception):
    """The broker neither confirmed nor rejected a publish in time."""


class Unroutable(Exception):
    """The broker had no queue for a mandatory message."""


RETRYABLE = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.NackError,
    pika.exceptions.StreamLostError,
    ConfirmTimeout,
    ConnectionError,
    OSError,
)

_log_retry = before_sleep_log(log, logging.WARNING)


def _before_retry(state: Any) -> None:
    _log_retry(state)
    metrics.count_publish_retry(state)


reconnecting = retry(
    retry=retry_if_exception_type(RETRYABLE),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(300),
    before_sleep=_before_retry,
    reraise=True,
)


def parameters(url: str, confirm_timeout: float = 15.0) -> pika.URLParameters:
    """Connection parameters with heartbeats on and a bounded connect time.

    A connection the broker blocks (memory or disk alarm) is dropped by pika a little before a
    confirm would time out: a blocked broker stops reading, so it could not even be closed
    politely, and the publish is retried on a fresh connection instead.
    """
    params = pika.URLParameters(url)
    params.heartbeat = 30
    params.blocked_connection_timeout = confirm_timeout * 0.8
    params.socket_timeout = 10
    params.connection_attempts = 1
    return params


class BrokerSession:
    """A lazily (re)opened connection with a confirming channel; not thread-safe."""

    def __init__(self, url: str, declare: Declare, confirm_timeout: float = 15.0) -> None:
        self._url = url
        self._declare = declare
        self._confirm_timeout = confirm_timeout
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._connects = 0

    def channel(self) -> BlockingChannel:
        """The open channel, connecting and declaring the topology first if needed."""
        if self._channel is None or not self._channel.is_open:
            if self._connects:  # not the first connection: an earlier one was lost
                metrics.CONNECTION_RECOVERIES.labels("publish", "broker").inc()
            self._connects += 1
            self.close()
            self._connection = BlockingConnection(parameters(self._url, self._confirm_timeout))
            channel = self._connection.channel()
            self._declare(channel)
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def close(self) -> None:
        """Close the connection, ignoring errors from one that already died."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a dying connection may fail any way
                log.debug("closing a broken connection failed", exc_info=True)

    @reconnecting
    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm, retrying on a fresh connection."""
        channel = self.channel()
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=message_id,
            headers=dict(headers or {}),
        )
        assert self._connection is not None
        # BlockingConnection.call_later timers only fire inside process_data_events, never while
        # basic_publish waits for its confirm, so the deadline is set on the underlying ioloop.
        ioloop = self._connection._impl.ioloop  # noqa: SLF001 - see above
        timer = ioloop.call_later(self._confirm_timeout, self._confirm_timed_out)
        try:
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise Unroutable(f"no queue bound for {exchange!r} / {routing_key!r}") from None
        except RETRYABLE:
            self.close()
            raise
        finally:
            ioloop.remove_timeout(timer)

    def _confirm_timed_out(self) -> None:
        raise ConfirmTimeout(f"no publisher confirm within {self._confirm_timeout:.0f} s")
