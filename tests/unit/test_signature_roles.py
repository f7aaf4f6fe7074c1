"""Signatures that say who signed: Ed25519 pointers, per-group HMAC ACKs, the coordinators' barriers,
rotation, retired keys, keys of the wrong role, and the built-in local keys refused off loopback."""

import json
from typing import Any

import pytest

from claimcheck.config import LOCAL_POINTER_SIGNING_KEY, InsecureDefault, Settings
from claimcheck.localstack import ports
from claimcheck.protocol import (
    MAX_INTENTS_PER_BATCH,
    MAX_MESSAGE_BYTES,
    Ack,
    AckBatch,
    AckedObject,
    AnnouncedObject,
    Barrier,
    Intent,
    IntentBatch,
    InvalidMessage,
    Pointer,
    check_bucket,
    make_pointer,
    now,
    object_key,
)
from claimcheck.signing import (
    KEY_ID_HEADER,
    LEDGER_KEY_ID_HEADER,
    LEDGER_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    KeyFormatError,
    Verifier,
    ack_signer,
    coordinator_signer,
    decode_signed,
    ledger_signer,
    new_pointer_key,
    pointer_signer,
)

SHA = "a" * 64
OBJECT_ID = "0" * 32
POINTER_SIGNING, POINTER_VERIFY = new_pointer_key("p1")
NEXT_SIGNING, NEXT_VERIFY = new_pointer_key("p2")
BILLING = "k1:billing-secret-0123456789"
AUDIT = "k1:audit-secret-0123456789"
COORDINATOR = "c1:coordinator-secret-0123"


def pointer() -> bytes:
    return make_pointer(object_id=OBJECT_ID, job="j", bucket="claimcheck", key=object_key("j", OBJECT_ID), payload_size=1,
                        payload_sha256=SHA, object_size=1, object_sha256=SHA, recipients=["billing"]).encode()


def ack(recipient: str) -> bytes:
    return Ack(object_id=OBJECT_ID, job="j", recipient=recipient, payload_sha256=SHA, consumer="c",
               acked_at=now()).encode()


def coordinator_verifier(**overrides: Any) -> Verifier:
    arguments = {"pointer_keys": POINTER_VERIFY, "ack_keys": f"billing:{BILLING},audit:{AUDIT}",
                 "coordinator_key": COORDINATOR} | overrides
    return Verifier.parse(**arguments)


def forged(verifier: Verifier, body: bytes, headers: Any, *kinds: type[Any]) -> str:
    with pytest.raises(InvalidMessage) as caught:
        decode_signed(verifier, body, headers, *kinds)
    assert caught.value.category == "forged"
    return caught.value.reason


def test_each_role_signs_what_it_may_and_the_coordinator_verifies_it() -> None:
    verifier = coordinator_verifier()
    body = pointer()
    assert isinstance(decode_signed(verifier, body, pointer_signer(POINTER_SIGNING).sign(body), Pointer), Pointer)
    confirmation = ack("billing")
    assert decode_signed(verifier, confirmation, ack_signer(BILLING, "billing").sign(confirmation), Ack).recipient == "billing"
    barrier = Barrier(nonce=OBJECT_ID, created_at=now()).encode()
    assert isinstance(decode_signed(verifier, barrier, coordinator_signer(COORDINATOR).sign(barrier), Barrier), Barrier)


def test_a_consumer_holds_nothing_that_signs_a_pointer() -> None:
    """The verify key is public: no key a consumer or coordinator holds produces a valid pointer signature."""
    body = pointer()
    verifier = coordinator_verifier()
    for signer in (ack_signer(BILLING, "billing"), coordinator_signer(COORDINATOR)):
        reason = forged(verifier, body, signer.sign(body), Pointer)
        assert "cannot sign a message of type 'pointer'" in reason, reason


def test_one_groups_key_cannot_confirm_for_another() -> None:
    body = ack("billing")
    reason = forged(coordinator_verifier(), body, ack_signer(AUDIT, "audit").sign(body), Ack)
    assert reason == "ACK for recipient 'billing' signed with group 'audit''s key 'audit/k1'"
    # Claiming billing's key id with audit's secret does not help either.
    claimed = {**ack_signer(AUDIT, "audit").sign(body), KEY_ID_HEADER: "billing/k1"}
    assert forged(coordinator_verifier(), body, claimed, Ack).startswith("signature does not match")


def test_a_pointer_key_cannot_sign_an_ack() -> None:
    body = ack("billing")
    reason = forged(coordinator_verifier(), body, pointer_signer(POINTER_SIGNING).sign(body), Ack)
    assert "cannot sign a message of type 'ack'" in reason


def test_rotation_verifies_old_and_new_keys_and_names_retired_ones() -> None:
    body = pointer()
    both = coordinator_verifier(pointer_keys=f"{NEXT_VERIFY},{POINTER_VERIFY}")
    for signing in (POINTER_SIGNING, NEXT_SIGNING):
        decode_signed(both, body, pointer_signer(signing).sign(body), Pointer)
    after = coordinator_verifier(pointer_keys=NEXT_VERIFY, retired="p1")
    assert forged(after, body, pointer_signer(POINTER_SIGNING).sign(body), Pointer) == "signed with the retired key id 'p1'"
    assert "unknown signing key id 'p1'" in forged(coordinator_verifier(pointer_keys=NEXT_VERIFY), body,
                                                   pointer_signer(POINTER_SIGNING).sign(body), Pointer)


def test_a_consumer_names_its_own_ack_key_when_it_signs_a_pointer() -> None:
    settings = Settings(pointer_verify_keys=POINTER_VERIFY, ack_signing_key=BILLING)
    body = pointer()
    reason = forged(settings.consumer_verifier("billing"), body, settings.ack_signer("billing").sign(body), Pointer)
    assert reason.startswith("key id 'billing/k1' is a recipient group's ACK key")


@pytest.mark.parametrize("signature", ["é" * 128, "zz" * 64, "00" * 10, b"\xff" * 64])
def test_malformed_ed25519_signatures_are_forged_not_a_crash(signature: Any) -> None:
    reason = forged(coordinator_verifier(), pointer(), {KEY_ID_HEADER: "p1", SIGNATURE_HEADER: signature}, Pointer)
    assert reason.startswith("signature does not match")


def test_built_in_local_keys_work_on_loopback_and_are_refused_elsewhere() -> None:
    local = Settings(amqp_url=f"amqp://guest:guest@{ports.HOST}:{ports.LOCAL.amqp}/%2F")  # a broker on loopback
    body = pointer()
    decode_signed(local.coordinator_verifier(), body, local.pointer_signer().sign(body), Pointer)
    confirmation = ack("audit")
    decode_signed(local.coordinator_verifier(), confirmation, local.ack_signer("audit").sign(confirmation), Ack)
    remote = Settings(amqp_url="amqp://u:p@rmq.claimcheck.svc:5672/%2F")
    for use in (remote.pointer_signer, remote.coordinator_verifier, remote.accepted_control_tokens,
                lambda: remote.ack_signer("billing"), lambda: remote.consumer_verifier("billing")):
        with pytest.raises(InsecureDefault, match="only a broker on this machine"):
            use()
    explicit_local = Settings(amqp_url="amqp://u:p@10.0.0.5/%2F", pointer_signing_key=LOCAL_POINTER_SIGNING_KEY)
    with pytest.raises(InsecureDefault, match="CLAIMCHECK_POINTER_SIGNING_KEY is the built-in local key"):
        explicit_local.pointer_signer()


@pytest.mark.parametrize("text", ["", "nokey", "p1:short", "p1:" + "A" * 43 + ",p2:" + "A" * 43, "a/b:" + "A" * 43])
def test_bad_signing_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFormatError):
        pointer_signer(text)


@pytest.mark.parametrize("text", ["billing:k1", "Bad Group:k1:0123456789abcdef0", "billing:k1:short"])
def test_bad_ack_verify_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFormatError):
        Verifier.parse(ack_keys=text)


LEDGER = "l1:ledger-secret-0123456789"


def ledger_signed(body: bytes, signing: str = POINTER_SIGNING, ledger: str = LEDGER) -> dict[str, str]:
    return pointer_signer(signing).with_ledger(ledger_signer(ledger)).sign(body)


def test_coordinators_verify_the_ledger_signature_and_consumers_the_pointer_signature() -> None:
    body = pointer()
    headers = ledger_signed(body) | {SIGNATURE_HEADER: "00" * 64}  # a broken Ed25519 signature
    coordinator = coordinator_verifier(ledger_keys=LEDGER)
    assert coordinator.verify(body, headers).role == "ledger"
    assert isinstance(decode_signed(coordinator, body, headers, Pointer), Pointer)
    consumer = Verifier.parse(pointer_keys=POINTER_VERIFY)  # holds no ledger key
    assert forged(consumer, body, headers, Pointer) == "signature does not match the message (key id 'p1')"
    assert isinstance(decode_signed(consumer, body, ledger_signed(body), Pointer), Pointer)


def test_a_wrong_retired_or_misused_ledger_signature_is_forged_and_an_unknown_one_defers_to_the_pointer_key() -> None:
    body = pointer()
    coordinator = coordinator_verifier(ledger_keys=LEDGER)
    tampered = ledger_signed(body) | {LEDGER_SIGNATURE_HEADER: "0" * 64}
    assert forged(coordinator, body, tampered, Pointer) == "ledger signature does not match the message (key id 'ledger/l1')"
    retired = coordinator_verifier(ledger_keys="l2:ledger-secret-next-01234", retired="ledger/l1")
    assert forged(retired, body, ledger_signed(body), Pointer) == "signed with the retired ledger key id 'ledger/l1'"
    rolling_out = coordinator_verifier(ledger_keys="l2:ledger-secret-next-01234")
    assert rolling_out.verify(body, ledger_signed(body)).role == "pointer"
    confirmation = ack("billing")
    reason = forged(coordinator, confirmation, ledger_signed(confirmation), Ack)
    assert reason == "key id 'ledger/l1' is the producers' ledger key; it cannot sign a message of type 'ack'"


def test_producers_sign_for_the_ledger_and_the_local_ledger_key_stays_on_loopback() -> None:
    local, body = Settings(amqp_url="amqp://u:p@127.0.0.1:5672/%2F"), pointer()
    headers = local.pointer_signer().sign(body)
    assert headers[LEDGER_KEY_ID_HEADER] == "ledger/local"
    assert local.coordinator_verifier().verify(body, headers).role == "ledger"
    remote: dict[str, Any] = {"amqp_url": "amqp://u:p@rmq.example:5672/%2F", "pointer_signing_key": POINTER_SIGNING,
                              "pointer_verify_keys": POINTER_VERIFY, "ack_verify_keys": f"billing:{BILLING}",
                              "coordinator_key": COORDINATOR}
    with pytest.raises(InsecureDefault, match="CLAIMCHECK_LEDGER_SIGNING_KEY is not set"):
        Settings(**remote).pointer_signer()
    with pytest.raises(InsecureDefault, match="CLAIMCHECK_LEDGER_VERIFY_KEYS is not set"):
        Settings(**remote).coordinator_verifier()
    assert Settings(**remote, ledger_verify_keys=LEDGER).coordinator_verifier().verify(body, ledger_signed(body)).role == "ledger"


def ack_batch(recipient: str, count: int = 2) -> bytes:
    return AckBatch(recipient=recipient, consumer="c", acked_at=now(),
                    acks=tuple(AckedObject(object_id=f"{n:032x}", job="j", payload_sha256=SHA) for n in range(count))).encode()


def test_a_group_signs_ack_batches_for_itself_only_and_each_counts_as_single_acks() -> None:
    verifier = coordinator_verifier()
    body = ack_batch("billing", 3)
    batch = decode_signed(verifier, body, ack_signer(BILLING, "billing").sign(body), Ack, AckBatch)
    assert isinstance(batch, AckBatch)
    assert [(a.object_id, a.recipient, a.consumer) for a in batch.each()] == [(f"{n:032x}", "billing", "c") for n in range(3)]
    reason = forged(verifier, body, ack_signer(AUDIT, "audit").sign(body), Ack, AckBatch)
    assert reason == "ACK for recipient 'billing' signed with group 'audit''s key 'audit/k1'"
    reason = forged(verifier, body, pointer_signer(POINTER_SIGNING).sign(body), Ack, AckBatch)
    assert reason == "key id 'p1' is a producer's pointer key; it cannot sign a message of type 'ack' or 'ack_batch'"


@pytest.mark.parametrize(("acks", "reason"), [
    ([], "invalid ack_batch: acks: Tuple should have at least 1 item after validation, not 0"),
    ([{"object_id": OBJECT_ID, "job": "j", "payload_sha256": SHA}] * 2,
     "invalid ack_batch: an object is confirmed twice in one batch"),
    ([{"object_id": f"{n:032x}", "job": "j", "payload_sha256": SHA} for n in range(101)],
     "invalid ack_batch: acks: Tuple should have at most 100 items after validation, not 101"),
])
def test_malformed_ack_batches_are_invalid(acks: list[dict[str, str]], reason: str) -> None:
    body = json.dumps({"version": 1, "type": "ack_batch", "recipient": "billing", "consumer": "c",
                       "acked_at": "2026-11-30T00:00:00Z", "acks": acks}).encode()
    with pytest.raises(InvalidMessage) as caught:
        decode_signed(coordinator_verifier(), body, ack_signer(BILLING, "billing").sign(body), Ack, AckBatch)
    assert (caught.value.category, caught.value.reason) == ("invalid", reason)


def intent_batch(count: int = 2, bucket: str = "claimcheck", prefix: str = "") -> bytes:
    return IntentBatch(created_at=now(), intents=tuple(
        AnnouncedObject(object_id=f"{n:032x}", job="j", bucket=bucket, key=object_key("j", f"{n:032x}", prefix=prefix))
        for n in range(count))).encode()


def test_producers_sign_intent_batches_and_each_applies_as_a_single_intent() -> None:
    verifier = coordinator_verifier(ledger_keys=LEDGER)
    body = intent_batch(3)
    batch = decode_signed(verifier, body, ledger_signed(body), Pointer, Intent, IntentBatch, Barrier,
                          bucket="claimcheck")
    assert isinstance(batch, IntentBatch)
    assert [(i.object_id, i.key, i.created_at) for i in batch.each()] == [
        (f"{n:032x}", f"j/{n:032x}.json.gz", batch.created_at) for n in range(3)]
    assert all(isinstance(intent, Intent) for intent in batch.each())
    reason = forged(verifier, body, ack_signer(BILLING, "billing").sign(body), Pointer, Intent, IntentBatch, Barrier)
    assert reason == ("key id 'billing/k1' is a recipient group's ACK key; it cannot sign a message of type "
                      "'pointer' or 'intent' or 'intent_batch' or 'barrier'")


def test_an_intent_batch_naming_any_object_outside_the_bucket_or_prefix_is_foreign() -> None:
    batch = IntentBatch.model_validate_json(intent_batch(2))
    check_bucket(batch, "claimcheck")
    elsewhere = IntentBatch(created_at=now(), intents=(*batch.intents, AnnouncedObject(
        object_id="f" * 32, job="j", bucket="other-bucket", key=object_key("j", "f" * 32))))
    with pytest.raises(InvalidMessage, match="names bucket 'other-bucket'") as caught:
        check_bucket(elsewhere, "claimcheck")
    assert caught.value.category == "foreign_bucket"
    with pytest.raises(InvalidMessage, match="not under the configured key prefix 'tenant/'"):
        check_bucket(batch, "claimcheck", "tenant/")


@pytest.mark.parametrize(("intents", "reason"), [
    ([], "invalid intent_batch: intents: Tuple should have at least 1 item after validation, not 0"),
    ([{"object_id": OBJECT_ID, "job": "j", "bucket": "claimcheck", "key": object_key("j", OBJECT_ID)}] * 2,
     "invalid intent_batch: an object is announced twice in one batch"),
    ([{"object_id": OBJECT_ID, "job": "j", "bucket": "claimcheck", "key": object_key("j", "1" * 32)}],
     "invalid intent_batch: intents.0: key must be j/00000000000000000000000000000000.<extension> (after the key "
     "prefix), the object the message names"),
    ([{"object_id": f"{n:032x}", "job": "j", "bucket": "claimcheck", "key": object_key("j", f"{n:032x}")}
      for n in range(65)],
     "invalid intent_batch: intents: Tuple should have at most 64 items after validation, not 65"),
])
def test_malformed_intent_batches_are_invalid(intents: list[dict[str, str]], reason: str) -> None:
    body = json.dumps({"version": 1, "type": "intent_batch", "created_at": "2026-11-30T00:00:00Z",
                       "intents": intents}).encode()
    with pytest.raises(InvalidMessage) as caught:
        decode_signed(coordinator_verifier(ledger_keys=LEDGER), body, ledger_signed(body), Intent, IntentBatch)
    assert (caught.value.category, caught.value.reason) == ("invalid", reason)


def test_the_largest_intent_batch_fits_a_message() -> None:
    """64 intents of the longest job name under the longest key prefix stay under the body limit."""
    job, prefix = "j" * 128, "/".join(["p" * 63] * 8) + "/"
    longest = IntentBatch(created_at=now(), intents=tuple(
        AnnouncedObject(object_id=f"{n:032x}", job=job, bucket="b" * 63, key=object_key(job, f"{n:032x}", "bin.gz", prefix))
        for n in range(MAX_INTENTS_PER_BATCH)))
    assert len(longest.encode()) <= MAX_MESSAGE_BYTES
