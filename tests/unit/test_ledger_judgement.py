"""The ledger's judgement of a batch, without PostgreSQL: each message against the rows as locked.

tests/integration/test_ledger_properties.py checks the same rules through the SQL path.
"""

import uuid

import pytest

from claimcheck.judgement import Applied, BatchJudgement, ObjectMessage, ObjectRow, Outcome
from claimcheck.protocol import Ack, Intent, Pointer, make_pointer, now, object_key

SHA, OTHER_SHA = "a" * 64, "b" * 64
JOB = "run-1"


def fresh() -> ObjectRow:
    """The placeholder row the ledger creates for an object it has not seen."""
    return ObjectRow(state="awaiting_pointer", recipients=None, sha256=None, bucket=None, key=None)


def pointer(object_id: str, recipients: tuple[str, ...] = ("audit", "billing"), sha: str = SHA, job: str = JOB,
            bucket: str = "claimcheck", extension: str = "json.gz") -> Pointer:
    return make_pointer(object_id=object_id, job=job, bucket=bucket, key=object_key(job, object_id, extension),
                        payload_size=10, payload_sha256=sha, object_size=5, object_sha256="c" * 64,
                        recipients=recipients)


def intent(object_id: str, bucket: str = "claimcheck", extension: str = "json.gz") -> Intent:
    return Intent(object_id=object_id, job=JOB, bucket=bucket, key=object_key(JOB, object_id, extension), created_at=now())


def ack(object_id: str, recipient: str, sha: str = SHA) -> Ack:
    return Ack(object_id=object_id, job=JOB, recipient=recipient, payload_sha256=sha, consumer="c-1", acked_at=now())


def judged(*messages: ObjectMessage, rows: dict[str, ObjectRow] | None = None,
           cancelled: frozenset[str] = frozenset()) -> tuple[list[Outcome], BatchJudgement]:
    """Judge ``messages`` as one batch in arrival order; unknown objects start as fresh placeholders."""
    rows = rows if rows is not None else {}
    for message in messages:
        rows.setdefault(message.object_id, fresh())
    batch = BatchJudgement(rows, set(cancelled))
    return [batch.judge(index, message).outcome for index, message in enumerate(messages)], batch


@pytest.fixture
def oid() -> str:
    return uuid.uuid4().hex


def test_a_pointer_then_every_ack_is_recorded(oid: str) -> None:
    outcomes, batch = judged(pointer(oid), ack(oid, "billing"), ack(oid, "audit"))
    assert outcomes == [Outcome.RECORDED] * 3
    assert batch.rows[oid].state == "pending" and batch.rows[oid].recipients == ["audit", "billing"]
    assert [p.object_id for p, cancelled in batch.pointers if not cancelled] == [oid] and len(batch.acks) == 2
    assert batch.last_recorded == {oid: 2}  # the last message that may have made it due


def test_an_ack_before_its_pointer_is_early_and_counts_once_the_pointer_comes(oid: str) -> None:
    outcomes, batch = judged(ack(oid, "billing"), pointer(oid), ack(oid, "audit"))
    assert outcomes == [Outcome.EARLY, Outcome.RECORDED, Outcome.RECORDED]
    assert batch.rows[oid].acked == {("billing", SHA), ("audit", SHA)}


def test_a_repeated_ack_is_a_duplicate_and_counted_for_the_ledger(oid: str) -> None:
    outcomes, batch = judged(pointer(oid), ack(oid, "billing"), ack(oid, "billing"), ack(oid, "billing"))
    assert outcomes == [Outcome.RECORDED, Outcome.RECORDED, Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert len(batch.acks) == 1 and batch.duplicate_acks == {(oid, "billing", SHA): 2}


def test_an_ack_duplicating_one_already_in_the_ledger_writes_nothing_new(oid: str) -> None:
    row = ObjectRow("pending", ["audit", "billing"], SHA, "claimcheck", object_key(JOB, oid), {("billing", SHA)})
    outcomes, batch = judged(ack(oid, "billing"), rows={oid: row})
    assert outcomes == [Outcome.DUPLICATE] and not batch.acks and not batch.last_recorded


def test_an_ack_from_outside_the_recipient_set_never_counts(oid: str) -> None:
    outcomes, batch = judged(pointer(oid), ack(oid, "payroll"))
    assert outcomes == [Outcome.RECORDED, Outcome.FOREIGN] and not batch.acks


def test_an_ack_of_another_payload_is_a_mismatch(oid: str) -> None:
    outcomes, batch = judged(pointer(oid), ack(oid, "billing", sha=OTHER_SHA))
    assert outcomes == [Outcome.RECORDED, Outcome.MISMATCH] and not batch.acks


def test_an_early_ack_of_another_payload_is_stored_but_never_counts_for_this_one(oid: str) -> None:
    outcomes, batch = judged(ack(oid, "billing", sha=OTHER_SHA), pointer(oid))
    assert outcomes == [Outcome.EARLY, Outcome.RECORDED]
    assert ("billing", SHA) not in batch.rows[oid].acked  # the guarded update in SQL counts by the pointer's sha256


def test_the_same_pointer_twice_is_a_duplicate_and_a_contradicting_one_a_mismatch(oid: str) -> None:
    outcomes, batch = judged(pointer(oid), pointer(oid), pointer(oid, recipients=("billing",)), pointer(oid, sha=OTHER_SHA))
    assert outcomes == [Outcome.RECORDED, Outcome.DUPLICATE, Outcome.MISMATCH, Outcome.MISMATCH]
    assert len(batch.pointers) == 1 and batch.rows[oid].sha256 == SHA


def test_a_pointer_must_name_the_key_its_intent_announced(oid: str) -> None:
    assert judged(intent(oid), pointer(oid))[0] == [Outcome.RECORDED, Outcome.RECORDED]
    other = uuid.uuid4().hex
    assert judged(intent(other), pointer(other, extension="bin"))[0] == [Outcome.RECORDED, Outcome.MISMATCH]
    third = uuid.uuid4().hex
    assert judged(intent(third), pointer(third, bucket="elsewhere"))[0] == [Outcome.RECORDED, Outcome.MISMATCH]


def test_a_repeated_intent_is_a_duplicate_and_one_for_another_key_a_mismatch(oid: str) -> None:
    outcomes, batch = judged(intent(oid), intent(oid), intent(oid, extension="bin"))
    assert outcomes == [Outcome.RECORDED, Outcome.DUPLICATE, Outcome.MISMATCH]
    assert len(batch.intents) == 1 and not batch.last_recorded  # an intent never makes an object due


def test_a_pointer_of_a_cancelled_run_is_recorded_as_due_for_deletion(oid: str) -> None:
    outcomes, batch = judged(pointer(oid), ack(oid, "billing"), cancelled=frozenset({JOB}))
    assert outcomes == [Outcome.CANCELLED, Outcome.RECORDED]
    assert batch.rows[oid].state == "deleting" and batch.pointers[0][1] is True
    cancelled = BatchJudgement({oid: fresh()}, {JOB}).judge(0, pointer(oid))
    assert cancelled == Applied(Outcome.CANCELLED, delete_decided=True, detail=f"run {JOB} was cancelled")


def test_a_pointer_for_a_swept_orphan_is_refused(oid: str) -> None:
    swept = ObjectRow("deleted", [], None, "claimcheck", object_key(JOB, oid))
    outcomes, batch = judged(pointer(oid), rows={oid: swept})
    assert outcomes == [Outcome.MISMATCH] and not batch.pointers and swept.state == "deleted"


def test_objects_of_one_batch_are_judged_independently(oid: str) -> None:
    other = uuid.uuid4().hex
    outcomes, batch = judged(pointer(oid), ack(other, "billing"), ack(oid, "billing"), pointer(other))
    assert outcomes == [Outcome.RECORDED, Outcome.EARLY, Outcome.RECORDED, Outcome.RECORDED]
    assert batch.last_recorded == {oid: 2, other: 3}
