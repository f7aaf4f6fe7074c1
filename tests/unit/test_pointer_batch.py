"""Pointer batches without services: what a valid one is, who may sign it, what is refused, and
which pointers may travel in one."""

import json
from typing import Any

import pytest

from claimcheck.protocol import (
    BATCHABLE_POINTER_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_POINTERS_PER_BATCH,
    RECIPIENT_QUEUE_KINDS,
    InvalidMessage,
    Pointer,
    PointerBatch,
    check_bucket,
    make_pointer,
    now,
    object_key,
)
from claimcheck.signing import Verifier, ack_signer, decode_signed, ledger_signer, new_pointer_key, pointer_signer

SHA = "a" * 64
SIGNING, VERIFY = new_pointer_key("p1")
LEDGER = "l1:ledger-secret-0123456789"
BILLING = "k1:billing-secret-0123456789"
CONSUMER = Verifier.parse(pointer_keys=VERIFY, ack_keys=f"billing:{BILLING}")
COORDINATOR = Verifier.parse(pointer_keys=VERIFY, ack_keys=f"billing:{BILLING}", ledger_keys=LEDGER)


def stored(n: int, recipients: tuple[str, ...] = ("audit", "billing"), bucket: str = "claimcheck",
           **fields: Any) -> Pointer:
    object_id = f"{n:032x}"
    return make_pointer(object_id=object_id, job="j", bucket=bucket, key=object_key("j", object_id), payload_size=n,
                        payload_sha256=SHA, object_size=n, object_sha256=SHA, recipients=recipients, **fields)


def batch_body(pointers: list[Any]) -> bytes:
    return json.dumps({"type": "pointer_batch", "version": 1, "created_at": "2026-11-30T00:00:00Z",
                       "pointers": pointers}).encode()


def as_document(pointer: Pointer) -> dict[str, Any]:
    return json.loads(pointer.encode())  # type: ignore[no-any-return]


def test_a_signed_batch_reaches_consumers_and_coordinators_as_its_pointers_in_order() -> None:
    pointers = [stored(n) for n in (3, 1, 2)]
    body = PointerBatch(created_at=now(), pointers=tuple(pointers)).encode()
    headers = pointer_signer(SIGNING).with_ledger(ledger_signer(LEDGER)).sign(body)
    for verifier in (CONSUMER, COORDINATOR):
        batch = decode_signed(verifier, body, headers, *RECIPIENT_QUEUE_KINDS, bucket="claimcheck")
        assert isinstance(batch, PointerBatch)
        assert batch.each() == pointers
        assert batch.recipients == ("audit", "billing")


def test_a_group_cannot_sign_a_pointer_batch() -> None:
    body = PointerBatch(created_at=now(), pointers=(stored(1),)).encode()
    with pytest.raises(InvalidMessage) as caught:
        decode_signed(CONSUMER, body, ack_signer(BILLING, "billing").sign(body), *RECIPIENT_QUEUE_KINDS)
    assert caught.value.category == "forged"
    assert caught.value.reason == ("key id 'billing/k1' is a recipient group's ACK key; it cannot sign a message of "
                                   "type 'pointer' or 'pointer_batch'")


def test_a_batch_naming_any_object_outside_the_bucket_is_foreign() -> None:
    batch = PointerBatch(created_at=now(), pointers=(stored(1), stored(2, bucket="other-bucket")))
    with pytest.raises(InvalidMessage, match="names bucket 'other-bucket'") as caught:
        check_bucket(batch, "claimcheck")
    assert caught.value.category == "foreign_bucket"


INLINE = make_pointer(object_id="f" * 32, job="j", content_type="text/plain", content_encoding="identity",
                      payload_size=2, payload_sha256=SHA, inline="aGk=", recipients=["audit", "billing"])


@pytest.mark.parametrize(("pointers", "reason"), [
    ([], "invalid pointer_batch: pointers: Tuple should have at least 1 item after validation, not 0"),
    ([as_document(stored(1))] * 2, "invalid pointer_batch: an object is named twice in one batch"),
    ([as_document(stored(1)), as_document(stored(2, recipients=("billing",)))],
     "invalid pointer_batch: every pointer of a batch names the same recipients"),
    ([as_document(stored(1)), as_document(INLINE)], "invalid pointer_batch: an inline pointer travels alone, not in a batch"),
    ([as_document(stored(n)) for n in range(MAX_POINTERS_PER_BATCH + 1)],
     f"invalid pointer_batch: pointers: Tuple should have at most {MAX_POINTERS_PER_BATCH} items after validation, "
     f"not {MAX_POINTERS_PER_BATCH + 1}"),
    ([{**as_document(stored(1)), "recipients_total": 3}],
     "invalid pointer_batch: pointers.0: recipients_total must equal the number of recipients"),
    ([{**as_document(stored(1)), "type": "ack"}],
     "invalid pointer_batch: pointers.0.type: Input should be 'pointer'"),
])
def test_malformed_pointer_batches_are_invalid(pointers: list[Any], reason: str) -> None:
    body = batch_body(pointers)
    with pytest.raises(InvalidMessage) as caught:
        decode_signed(CONSUMER, body, pointer_signer(SIGNING).sign(body), *RECIPIENT_QUEUE_KINDS)
    assert (caught.value.category, caught.value.reason) == ("invalid", reason)


def test_any_full_batch_of_carriable_pointers_fits_a_message() -> None:
    """The longest key, job, content type and recipient list still batch; much metadata does not."""
    job, prefix = "j" * 128, "/".join(["p" * 63] * 8) + "/"
    recipients = tuple(sorted(f"r{n:02d}" + "x" * 60 for n in range(32)))

    def longest(n: int, **fields: Any) -> Pointer:
        object_id = f"{n:032x}"
        return make_pointer(object_id=object_id, job=job, bucket="b" * 63, key=object_key(job, object_id, "bin.gz", prefix),
                            content_type="a" * 127 + "/" + "b" * 127 + ";" + '"' * 200, payload_size=1,
                            payload_sha256=SHA, object_size=1, object_sha256=SHA, recipients=recipients,
                            sse_customer_key_md5="A" * 22 + "==", **fields)

    full = [longest(n) for n in range(MAX_POINTERS_PER_BATCH)]
    assert all(PointerBatch.can_carry(pointer) for pointer in full)
    assert len(PointerBatch(created_at=now(), pointers=tuple(full)).encode()) <= MAX_MESSAGE_BYTES
    heavy = longest(0, metadata={f"k{n:02d}": '"' * 120 for n in range(32)})
    assert len(heavy.encode()) > BATCHABLE_POINTER_BYTES
    assert not PointerBatch.can_carry(heavy)
    assert not PointerBatch.can_carry(INLINE)
