"""The consume step's connection handling, shared by the coordinator and the recipients.

Modelled on pika's reconnecting consumer: when the connection or channel dies, the whole
connection is thrown away and a fresh one is built after a growing, jittered delay; the
topology is declared again on every connect. Deliveries are acknowledged only by the handler,
after its work is durable; anything unacknowledged when a connection dies is redelivered.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_random_exponential

from claimcheck import metrics
from claimcheck.publisher import RETRYABLE, Declare, parameters, refusal, refused, reported_by_caller

log = logging.getLogger(__name__)

# The broker's delivery counter is at most an unsigned 64-bit integer; anything else was forged.
MAX_DELIVERY_COUNT = 2**64 - 1


@dataclass(frozen=True)
class Delivery:
    """One message as it came off a queue, with the channel that must acknowledge it."""

    channel: BlockingChannel
    queue: str
    delivery_tag: int
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes

    @property
    def delivery_count(self) -> int:
        """Earlier deliveries of this message, as the quorum queue counts them.

        Total: anyone who can publish can also set this header to anything (a string, bytes, a
        table, a huge or negative number); whatever is not a count the broker could have set is 0.
        """
        headers = self.properties.headers
        value = headers.get("x-delivery-count", 0) if isinstance(headers, dict) else 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DELIVERY_COUNT:
            return 0
        return value

    def ack(self) -> None:
        """Acknowledge, unless the channel died meanwhile (then the broker redelivers it)."""
        if self.channel.is_open:
            self.channel.basic_ack(self.delivery_tag)

    def ack_through(self) -> None:
        """Acknowledge this delivery and every earlier one on its channel in one frame.

        Only for a consumer that settles its deliveries in order: anything earlier on the
        channel that is still unsettled would be acknowledged too.
        """
        if self.channel.is_open:
            self.channel.basic_ack(self.delivery_tag, multiple=True)

    def requeue(self) -> None:
        """Give the message back to the queue for another attempt."""
        if self.channel.is_open:
            self.channel.basic_nack(self.delivery_tag, requeue=True)


Handler = Callable[[Delivery], None]
# Returns None when the component's other dependencies (database, S3) answer, else why not.
Gate = Callable[[], str | None]


class DependencyDown(Exception):
    """Raised by a handler when the database or S3 stopped answering.

    The loop then closes the connection (unacknowledged messages go back to their queue) and
    does not consume again until the gate reports the dependency back, so an outage costs each
    in-flight message one redelivery instead of spinning through its delivery limit.
    """


class ConsumerLoop:
    """Consume ``queues`` with bounded prefetch until ``stop`` is set, reconnecting as needed."""

    def __init__(
        self,
        url: str,
        declare: Declare,
        queues: list[str],
        prefetch: int,
        handler: Handler,
        gate: Gate | None = None,
        after_read: Callable[[], None] | None = None,
    ) -> None:
        """``after_read`` runs on the connection's thread after each batch of deliveries was
        handed to ``handler``: a handler may buffer and do the work there, once per batch."""
        self._url = url
        self._gate = gate
        self._after_read = after_read
        self._declare = declare
        self._queues = queues
        self._prefetch = prefetch
        self._handler = handler
        self._connection: BlockingConnection | None = None
        self._deliveries = 0
        self.connected = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Block, consuming, until ``stop`` is set.

        Raises :class:`claimcheck.publisher.BrokerRefused` at once when the broker refuses something no reconnect
        can fix (credentials, permissions, virtual host, a queue declared with other arguments).
        """
        retrying = Retrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, (*RETRYABLE, DependencyDown)) and refusal(exc) is None and not stop.is_set()
            ),
            wait=wait_random_exponential(multiplier=0.1, max=3),
            stop=stop_never,
            before_sleep=self._before_reconnect,
            sleep=lambda seconds: None if stop.wait(seconds) else None,
            reraise=True,
        )
        try:
            retrying(self._consume_until, stop)
        except (*RETRYABLE, DependencyDown):
            if not stop.is_set():
                raise

    @staticmethod
    def _before_reconnect(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        metrics.CONNECTION_RECOVERIES.labels("consume", "dependency" if isinstance(error, DependencyDown) else "broker").inc()
        log.warning("broker connection lost (%s); reconnecting", error if error is not None else "?")

    def call_threadsafe(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on the connection's thread; False if there is no live connection."""
        connection = self._connection
        if connection is None or not connection.is_open:
            return False
        try:
            connection.add_callback_threadsafe(callback)
        except pika.exceptions.ConnectionWrongStateError:
            return False
        return True

    def _wait_for_dependencies(self, stop: threading.Event) -> None:
        reported = None
        while self._gate is not None and not stop.is_set():
            reason = self._gate()
            if reason is None:
                if reported is not None:
                    log.info("dependencies are back; consuming again")
                return
            if reason != reported:
                log.warning("not consuming: %s", reason)
                reported = reason
            stop.wait(1.0)

    def _consume_until(self, stop: threading.Event) -> None:
        self._wait_for_dependencies(stop)
        try:
            with reported_by_caller():
                self._connection = BlockingConnection(parameters(self._url))
                channel = self._connection.channel()
                self._declare(channel)
                channel.basic_qos(prefetch_count=self._prefetch)
                for queue in self._queues:
                    channel.basic_consume(queue, self._dispatcher(queue))
            self.connected.set()
            log.info("consuming %s", ", ".join(self._queues))
            while not stop.is_set():
                self._connection.process_data_events(time_limit=0.5)
                if self._after_read is not None:
                    self._drain_readable()
                    self._after_read()
        except RETRYABLE as exc:
            if (error := refused(exc, self._url)) is not None:
                raise error from exc
            raise
        finally:
            self.connected.clear()
            self._close()

    def _drain_readable(self) -> None:
        """Dispatch whatever else is already readable, so ``after_read`` gets one large batch.

        One socket read holds only a few messages; without draining, a buffering handler would
        commit a handful at a time. Bounded: the broker sends no more than the prefetch allows
        until something is acknowledged.
        """
        assert self._connection is not None
        while True:
            before = self._deliveries
            self._connection.process_data_events(time_limit=0)
            if self._deliveries == before:
                return

    def _dispatcher(self, queue: str) -> Callable[..., None]:
        def on_message(channel: BlockingChannel, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties,
                       body: bytes) -> None:
            self._deliveries += 1
            tag = cast(int, method.delivery_tag)  # set on every Basic.Deliver frame pika decodes
            self._handler(Delivery(channel, queue, tag, bool(method.redelivered), properties, body))

        return on_message

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # a dying connection may fail any way
                log.debug("closing a broken connection failed", exc_info=True)
