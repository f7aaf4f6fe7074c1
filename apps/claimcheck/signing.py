"""HMAC signatures on pointers and ACKs, so that nobody who can merely publish to the broker
can make consumers fetch, or the coordinator delete, arbitrary keys.

The signature covers the exact message body (which names bucket, key, sizes, checksums,
recipients, and for an ACK the recipient itself), so a tampered field, or an ACK re-sent as
another recipient's, fails verification. Keys rotate: the first key of the keyring signs,
every listed key verifies, and the key id travels in a header.
"""

import hmac
from collections.abc import Mapping
from typing import Any

from claimcheck.protocol import InvalidMessage, M, brief, check_bucket, check_size, decode

KEY_ID_HEADER = "x-claimcheck-key-id"
SIGNATURE_HEADER = "x-claimcheck-signature"


class Keyring:
    """Named HMAC-SHA256 secrets; the first one signs."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("the keyring needs at least one key")
        self._keys = dict(keys)
        self.signing_key_id = next(iter(self._keys))

    @classmethod
    def parse(cls, text: str) -> "Keyring":
        """``kid:secret[,kid:secret...]``, as in ``CLAIMCHECK_HMAC_KEYS``."""
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key_id, sep, secret = item.partition(":")
            if not sep or not key_id or len(secret) < 16:
                raise ValueError("CLAIMCHECK_HMAC_KEYS must be kid:secret pairs, each secret at least 16 characters")
            keys[key_id] = secret.encode()
        return cls(keys)

    def _digest(self, key_id: str, body: bytes) -> str:
        return hmac.digest(self._keys[key_id], body, "sha256").hex()  # one-shot: OpenSSL's fast path

    def sign(self, body: bytes) -> dict[str, str]:
        """The headers that sign ``body``."""
        return {KEY_ID_HEADER: self.signing_key_id, SIGNATURE_HEADER: self._digest(self.signing_key_id, body)}

    def verify(self, body: bytes, headers: Mapping[str, Any] | None) -> None:
        """Raise :class:`InvalidMessage` (category ``forged``) unless ``body`` is signed by a known key.

        Headers come from whoever published, so they may hold any AMQP type: anything but text
        (or bytes) is refused, and the signature is compared as bytes, which never raises.
        """
        headers = headers if isinstance(headers, Mapping) else {}
        key_id, signature = headers.get(KEY_ID_HEADER), headers.get(SIGNATURE_HEADER)
        if not key_id or not signature:
            raise InvalidMessage("message is not signed", "forged")
        if not isinstance(key_id, str | bytes) or not isinstance(signature, str | bytes):
            raise InvalidMessage("signature headers must be text, got "
                                 f"{type(key_id).__name__} and {type(signature).__name__}", "forged")
        key_name = key_id.decode(errors="replace") if isinstance(key_id, bytes) else key_id
        if key_name not in self._keys:
            raise InvalidMessage(f"unknown signing key id {brief(repr(key_name))}", "forged")
        given = signature.encode(errors="surrogateescape") if isinstance(signature, str) else signature
        if not hmac.compare_digest(given, self._digest(key_name, body).encode()):
            raise InvalidMessage(f"signature does not match the message (key id {key_name!r})", "forged")


def decode_signed(keyring: Keyring, body: bytes, headers: Mapping[str, Any] | None, *kinds: type[M],
                  bucket: str | None = None) -> M:
    """Check the size, verify the signature, then parse: a forged message is rejected before it is read.

    With ``bucket``, a message naming an object in any other bucket is refused too (``foreign_bucket``).
    """
    check_size(body)
    keyring.verify(body, headers)
    message = decode(body, *kinds)
    if bucket is not None:
        check_bucket(message, bucket)
    return message
