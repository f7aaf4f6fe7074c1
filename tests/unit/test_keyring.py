import pytest

from claimcheck.protocol import InvalidMessage
from claimcheck.signing import KEY_ID_HEADER, SIGNATURE_HEADER, Keyring

OLD = "old:0123456789abcdef-old"
NEW = "new:0123456789abcdef-new"


def test_signed_body_verifies() -> None:
    keyring = Keyring.parse(NEW)
    headers = keyring.sign(b"body")
    assert headers[KEY_ID_HEADER] == "new"
    keyring.verify(b"body", headers)


def test_rotation_signs_with_the_first_key_and_accepts_the_others() -> None:
    before, after = Keyring.parse(OLD), Keyring.parse(f"{NEW},{OLD}")
    after.verify(b"body", before.sign(b"body"))
    assert after.sign(b"body")[KEY_ID_HEADER] == "new"
    with pytest.raises(InvalidMessage, match="unknown signing key id 'new'"):
        before.verify(b"body", after.sign(b"body"))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (None, "not signed"),
        ({KEY_ID_HEADER: "new"}, "not signed"),
        ({KEY_ID_HEADER: "evil", SIGNATURE_HEADER: "00"}, "unknown signing key id 'evil'"),
        ({KEY_ID_HEADER: b"new", SIGNATURE_HEADER: b"00"}, "signature does not match"),
    ],
)
def test_unsigned_or_forged_bodies_are_rejected(headers: dict[str, object] | None, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        Keyring.parse(NEW).verify(b"body", headers)
    assert caught.value.category == "forged" and reason in caught.value.reason


def test_tampered_body_is_rejected() -> None:
    keyring = Keyring.parse(NEW)
    with pytest.raises(InvalidMessage, match="does not match"):
        keyring.verify(b"bodY", keyring.sign(b"body"))


@pytest.mark.parametrize("text", ["", "nokey", "kid:short", ":0123456789abcdef0"])
def test_bad_keyrings_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Keyring.parse(text)
