import json
from typing import Any

import pytest

from claimcheck.protocol import MAX_MESSAGE_BYTES, Ack, InvalidMessage, Pointer, decode, make_pointer, now

SHA = "a" * 64


def pointer(**overrides: Any) -> Pointer:
    fields: dict[str, Any] = dict(
        object_id="0" * 32, job="job-1", bucket="claimcheck", key="job-1/" + "0" * 32 + ".json.gz", payload_size=10,
        payload_sha256=SHA, object_size=5, object_sha256="b" * 64, recipients=["billing", "audit"],
    )
    fields.update(overrides)
    return make_pointer(**fields)


def test_pointer_round_trips_and_derives_recipients_total() -> None:
    original = pointer(recipients=["billing", "audit", "billing"])
    decoded = decode(original.encode(), Pointer)
    assert decoded == original
    assert decoded.recipients == ("audit", "billing")
    assert decoded.recipients_total == 2


def test_a_stored_pointer_needs_no_object_sha256_and_encodes_without_it() -> None:
    """Producers no longer hash the gzip object; pointers of earlier ones still carry its sha256."""
    current, earlier = pointer(object_sha256=None), pointer()
    assert "object_sha256" not in json.loads(current.encode())
    assert decode(current.encode(), Pointer).stored.sha256 is None
    assert decode(earlier.encode(), Pointer).stored.sha256 == "b" * 64


def test_a_stored_pointer_without_its_object_size_is_invalid() -> None:
    with pytest.raises(InvalidMessage, match="needs bucket, key and object_size"):
        decode(_mutated(object_size=None), Pointer)


def test_ack_round_trips() -> None:
    ack = Ack(object_id="1" * 32, job="j", recipient="audit", payload_sha256=SHA, consumer="c", acked_at=now())
    assert decode(ack.encode(), Ack) == ack


def _mutated(**changes: object) -> bytes:
    document = json.loads(pointer().encode())
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_mutated(type="ack"), "expected a 'pointer' message"),
        (_mutated(version=2), "unsupported pointer version 2"),
        (_mutated(object_id="../../etc"), "object_id"),
        (_mutated(payload_sha256="xyz"), "payload_sha256"),
        (_mutated(recipients=[]), "recipients"),
        (_mutated(recipients=["billing", "billing"], recipients_total=2), "must not repeat"),
        (_mutated(recipients=["billing", "audit"]), "sorted"),
        (_mutated(recipients_total=5), "recipients_total"),
        (_mutated(recipients=["Bad_Name"], recipients_total=1), "recipients"),
        (_mutated(recipients=["coordinator"], recipients_total=1), "reserved"),
        (_mutated(payload_size=-1), "payload_size"),
        (_mutated(surprise=1), "surprise"),
        (b"{" + b" " * MAX_MESSAGE_BYTES + b"}", "exceeds"),
    ],
)
def test_malformed_pointers_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode(body, Pointer)
    assert reason in caught.value.reason


def test_missing_field_names_the_field() -> None:
    document = json.loads(pointer().encode())
    del document["key"]
    with pytest.raises(InvalidMessage, match="key"):
        decode(json.dumps(document).encode(), Pointer)


def test_metadata_values_are_printable_text_in_any_script_and_bounded_in_bytes() -> None:
    original = pointer(metadata={"customer": "Müller & Søn, 東京", "note": "naïve café ☕"})
    assert decode(original.encode(), Pointer).metadata == {"customer": "Müller & Søn, 東京", "note": "naïve café ☕"}
    body = json.loads(original.encode())
    for value, reason in [("tab\there", "must be printable text"), ("bell\x07", "must be printable text"),
                          ("\u202egnirts", "must be printable text"), ("\ud800", "unicode string")]:
        body["metadata"] = {"customer": value}
        with pytest.raises(InvalidMessage, match=reason):
            decode(json.dumps(body).encode(), Pointer)
    body["metadata"] = {f"k{n}": "東" * 200 for n in range(7)}  # 1,400 characters, 4,214 bytes of UTF-8
    with pytest.raises(InvalidMessage, match="4214 bytes"):
        decode(json.dumps(body).encode(), Pointer)
