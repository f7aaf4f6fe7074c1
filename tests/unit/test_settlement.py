"""The consumer's settle outcomes without services: each kind of worker result, and the delivery limit."""

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from claimcheck import store
from claimcheck.amqp_loop import DependencyDown
from claimcheck.publisher import BrokerRefused
from claimcheck.settlement import AckNotPublished, Action, AlreadySettled, Settlement, combine, settle
from claimcheck.topology import DELIVERY_LIMIT

OBJECT = "0" * 32
LAST = DELIVERY_LIMIT - 1  # delivered this many times before: this delivery is the last the limit allows


def test_a_verified_pointer_with_a_confirmed_ack_is_acknowledged() -> None:
    assert settle(None, 0, OBJECT) == Settlement(Action.ACKNOWLEDGE)
    assert settle(None, LAST, OBJECT) == Settlement(Action.ACKNOWLEDGE)


@pytest.mark.parametrize("count", [0, LAST])
def test_a_broker_refusal_returns_the_pointer_and_stops_the_replica_with_that_refusal(count: int) -> None:
    refusal = BrokerRefused("ACCESS_REFUSED - write access to exchange 'claimcheck.acks' refused")
    decided = settle(refusal, count, OBJECT)
    assert decided.action is Action.STOP
    assert decided.stop is refusal


@pytest.mark.parametrize("count", [0, LAST])
def test_an_object_the_ledger_already_settled_is_acked_quietly(count: int) -> None:
    decided = settle(AlreadySettled(f"object {OBJECT} was deleted: billing confirmed it before"), count, OBJECT)
    assert decided == Settlement(Action.ALREADY_SETTLED,
                                 detail=f"object {OBJECT} was deleted: billing confirmed it before; "
                                        "settling the redelivered pointer")


@pytest.mark.parametrize("count", [0, LAST])
def test_an_unconfirmed_business_ack_returns_the_pointer_even_at_the_delivery_limit(count: int) -> None:
    decided = settle(AckNotPublished("not confirmed"), count, OBJECT)
    assert decided == Settlement(Action.RETRY, detail="not confirmed; returning the pointer to the queue")


@pytest.mark.parametrize("count", [0, LAST])
def test_a_checksum_mismatch_is_dead_lettered_at_once_as_integrity(count: int) -> None:
    decided = settle(store.IntegrityError("sha256 mismatch"), count, OBJECT)
    assert decided == Settlement(Action.DEAD_LETTER, "integrity", f"object {OBJECT}: sha256 mismatch")


@pytest.mark.parametrize("count", [0, LAST])
def test_a_missing_object_is_dead_lettered_at_once(count: int) -> None:
    decided = settle(store.ObjectMissing("no such key"), count, OBJECT)
    assert decided == Settlement(Action.DEAD_LETTER, "missing_object", "no such key")


@pytest.mark.parametrize("count", [0, LAST])
def test_unreachable_s3_returns_the_pointer_and_pauses_consuming(count: int) -> None:
    decided = settle(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), count, OBJECT)
    assert decided.action is Action.RETRY
    assert isinstance(decided.stop, DependencyDown)
    assert str(decided.stop).startswith(f"S3 unreachable while fetching object {OBJECT}: ")
    assert not decided.detail  # no line of its own: the pause says why


@pytest.mark.parametrize("error", [RuntimeError("hook failed"),
                                   ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")])
def test_a_failure_below_the_delivery_limit_returns_the_pointer(error: Exception) -> None:
    for count in (0, LAST - 1):
        decided = settle(error, count, OBJECT)
        assert decided == Settlement(Action.RETRY,
                                     detail=f"processing object {OBJECT} failed, returning it to the queue: {error}")


def test_a_failure_at_the_delivery_limit_is_dead_lettered_with_its_count_and_last_error() -> None:
    decided = settle(RuntimeError("hook failed"), LAST, OBJECT)
    assert decided == Settlement(Action.DEAD_LETTER, "processing_failed",
                                 f"object {OBJECT}: failed {DELIVERY_LIMIT} times, last: RuntimeError('hook failed')")


def test_only_a_refusal_and_an_s3_outage_stop_consuming() -> None:
    errors: list[BaseException | None] = [None, AlreadySettled("x"), AckNotPublished("x"), store.IntegrityError("x"),
                                          store.ObjectMissing("x"), RuntimeError("x")]
    for count in (0, LAST):
        assert all(settle(error, count, OBJECT).stop is None for error in errors)


ACKED = Settlement(Action.ACKNOWLEDGE)
SETTLED = Settlement(Action.ALREADY_SETTLED, detail="object 1 was deleted")
MISSING = Settlement(Action.DEAD_LETTER, "missing_object", "object 2 is missing")
CORRUPT = Settlement(Action.DEAD_LETTER, "integrity", "object 3: sha256 mismatch")
AGAIN = Settlement(Action.RETRY, detail="processing object 4 failed")


@pytest.mark.parametrize("decided", [ACKED, SETTLED, MISSING, AGAIN])
def test_a_delivery_of_one_pointer_is_settled_as_its_pointer_was_decided(decided: Settlement) -> None:
    assert combine([decided]).action is decided.action
    assert (combine([decided]).reason, combine([decided]).detail) == (
        (decided.reason, decided.detail) if decided.action in {Action.DEAD_LETTER, Action.RETRY} else ("", ""))


def test_a_batch_is_acknowledged_once_every_object_is_confirmed_or_found_settled() -> None:
    assert combine([ACKED, SETTLED, ACKED]) == Settlement(Action.ACKNOWLEDGE)
    assert combine([SETTLED, SETTLED]) == Settlement(Action.ALREADY_SETTLED)


def test_a_batch_with_refused_objects_is_dead_lettered_once_naming_each() -> None:
    assert combine([ACKED, MISSING, SETTLED, CORRUPT]) == Settlement(
        Action.DEAD_LETTER, "missing_object", "object 2 is missing; integrity: object 3: sha256 mismatch")


def test_a_batch_with_an_object_to_try_again_goes_back_whole_and_dead_letters_nothing_yet() -> None:
    assert combine([ACKED, MISSING, AGAIN]) == Settlement(Action.RETRY, detail="processing object 4 failed")
