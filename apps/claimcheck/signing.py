"""Signatures that say who signed, so that holding one role's keys lets nobody act as another.

- **Pointers and intents** are signed by producers with Ed25519: consumers and coordinators
  verify them with public keys, which let nobody sign a pointer.
- **Business ACKs** are signed with an HMAC key of the recipient group's own: a consumer of
  ``audit`` holds nothing that confirms for ``billing``. The coordinator holds every group's key
  and counts an ACK only if the key that signed it belongs to the recipient the ACK names.
  (HMAC, not Ed25519: the coordinator verifies thousands of ACKs a second; docs/security.md
  has the measurement.)
- **Barriers** (the sweeper's markers) are signed with the coordinators' own HMAC key.
- **The ledger signature.** Producers also sign pointers and intents with an HMAC key held only
  by producers and coordinators, in headers of its own. Coordinators verify that one (a few
  microseconds) instead of the Ed25519 signature (over a hundred), which kept the coordinator's
  drain rate; consumers do not hold the key and keep verifying Ed25519. A key that lets a
  coordinator sign a pointer gives it nothing it does not already have: it decides deletions.

A key id travels in a header; the signed message is the exact body. Verifiers may hold several
keys per role at once (rotation: add the new verification key everywhere, then sign with it,
then drop the old one); ids listed as retired are refused by name. A message signed by an
unknown or retired key, or by a key of another role, is ``forged`` with a reason that says which.
"""

import base64
import dataclasses
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from claimcheck.protocol import (
    RECIPIENT_PATTERN,
    Ack,
    AckBatch,
    Barrier,
    Intent,
    IntentBatch,
    InvalidMessage,
    M,
    Pointer,
    PointerBatch,
    brief,
    check_bucket,
    check_size,
    decode,
)

KEY_ID_HEADER = "x-claimcheck-key-id"
SIGNATURE_HEADER = "x-claimcheck-signature"
LEDGER_KEY_ID_HEADER = "x-claimcheck-ledger-key-id"
LEDGER_SIGNATURE_HEADER = "x-claimcheck-ledger-signature"

Role = Literal["pointer", "ack", "coordinator", "ledger"]
# Which messages each role may sign.
ROLE_SIGNS: dict[str, tuple[type[Any], ...]] = {
    "pointer": (Pointer, PointerBatch, Intent, IntentBatch), "ack": (Ack, AckBatch),
    "coordinator": (Barrier,), "ledger": (Pointer, PointerBatch, Intent, IntentBatch)}
ROLE_NAMES = {"pointer": "a producer's pointer key", "ack": "a recipient group's ACK key",
              "coordinator": "the coordinators' key", "ledger": "the producers' ledger key"}
MIN_SECRET = 16
LOCAL_KEY_ID = "local"


def local_ack_secret(group: str) -> str:
    """The built-in ACK key of ``group`` on the local stack: public knowledge, refused off loopback."""
    return f"claimcheck-local-ack-key-of-{group}"


class KeyFormatError(ValueError):
    """A key setting that does not parse; the message says which and how it should look."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise KeyFormatError(f"{what}: not base64") from None


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _one(text: str, what: str) -> tuple[str, str]:
    """The single ``kid:key`` of a signing-key setting."""
    items = _pairs(text, what, 2)
    if len(items) != 1:
        raise KeyFormatError(f"{what} must be exactly one kid:key")
    return items[0][0], items[0][1]


def _pairs(text: str, what: str, parts: int) -> list[list[str]]:
    """``a:b[,a:b...]`` (or ``a:b:c`` with ``parts=3``), each part non-empty."""
    items = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        fields = item.split(":", parts - 1)
        if len(fields) != parts or not all(fields):
            raise KeyFormatError(f"{what} must be {'group:kid:secret' if parts == 3 else 'kid:key'} items separated by commas")
        items.append(fields)
    return items


def _check_key_id(key_id: str, what: str) -> None:
    if "/" in key_id or len(key_id) > 64 or not key_id.isprintable():
        raise KeyFormatError(f"{what}: key id {key_id!r} must be printable, without '/', at most 64 characters")


@dataclass(frozen=True)
class Signer:
    """Signs message bodies with one key; ``key_id`` is what travels in the header."""

    key_id: str
    _ed25519: Ed25519PrivateKey | None = None
    _secret: bytes = b""
    # A producer's second signature, for coordinators (the ledger key, HMAC).
    ledger: "Signer | None" = None

    def sign(self, body: bytes) -> dict[str, str]:
        """The headers that sign ``body``."""
        if self._ed25519 is not None:
            signature = self._ed25519.sign(body).hex()
        else:
            signature = hmac.digest(self._secret, body, "sha256").hex()  # one-shot: OpenSSL's fast path
        headers = {KEY_ID_HEADER: self.key_id, SIGNATURE_HEADER: signature}
        if self.ledger is not None:
            second = self.ledger.sign(body)
            headers[LEDGER_KEY_ID_HEADER], headers[LEDGER_SIGNATURE_HEADER] = second[KEY_ID_HEADER], second[SIGNATURE_HEADER]
        return headers

    def with_ledger(self, ledger: "Signer") -> "Signer":
        """This signer, also signing with the producers' ledger key."""
        return dataclasses.replace(self, ledger=ledger)


def pointer_signer(text: str) -> Signer:
    """A producer's signer from ``kid:<urlsafe base64 of the 32-byte Ed25519 seed>``."""
    key_id, seed = _one(text, "CLAIMCHECK_POINTER_SIGNING_KEY")
    _check_key_id(key_id, "CLAIMCHECK_POINTER_SIGNING_KEY")
    raw = _b64decode(seed, "CLAIMCHECK_POINTER_SIGNING_KEY")
    if len(raw) != 32:
        raise KeyFormatError("CLAIMCHECK_POINTER_SIGNING_KEY must hold a 32-byte Ed25519 seed")
    return Signer(key_id, _ed25519=Ed25519PrivateKey.from_private_bytes(raw))


def hmac_signer(key_id: str, secret: str, what: str) -> Signer:
    """An HMAC-SHA256 signer; ``key_id`` is already namespaced (``group/kid``, ``coordinator/kid``)."""
    if len(secret) < MIN_SECRET:
        raise KeyFormatError(f"{what}: each secret must be at least {MIN_SECRET} characters")
    return Signer(key_id, _secret=secret.encode())


def ack_signer(text: str, group: str) -> Signer:
    """Recipient ``group``'s ACK signer from ``kid:secret``; its key id says the group."""
    key_id, secret = _one(text, "CLAIMCHECK_ACK_SIGNING_KEY")
    _check_key_id(key_id, "CLAIMCHECK_ACK_SIGNING_KEY")
    return hmac_signer(f"{group}/{key_id}", secret, "CLAIMCHECK_ACK_SIGNING_KEY")


def coordinator_signer(text: str) -> Signer:
    """The coordinators' signer from ``kid:secret`` (barriers)."""
    key_id, secret = _one(text, "CLAIMCHECK_COORDINATOR_KEY")
    _check_key_id(key_id, "CLAIMCHECK_COORDINATOR_KEY")
    return hmac_signer(f"coordinator/{key_id}", secret, "CLAIMCHECK_COORDINATOR_KEY")


def ledger_signer(text: str) -> Signer:
    """The producers' ledger signer from ``kid:secret`` (pointers and intents, for coordinators)."""
    key_id, secret = _one(text, "CLAIMCHECK_LEDGER_SIGNING_KEY")
    _check_key_id(key_id, "CLAIMCHECK_LEDGER_SIGNING_KEY")
    return hmac_signer(f"ledger/{key_id}", secret, "CLAIMCHECK_LEDGER_SIGNING_KEY")


def new_pointer_key(key_id: str) -> tuple[str, str]:
    """A fresh Ed25519 pair as ``(signing key, verify key)`` settings values."""
    _check_key_id(key_id, "key id")
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    return f"{key_id}:{b64(seed)}", f"{key_id}:{b64(private.public_key().public_bytes_raw())}"


def public_of(signing_key: str) -> str:
    """The verify-key setting that matches a pointer signing-key setting."""
    signer = pointer_signer(signing_key)
    assert signer._ed25519 is not None  # noqa: SLF001 - built just above
    return f"{signer.key_id}:{b64(signer._ed25519.public_key().public_bytes_raw())}"  # noqa: SLF001


@dataclass(frozen=True)
class Identity:
    """Who signed a message: the role of the key, and for an ACK key its group."""

    role: Role
    key_id: str
    group: str | None = None


class Verifier:
    """Every verification key a component holds, by key id, each with its role."""

    def __init__(
        self,
        pointer_keys: Mapping[str, Ed25519PublicKey] | None = None,
        ack_keys: Mapping[str, bytes] | None = None,  # "group/kid" -> secret
        coordinator_keys: Mapping[str, bytes] | None = None,  # "coordinator/kid" -> secret
        retired: Iterable[str] = (),
        signing_key_ids: Mapping[str, Role] | None = None,  # key ids this component signs with: named, never trusted
        local_acks: bool = False,  # accept every group's built-in local ACK key (the local stack only)
        ledger_keys: Mapping[str, bytes] | None = None,  # "ledger/kid" -> secret
    ) -> None:
        self._pointer = dict(pointer_keys or {})
        self._hmac: dict[str, tuple[Role, bytes]] = {kid: ("ack", secret) for kid, secret in (ack_keys or {}).items()}
        self._hmac.update({kid: ("coordinator", secret) for kid, secret in (coordinator_keys or {}).items()})
        self._ledger = dict(ledger_keys or {})
        self._retired = frozenset(retired)
        self._named = dict(signing_key_ids or {})
        self._local_acks = local_acks

    @classmethod
    def parse(cls, pointer_keys: str = "", ack_keys: str = "", coordinator_key: str = "", retired: str = "",
              signing_key_ids: Mapping[str, Role] | None = None, local_acks: bool = False,
              ledger_keys: str = "") -> "Verifier":
        """From the settings' texts (see docs/security.md for the formats)."""
        pointer = {}
        for key_id, public in _pairs(pointer_keys, "CLAIMCHECK_POINTER_VERIFY_KEYS", 2):
            _check_key_id(key_id, "CLAIMCHECK_POINTER_VERIFY_KEYS")
            raw = _b64decode(public, "CLAIMCHECK_POINTER_VERIFY_KEYS")
            if len(raw) != 32:
                raise KeyFormatError("CLAIMCHECK_POINTER_VERIFY_KEYS must hold 32-byte Ed25519 public keys")
            pointer[key_id] = Ed25519PublicKey.from_public_bytes(raw)
        acks = {}
        for group, key_id, secret in _pairs(ack_keys, "CLAIMCHECK_ACK_VERIFY_KEYS", 3):
            _check_key_id(key_id, "CLAIMCHECK_ACK_VERIFY_KEYS")
            if not re.match(RECIPIENT_PATTERN, group):
                raise KeyFormatError(f"CLAIMCHECK_ACK_VERIFY_KEYS: {group!r} is not a recipient group name")
            acks[f"{group}/{key_id}"] = hmac_signer(f"{group}/{key_id}", secret, "CLAIMCHECK_ACK_VERIFY_KEYS")._secret  # noqa: SLF001
        coordinator = {}
        if coordinator_key:
            signer = coordinator_signer(coordinator_key)
            coordinator[signer.key_id] = signer._secret  # noqa: SLF001
        ledger = {}
        for key_id, secret in _pairs(ledger_keys, "CLAIMCHECK_LEDGER_VERIFY_KEYS", 2):
            _check_key_id(key_id, "CLAIMCHECK_LEDGER_VERIFY_KEYS")
            ledger[f"ledger/{key_id}"] = hmac_signer(key_id, secret, "CLAIMCHECK_LEDGER_VERIFY_KEYS")._secret  # noqa: SLF001
        retired_ids = {item.strip() for item in retired.split(",") if item.strip()}
        return cls(pointer, acks, coordinator, retired_ids, signing_key_ids, local_acks, ledger)

    def verify(self, body: bytes, headers: Mapping[str, Any] | None) -> Identity:
        """Who signed ``body``; :class:`InvalidMessage` (``forged``) unless a key this verifier trusts did.

        Headers come from whoever published, so they may hold any AMQP type: anything but text
        (or bytes) is refused, and signatures are compared as bytes, which never raises.
        """
        headers = headers if isinstance(headers, Mapping) else {}
        if self._ledger and headers.get(LEDGER_KEY_ID_HEADER):
            name, given = _signature(headers, LEDGER_KEY_ID_HEADER, LEDGER_SIGNATURE_HEADER)
            if name in self._retired:
                raise InvalidMessage(f"signed with the retired ledger key id {brief(repr(name))}", "forged")
            if name in self._ledger:  # else (say, a key not rolled out here yet): the main signature decides
                if not hmac.compare_digest(given, hmac.digest(self._ledger[name], body, "sha256").hex().encode()):
                    raise InvalidMessage(f"ledger signature does not match the message (key id {name!r})", "forged")
                return Identity("ledger", name)
        name, given = _signature(headers, KEY_ID_HEADER, SIGNATURE_HEADER)
        if name in self._retired:
            raise InvalidMessage(f"signed with the retired key id {brief(repr(name))}", "forged")
        if name in self._pointer:
            try:
                self._pointer[name].verify(bytes.fromhex(given.decode("ascii")), body)
            except (InvalidSignature, ValueError, UnicodeDecodeError):
                raise InvalidMessage(f"signature does not match the message (key id {name!r})", "forged") from None
            return Identity("pointer", name)
        if name not in self._hmac and self._local_acks:
            group, _, kid = name.partition("/")
            if kid == LOCAL_KEY_ID and re.match(RECIPIENT_PATTERN, group):
                self._hmac[name] = ("ack", local_ack_secret(group).encode())
        if name in self._hmac:
            role, secret = self._hmac[name]
            if not hmac.compare_digest(given, hmac.digest(secret, body, "sha256").hex().encode()):
                raise InvalidMessage(f"signature does not match the message (key id {name!r})", "forged")
            return Identity(role, name, name.split("/", 1)[0] if role == "ack" else None)
        if name in self._named:
            raise InvalidMessage(f"key id {name!r} is {ROLE_NAMES[self._named[name]]}, which this component does not "
                                 "accept here", "forged")
        raise InvalidMessage(f"unknown signing key id {brief(repr(name))}", "forged")


def _signature(headers: Mapping[str, Any], key_id_header: str, signature_header: str) -> tuple[str, bytes]:
    """The key id and signature a message names, whatever types its publisher put there."""
    key_id, signature = headers.get(key_id_header), headers.get(signature_header)
    if not key_id or not signature:
        raise InvalidMessage("message is not signed", "forged")
    if not isinstance(key_id, str | bytes) or not isinstance(signature, str | bytes):
        raise InvalidMessage("signature headers must be text, got "
                             f"{type(key_id).__name__} and {type(signature).__name__}", "forged")
    name = key_id.decode(errors="replace") if isinstance(key_id, bytes) else key_id
    return name, signature.encode(errors="surrogateescape") if isinstance(signature, str) else signature


def decode_signed(verifier: Verifier, body: bytes, headers: Mapping[str, Any] | None, *kinds: type[M],
                  bucket: str | None = None, key_prefix: str = "") -> M:
    """Check the size, verify the signature, then parse: a forged message is rejected before it is read.

    The key's role must be one that signs such a message (a producer's key cannot sign an ACK, a
    group's key cannot sign a pointer), and an ACK must name the group whose key signed it. With
    ``bucket``, a message naming an object in any other bucket or outside ``key_prefix`` is
    refused (``foreign_bucket``).
    """
    check_size(body)
    signer = verifier.verify(body, headers)
    allowed = tuple(kind for kind in kinds if kind in ROLE_SIGNS[signer.role])
    if not allowed:
        wanted = " or ".join(repr(kind.model_fields["type"].default) for kind in kinds)
        raise InvalidMessage(f"key id {signer.key_id!r} is {ROLE_NAMES[signer.role]}; it cannot sign a message of "
                             f"type {wanted}", "forged")
    message = decode(body, *allowed)
    if isinstance(message, Ack | AckBatch) and message.recipient != signer.group:
        raise InvalidMessage(f"ACK for recipient {message.recipient!r} signed with group {signer.group!r}'s key "
                             f"{signer.key_id!r}", "forged")
    if bucket is not None:
        check_bucket(message, bucket, key_prefix)
    return message
