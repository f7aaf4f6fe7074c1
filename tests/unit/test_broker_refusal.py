"""Which broker errors no retry can fix (``publisher.refusal``), and how the retry loops stop on them."""

import threading
from typing import Any

import pika.exceptions
import pytest

from claimcheck import publisher
from claimcheck.amqp_loop import ConsumerLoop
from claimcheck.publisher import RETRYABLE, BrokerRefused, reconnecting, redacted, refusal

LOGIN_403 = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."


def wrapped(reply_code: int, reply_text: str) -> str:
    """How pika words a handshake-time Connection.Close inside a Probable*Error."""
    return repr(pika.exceptions.ConnectionClosedByBroker(reply_code, reply_text))


REFUSED = {
    "wrong password": (pika.exceptions.ProbableAuthenticationError(wrapped(403, LOGIN_403)), ["403", "login", "password"]),
    "login refused after open": (pika.exceptions.ConnectionClosedByBroker(403, LOGIN_403), ["403", "login"]),
    "no mechanism": (pika.exceptions.AuthenticationError("PLAIN"), ["authentication mechanism", "PLAIN"]),
    "missing vhost": (
        pika.exceptions.ProbableAccessDeniedError(wrapped(530, "NOT_ALLOWED - vhost nope not found")),
        ["530", "vhost nope not found"],
    ),
    "vhost refused": (
        pika.exceptions.ConnectionClosedByBroker(530, "NOT_ALLOWED - access to vhost '/' refused for user 'u'"),
        ["530", "refused for user"],
    ),
    "no permission": (
        pika.exceptions.ChannelClosedByBroker(
            403, "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'"
        ),
        ["403", "permission", "queue 'q'"],
    ),
    "queue with other arguments": (
        pika.exceptions.ChannelClosedByBroker(
            406,
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': "
            "received the value 'quorum' of type 'longstr' but current is none",
        ),
        ["406", "inequivalent arg", "queue 'q'"],
    ),
    "invalid argument": (
        pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q'"),
        ["406", "invalid arg"],
    ),
    "message over max_message_size": (
        pika.exceptions.ChannelClosedByBroker(
            406, "PRECONDITION_FAILED - message size 200000 is larger than configured max size 131072"
        ),
        ["406", "max_message_size", "200000"],
    ),
}

TRANSIENT = {
    "stream lost": pika.exceptions.StreamLostError("Transport indicated EOF"),
    "socket dropped during login": pika.exceptions.ProbableAuthenticationError(
        "StreamLostError: ('Transport indicated EOF',)"
    ),
    "socket dropped during vhost open": pika.exceptions.ProbableAccessDeniedError(
        "StreamLostError: ('Transport indicated EOF',)"
    ),
    "incompatible protocol (HAProxy without backend)": pika.exceptions.IncompatibleProtocolError("EOF"),
    "connect failed": pika.exceptions.AMQPConnectionError("connection refused"),
    "heartbeat": pika.exceptions.AMQPHeartbeatTimeout("no heartbeat"),
    "nack": pika.exceptions.NackError([]),
    "confirm timeout": publisher.ConfirmTimeout("no publisher confirm within 15 s"),
    "node shut down": pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker forced connection closure"),
    "internal error": pika.exceptions.ChannelClosedByBroker(541, "INTERNAL_ERROR"),
    "queue leader down": pika.exceptions.ChannelClosedByBroker(
        404, "NOT_FOUND - home node 'rmq-2@localhost' of durable queue 'q' in vhost '/' is down or inaccessible"
    ),
    "consumer ack timeout": pika.exceptions.ChannelClosedByBroker(
        406,
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1800000 ms. "
        "This timeout value can be configured, see consumers doc guide to learn more",
    ),
    "unknown delivery tag": pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - unknown delivery tag 7"),
    "vhost restarting": pika.exceptions.ConnectionClosedByBroker(
        530, "NOT_ALLOWED - access to vhost '/' refused for user 'guest': vhost '/' is down"
    ),
    "connection limit": pika.exceptions.ConnectionClosedByBroker(
        530, "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (10) is reached"
    ),
    "os error": ConnectionResetError("reset by peer"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refusals_name_their_cause_in_one_line(name: str) -> None:
    exc, words = REFUSED[name]
    cause = refusal(exc)
    assert cause is not None, f"{name} must not be retried"
    assert "\n" not in cause
    for word in words:
        assert word.lower() in cause.lower(), f"{word!r} missing from {cause!r}"


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_errors_are_left_to_the_retry_loops(name: str) -> None:
    assert isinstance(TRANSIENT[name], RETRYABLE)
    assert refusal(TRANSIENT[name]) is None


def test_a_multi_line_reply_becomes_one_line() -> None:
    cause = refusal(pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED - line one\nline two"))
    assert cause is not None and "\n" not in cause and "line one line two" in cause


def test_redacted_hides_only_the_password() -> None:
    assert redacted("amqp://guest:s3cret@host:5672/%2F") == "amqp://guest:***@host:5672/%2F"
    assert redacted("amqp://host/") == "amqp://host/"


def test_reconnecting_stops_at_the_first_refusal() -> None:
    calls: list[int] = []

    @reconnecting
    def connect() -> None:
        calls.append(1)
        raise REFUSED["wrong password"][0]

    with pytest.raises(BrokerRefused, match="403"):
        connect()
    assert calls == [1]


def test_reconnecting_still_retries_transient_errors() -> None:
    calls: list[int] = []

    @reconnecting
    def connect() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise pika.exceptions.StreamLostError("Transport indicated EOF")
        return "connected"

    assert connect() == "connected"
    assert len(calls) == 3


def test_consumer_loop_stops_at_the_first_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[int] = []

    def refuse(params: Any) -> None:
        attempts.append(1)
        raise REFUSED["missing vhost"][0]

    monkeypatch.setattr("claimcheck.amqp_loop.BlockingConnection", refuse)
    loop = ConsumerLoop("amqp://guest:secret@127.0.0.1:1/nope", lambda channel: None, ["q"], 1, lambda delivery: None)
    finished = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run(threading.Event())
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)
        finally:
            finished.set()

    threading.Thread(target=run, daemon=True).start()
    assert finished.wait(30), "the consumer loop kept reconnecting after a refusal"
    assert len(errors) == 1 and isinstance(errors[0], BrokerRefused), errors
    assert "530" in str(errors[0]) and "secret" not in str(errors[0])
    assert attempts == [1]
