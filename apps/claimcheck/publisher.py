"""Publish step: one AMQP connection that reconnects itself and publishes with confirms.

Every publish is persistent, mandatory and confirmed. A NACK, a confirm that does not come
within the timeout (seen during quorum leader elections) or a lost connection throws the
connection away and retries on a fresh one; a retry may duplicate a message, which the ledger
absorbs. An unroutable message is an error, never silence.

Some refusals no retry can fix (wrong credentials, no permission, a missing virtual host, a
queue that exists with other arguments, a message over the broker's size limit): those raise
:class:`BrokerRefused` at once, with one line naming the cause, instead of reconnecting forever.
"""

import ast
import functools
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from tenacity import RetryCallState, before_sleep_log, retry, retry_if_exception, stop_after_delay, wait_random_exponential

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



class BrokerRefused(Exception):
    """The broker refused something that retrying cannot fix; ``str()`` is one line naming the cause."""


# 406 PRECONDITION_FAILED replies that describe the request itself, not the broker's state. Any
# other 406 (a consumer's delivery acknowledgement timed out, an unknown delivery tag) is
# cured by a fresh connection.
_PERMANENT_406 = ("inequivalent arg", "invalid arg", "invalid property", "larger than configured max size")
# 530 NOT_ALLOWED replies that pass: a virtual host restarting on a node, a connection limit.
_TRANSIENT_530 = (" is down", "limit")
# How pika words a Connection.Close it turned into a Probable*Error: "ConnectionClosedByBroker: (403) '...'".
_WRAPPED_CLOSE = re.compile(r"ConnectionClosedByBroker: \((\d+)\) (.*)", re.DOTALL)


def _broker_reply(exc: BaseException) -> tuple[int, str] | None:
    """The broker's reply code and text if ``exc`` is the broker closing a connection or channel."""
    if isinstance(exc, (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker)):
        return int(exc.reply_code), str(exc.reply_text)
    if isinstance(exc, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError)):
        # Raised on a connection closed during the handshake. Only a Connection.Close from the
        # broker is a refusal; a dropped socket (a node dying behind HAProxy) is not.
        match = _WRAPPED_CLOSE.search(" ".join(str(arg) for arg in exc.args))
        if match is None:
            return None
        try:
            text = str(ast.literal_eval(match.group(2).strip()))
        except (ValueError, SyntaxError):
            text = match.group(2).strip()
        return int(match.group(1)), text
    return None


def refusal(exc: BaseException) -> str | None:
    """Why the broker refused something for good, as one readable line; None if a retry may help.

    Permanent: a login refused (403 ACCESS_REFUSED during the handshake, or no common
    authentication mechanism), a missing or forbidden virtual host (530 NOT_ALLOWED), any other
    403 ACCESS_REFUSED (the user lacks a permission), and a 406 PRECONDITION_FAILED about the
    request itself (a queue declared elsewhere with other arguments, a message over
    max_message_size). Everything else (lost connections, timeouts, NACKs, 320, 404, 541, a
    consumer's acknowledgement timeout) is left to the retry loops.
    """
    if isinstance(exc, pika.exceptions.AuthenticationError):
        mechanism = exc.args[0] if exc.args else "?"
        return f"RabbitMQ and this client share no authentication mechanism (client offers {mechanism})"
    reply = _broker_reply(exc)
    if reply is None:
        return None
    code, text = reply
    text = " ".join(text.split())  # one line, whatever the broker sent
    if code == 403 and (isinstance(exc, pika.exceptions.ProbableAuthenticationError) or "login was refused" in text.lower()):
        return f"RabbitMQ refused the login ({code} {text}): check the user name and password of the AMQP URL"
    if code == 403:
        return f"RabbitMQ refused access ({code} {text}): the user lacks this permission"
    if code == 530 and not any(marker in text for marker in _TRANSIENT_530):
        return f"RabbitMQ refused the virtual host ({code} {text}): it does not exist or the user may not use it"
    if code == 406 and "larger than configured max size" in text:
        return f"RabbitMQ refused a message over its max_message_size ({code} {text})"
    if code == 406 and any(marker in text for marker in _PERMANENT_406):
        return (f"RabbitMQ refused a declaration ({code} {text}): it exists with other arguments; "
                "delete it or declare it the same way")
    return None


def refused(exc: BaseException, url: str) -> BrokerRefused | None:
    """A :class:`BrokerRefused` for ``exc`` naming the broker (without its password), or None."""
    cause = refusal(exc)
    return None if cause is None else BrokerRefused(f"{cause} [broker {redacted(url)}]")


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE) and refusal(exc) is None


_reporting = threading.local()


class _ReportedByCaller(logging.Filter):
    """Drops pika's records while claimcheck connects or declares on this thread.

    pika logs a failed connection attempt as half a dozen ERROR records (one with a traceback)
    and also raises it; claimcheck reports that exception itself, once: as a retry warning, or
    as the one line of :class:`BrokerRefused`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_reporting, "active", False)


def _quiet_pika() -> None:
    quiet = _ReportedByCaller()
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (name == "pika" or name.startswith("pika.")) and isinstance(logger, logging.Logger):
            logger.addFilter(quiet)


_quiet_pika()


@contextmanager
def reported_by_caller() -> Iterator[None]:
    """Within this block, errors pika would log on this thread are the caller's to report."""
    outer = getattr(_reporting, "active", False)
    _reporting.active = True
    try:
        yield
    finally:
        _reporting.active = outer


_log_retry = before_sleep_log(log, logging.WARNING)


def _before_retry(state: RetryCallState) -> None:
    _log_retry(state)
    metrics.count_publish_retry(state)


_retrying = retry(
    retry=retry_if_exception(_retryable),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(300),
    before_sleep=_before_retry,
    reraise=True,
)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def reconnecting(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Retry ``function`` on transient broker errors for up to 5 minutes; stop at once on a refusal.

    A refusal (see :func:`refusal`) is raised as :class:`BrokerRefused`; anything else that
    outlasts the retries is raised as it came.
    """
    retried = _retrying(function)

    @functools.wraps(function)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return retried(*args, **kwargs)
        except RETRYABLE as exc:
            cause = refusal(exc)
            if cause is None:
                raise
            raise BrokerRefused(cause) from exc

    return call


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
            try:
                with reported_by_caller():
                    self._connection = BlockingConnection(parameters(self._url, self._confirm_timeout))
                    channel = self._connection.channel()
                    self._declare(channel)
                    channel.confirm_delivery()
            except RETRYABLE as exc:
                if (error := refused(exc, self._url)) is not None:
                    self.close()
                    raise error from exc
                raise
            self._channel = channel
        return self._channel

    def close(self) -> None:
        """Close the connection, ignoring errors from one that already died."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # a dying connection may fail any way
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
        ioloop = self._connection._impl.ioloop  # type: ignore[attr-defined]  # noqa: SLF001 - see above
        timer = ioloop.call_later(self._confirm_timeout, self._confirm_timed_out)
        try:
            channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise Unroutable(f"no queue bound for {exchange!r} / {routing_key!r}") from None
        except RETRYABLE as exc:
            self.close()
            if (error := refused(exc, self._url)) is not None:
                raise error from exc
            raise
        finally:
            ioloop.remove_timeout(timer)

    def _confirm_timed_out(self) -> None:
        raise ConfirmTimeout(f"no publisher confirm within {self._confirm_timeout:.0f} s")
