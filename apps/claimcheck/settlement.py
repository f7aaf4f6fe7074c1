"""The consumer's settle step, decided: what becomes of a pointer's delivery once its worker finished
(:func:`settle`), and of a delivery that carried several pointers once each is decided (:func:`combine`).

Pure (no broker, no S3, no metrics), so every outcome is unit-tested without services
(tests/unit/test_settlement.py); consumer.py carries the decision out on the connection thread.
"""

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError

from claimcheck import store, topology
from claimcheck.amqp_loop import DependencyDown
from claimcheck.publisher import BrokerRefused


class AckNotPublished(Exception):
    """The payload was verified and processed, but its business ACK could not be published."""


class AlreadySettled(Exception):
    """The object is gone because the ledger is done with it: this recipient's ACK was counted
    before (a redelivered pointer), or the run was cancelled. Nothing is left to do."""


class Action(enum.Enum):
    """What is done with the delivery; the value is the consumed-messages counter's result label."""

    ACKNOWLEDGE = "acked"  # verified, its business ACK confirmed: the pointer is done
    ALREADY_SETTLED = "already_settled"  # acked quietly: the ledger was done with the object before
    RETRY = "retried"  # back to the queue, for this or another replica to try again
    DEAD_LETTER = "dead_lettered"  # set aside with a reason; retrying cannot help
    STOP = "stopped"  # back to the queue uncounted, and the replica stops with ``stop``


@dataclass(frozen=True)
class Settlement:
    """The decision for one delivery."""

    action: Action
    reason: str = ""  # a dead letter's category (integrity, missing_object, processing_failed)
    detail: str = ""  # a dead letter's detail, or the line logged for a quiet settle or a retry
    stop: Exception | None = None  # raised on the connection thread after settling: the consuming loop stops or pauses


def settle(error: BaseException | None, delivery_count: int, object_id: str) -> Settlement:
    """How to settle the delivery of pointer ``object_id`` (delivered ``delivery_count`` times before)
    whose worker ended with ``error`` (``None``: verified, processed and its ACK confirmed)."""
    if error is None:
        return Settlement(Action.ACKNOWLEDGE)
    if isinstance(error, BrokerRefused):
        return Settlement(Action.STOP, stop=error)  # one line naming the broker's reason
    if isinstance(error, AlreadySettled):
        return Settlement(Action.ALREADY_SETTLED, detail=f"{error}; settling the redelivered pointer")
    if isinstance(error, AckNotPublished):
        return Settlement(Action.RETRY, detail=f"{error}; returning the pointer to the queue")
    if isinstance(error, store.IntegrityError):
        return Settlement(Action.DEAD_LETTER, "integrity", f"object {object_id}: {error}")
    if isinstance(error, store.ObjectMissing):
        return Settlement(Action.DEAD_LETTER, "missing_object", str(error))
    if isinstance(error, BotoCoreError):  # S3 is down, not this pointer: pause consuming until it is back
        return Settlement(Action.RETRY, stop=DependencyDown(f"S3 unreachable while fetching object {object_id}: {error}"))
    if delivery_count + 1 >= topology.DELIVERY_LIMIT:
        return Settlement(Action.DEAD_LETTER, "processing_failed",
                          f"object {object_id}: failed {delivery_count + 1} times, last: {error!r}")
    return Settlement(Action.RETRY, detail=f"processing object {object_id} failed, returning it to the queue: {error}")


def combine(decisions: Sequence[Settlement]) -> Settlement:
    """How to settle a delivery that carried several pointers (a pointer batch), each decided.

    Back to the queue if any object must be tried again (the objects confirmed meanwhile are
    confirmed again on the redelivery, which the ledger absorbs, or found settled); else
    dead-lettered once if any was refused, naming every refused object; else acknowledged.
    A single pointer's decision is its delivery's.
    """
    retry = [decided for decided in decisions if decided.action is Action.RETRY]
    if retry:
        return Settlement(Action.RETRY, detail="; ".join(decided.detail for decided in retry if decided.detail))
    refused = [decided for decided in decisions if decided.action is Action.DEAD_LETTER]
    if refused:
        return Settlement(Action.DEAD_LETTER, refused[0].reason, "; ".join(
            decided.detail if decided.reason == refused[0].reason else f"{decided.reason}: {decided.detail}"
            for decided in refused))
    if all(decided.action is Action.ALREADY_SETTLED for decided in decisions):
        return Settlement(Action.ALREADY_SETTLED)
    return Settlement(Action.ACKNOWLEDGE)
