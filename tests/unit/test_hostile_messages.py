"""Anything a publisher can send, through the decode-and-verify step every consumer and
coordinator runs first: it either yields a message or raises InvalidMessage with a readable,
bounded reason. No other exception, whatever the body and whatever the header values.

The same inputs go through the live components in tests/integration/test_hostile_input.py.
"""

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claimcheck.config import Settings
from claimcheck.localstack import ports
from claimcheck.protocol import (
    MAX_MESSAGE_BYTES,
    POINTER_QUEUE_KINDS,
    RECIPIENT_QUEUE_KINDS,
    Ack,
    InvalidMessage,
    Pointer,
    make_pointer,
    now,
    object_key,
)
from claimcheck.signing import KEY_ID_HEADER, SIGNATURE_HEADER, Verifier, decode_signed

LOCAL = Settings(amqp_url=f"amqp://guest:guest@{ports.HOST}:{ports.LOCAL.amqp}/%2F")  # a broker on loopback
VERIFIER = LOCAL.coordinator_verifier()
POINTERS = LOCAL.pointer_signer()
ACKS = LOCAL.ack_signer("billing")
SHA = "a" * 64
OBJECT_ID = "0" * 32

# AMQP field-table values as pika decodes them: what a header can hold.
amqp_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80), st.binary(max_size=80), st.decimals(allow_nan=False, allow_infinity=False, places=2),
)
amqp_values = st.recursive(amqp_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
KEY_IDS = st.sampled_from(["local", "billing/local", "coordinator/local", "é"])
signature_headers = st.fixed_dictionaries({}, optional={KEY_ID_HEADER: st.one_of(KEY_IDS, amqp_values),
                                                        SIGNATURE_HEADER: st.one_of(st.text(max_size=70), amqp_values)})
header_maps = st.one_of(st.none(), signature_headers,
                        st.dictionaries(st.text(min_size=1, max_size=20), amqp_values, max_size=6).flatmap(
                            lambda extra: signature_headers.map(lambda sig: {**extra, **sig})))


def valid_pointer() -> dict[str, Any]:
    pointer = make_pointer(object_id=OBJECT_ID, job="job-1", bucket="claimcheck", key=object_key("job-1", OBJECT_ID),
                           payload_size=10, payload_sha256=SHA, object_size=5, object_sha256=SHA, recipients=["billing"])
    return json.loads(pointer.encode())  # type: ignore[no-any-return]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=16)


@st.composite
def near_valid_documents(draw: Any) -> bytes:
    """A valid pointer, pointer batch or ACK with fields replaced, removed or added, also inside
    a batch's pointers: the parser's hard cases."""
    kind = draw(st.sampled_from(["pointer", "pointer_batch", "ack"]))
    if kind == "ack":
        document = json.loads(Ack(object_id=OBJECT_ID, job="job-1", recipient="billing", payload_sha256=SHA, consumer="c",
                                  acked_at=now()).encode())
    else:
        document = valid_pointer()
    if kind == "pointer_batch":
        mutate(draw, document)
        document = {"type": "pointer_batch", "version": 1, "created_at": "2026-11-30T00:00:00Z",
                    "pointers": [valid_pointer(), document]}
    mutate(draw, document)
    return json.dumps(document).encode()


def mutate(draw: Any, document: dict[str, Any]) -> None:
    """Replace, remove or add a few fields of ``document``."""
    for name in draw(st.lists(st.sampled_from(sorted(document)), max_size=3)):
        if draw(st.booleans()):
            document[name] = draw(json_values)
        else:
            document.pop(name, None)
    if draw(st.booleans()):
        document[draw(st.text(max_size=8))] = draw(json_values)


bodies = st.one_of(st.binary(max_size=300), near_valid_documents(),
                   st.sampled_from([b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"1" * 5000,
                                    b'{"type": "pointer", "version": true}', b"\xff\xfe{}", b'"\\ud800"']))


def judge(body: bytes, headers: Any, kinds: tuple[type[Any], ...], sign: bool) -> None:
    if sign:
        headers = {**(headers or {}), **(ACKS if Ack in kinds else POINTERS).sign(body)}
    try:
        decode_signed(VERIFIER, body, headers, *kinds, bucket="claimcheck")
    except InvalidMessage as exc:
        assert exc.reason and len(exc.reason) <= 600, exc.reason
        assert exc.category in {"invalid", "forged", "foreign_bucket"}


@settings(max_examples=600, deadline=None)
@given(body=bodies, headers=header_maps, sign=st.booleans(), coordinator=st.booleans())
def test_any_body_and_any_headers_end_in_a_message_or_a_reason(body: bytes, headers: Any, sign: bool,
                                                               coordinator: bool) -> None:
    judge(body, headers, POINTER_QUEUE_KINDS if coordinator else RECIPIENT_QUEUE_KINDS, sign)
    judge(body, headers, (Ack,), sign)


@pytest.mark.parametrize("signature", ["é" * 64, "\x00", "ab" * 100, b"\xff" * 64])
def test_non_ascii_or_odd_signature_with_a_known_key_id_is_forged_not_a_crash(signature: Any) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_signed(VERIFIER, b"{}", {KEY_ID_HEADER: "local", SIGNATURE_HEADER: signature}, Pointer)
    assert caught.value.category == "forged"
    assert caught.value.reason.startswith("signature does not match")


@pytest.mark.parametrize("key_id", [7, ["local"], {"k": "local"}, Decimal("1.5"), b"local\xff"])
def test_signature_headers_of_other_types_are_forged(key_id: Any) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_signed(VERIFIER, b"{}", {KEY_ID_HEADER: key_id, SIGNATURE_HEADER: "00" * 32}, Pointer)
    assert caught.value.category == "forged"


def test_an_oversized_body_is_refused_before_its_signature_is_computed() -> None:
    class Refusing(Verifier):
        def verify(self, body: bytes, headers: Any) -> Any:
            raise AssertionError("signature computed over an oversized body")

    body = b" " * (MAX_MESSAGE_BYTES + 1)
    with pytest.raises(InvalidMessage, match=f"exceeds the {MAX_MESSAGE_BYTES}-byte limit"):
        decode_signed(Refusing(), body, POINTERS.sign(body), Pointer)


def test_deep_nesting_is_invalid_not_a_recursion_error() -> None:
    body = b'{"type": "pointer", "version": 1, "recipients": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(InvalidMessage):
        decode_signed(VERIFIER, body, POINTERS.sign(body), Pointer)


def test_a_pointer_must_name_its_own_object_in_the_configured_bucket() -> None:
    document = valid_pointer()
    other = object_key("job-1", "1" * 32)
    for changes, reason in (({"key": other}, "key must be job-1/"), ({"key": "job-1/x.json.gz"}, "key must be"),
                            ({"bucket": "elsewhere"}, "names bucket 'elsewhere'")):
        body = json.dumps({**document, **changes}).encode()
        with pytest.raises(InvalidMessage, match=reason):
            decode_signed(VERIFIER, body, POINTERS.sign(body), Pointer, bucket="claimcheck")


def test_text_the_ledger_cannot_store_is_invalid() -> None:
    ack = json.loads(Ack(object_id=OBJECT_ID, job="j", recipient="billing", payload_sha256=SHA, consumer="c",
                         acked_at=now()).encode())
    for consumer in ("nul\x00byte", "é", "\ud800"):
        body = json.dumps({**ack, "consumer": consumer}).encode()
        with pytest.raises(InvalidMessage, match="consumer"):
            decode_signed(VERIFIER, body, ACKS.sign(body), Ack)
    naive = json.dumps({**ack, "acked_at": "2026-01-01T00:00:00"}).encode()
    with pytest.raises(InvalidMessage, match="acked_at"):
        decode_signed(VERIFIER, naive, ACKS.sign(naive), Ack)
