"""Settings shared by every component, read from ``CLAIMCHECK_*`` environment variables.

Defaults point at the local stack that ``make up`` starts (its ports and accounts: claimcheck/localstack). Each
role reads only the keys it needs (docs/security.md); a key left unset falls back to a built-in
local key, which is public knowledge and therefore refused unless the broker is on this machine.
"""

import hashlib
import ipaddress
import urllib.parse
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from claimcheck import signing
from claimcheck.localstack import accounts
from claimcheck.localstack.ports import HOST, LOCAL
from claimcheck.protocol import KEY_PREFIX_PATTERN, MAX_INLINE_BYTES
from claimcheck.signing import Signer, Verifier
from claimcheck.topology import MAX_SHARDS

# The built-in local keys: derived from public strings, so anyone could sign with them.
LOCAL_POINTER_SIGNING_KEY = f"{signing.LOCAL_KEY_ID}:" + signing.b64(hashlib.sha256(b"claimcheck local pointer key").digest())
LOCAL_COORDINATOR_KEY = f"{signing.LOCAL_KEY_ID}:claimcheck-local-coordinator-key"
LOCAL_CONTROL_TOKEN = "claimcheck-local-control-token"
LOCAL_LEDGER_KEY = f"{signing.LOCAL_KEY_ID}:claimcheck-local-ledger-key"


# How each key setting is parsed, so that a malformed one is refused when the settings are read.
_KEY_PARSERS: dict[str, Callable[[str], object]] = {
    "pointer_signing_key": signing.pointer_signer,
    "ack_signing_key": lambda value: signing.ack_signer(value, "group"),
    "coordinator_key": signing.coordinator_signer,
    "pointer_verify_keys": lambda value: Verifier.parse(pointer_keys=value),
    "ack_verify_keys": lambda value: Verifier.parse(ack_keys=value),
    "ledger_signing_key": signing.ledger_signer,
    "ledger_verify_keys": lambda value: Verifier.parse(ledger_keys=value),
}


class InsecureDefault(ValueError):
    """A built-in local key (or none at all) where the broker is not on this machine."""


class Settings(BaseSettings):
    """Where the services are and how to reach them."""

    model_config = SettingsConfigDict(env_prefix="CLAIMCHECK_", extra="ignore")

    amqp_url: str = f"amqp://guest:guest@{HOST}:{LOCAL.amqp}/%2F"
    s3_endpoint_url: str = f"http://{HOST}:{LOCAL.s3}"
    s3_access_key_id: str = accounts.ADMIN_S3.user
    s3_secret_access_key: str = accounts.ADMIN_S3.password
    s3_region: str = "us-east-1"
    s3_bucket: str = accounts.BUCKET
    database_url: str = f"postgresql://{accounts.DATABASE_OWNER.user}:{accounts.DATABASE_OWNER.password}@{accounts.DATABASE}"
    coordinator_url: str = f"http://{HOST}:{LOCAL.coordinator}"
    http_port: int = LOCAL.coordinator
    # Where components bind their HTTP endpoint (health, readiness, metrics, the coordinator's API).
    http_host: str = "0.0.0.0"
    log_level: str = "INFO"
    # Seconds a publisher waits for a broker confirm before retrying on a fresh channel.
    confirm_timeout: float = 15.0
    # Keys (docs/security.md): each role sets only its own; unset means the built-in local key.
    # Producers: "kid:<urlsafe base64 Ed25519 seed>" signing pointers and intents.
    pointer_signing_key: str = ""
    # Consumers and coordinators: "kid:<urlsafe base64 Ed25519 public key>[,...]".
    pointer_verify_keys: str = ""
    # A recipient group's replicas: "kid:secret", this group's own ACK key.
    ack_signing_key: str = ""
    # Coordinators: "group:kid:secret[,...]", every group's ACK key.
    ack_verify_keys: str = ""
    # Producers: "kid:secret", the ledger key signing pointers and intents a second time, for coordinators.
    ledger_signing_key: str = ""
    # Coordinators: "kid:secret[,...]", the ledger keys they accept (cheaper to verify than Ed25519).
    ledger_verify_keys: str = ""
    # Coordinators: "kid:secret" signing and verifying the sweeper's barriers.
    coordinator_key: str = ""
    # Key ids no longer accepted, named as retired in dead-letter reasons: "kid[,group/kid...]".
    retired_key_ids: str = ""
    # Coordinators: bearer tokens accepted by DELETE /jobs/<job>, "token[,token]".
    control_tokens: str = ""
    # The operator (or a person): the bearer token it sends.
    control_token: str = ""
    # Recipient groups a producer may name; empty allows any valid name.
    recipients: str = ""
    # Provisioning only (`claimcheck provision`, an admin's step): the management API with the
    # broker administrator's credentials, and the role accounts to create, "role=user:password,...".
    management_url: str = f"http://guest:guest@{HOST}:{LOCAL.management}"
    broker_users: str = ""
    # The orphan sweeper deletes objects no live pointer references once they are this old.
    sweep_grace_seconds: float = 3600.0
    sweep_interval_seconds: float = 300.0
    # Every component: the coordinator's queues come in this many shards (docs/scaling.md); an
    # object's messages travel through shard topology.shard_of(its id). The same for all roles:
    # a producer checks that every shard's queue exists before it publishes.
    coordinator_shards: int = Field(default=1, ge=1, le=MAX_SHARDS)
    # Coordinators: the shards this replica consumes, comma-separated ("" = all). Each shard
    # queue has a single active consumer, so replicas that share a shard stand by for each other.
    coordinator_shard_ids: str = ""

    # -- the library's data path (docs/library.md) -------------------------------------------
    # Payloads up to this many bytes travel inside the signed pointer and never touch S3
    # (at most protocol.MAX_INLINE_BYTES; 64 KiB from docs/benchmarks.md). 0: always S3.
    inline_threshold: int = Field(default=64 * 1024, ge=0, le=MAX_INLINE_BYTES)
    # Every component: keys are "<prefix><job>/<object id>.<ext>" (like the bucket, one per deployment).
    s3_key_prefix: str = Field(default="", pattern=KEY_PREFIX_PATTERN)
    # Producers: server-side encryption of stored payloads: "" (the bucket's default), "AES256"
    # (SSE-S3), "aws:kms" (SSE-KMS, with s3_sse_kms_key_id) or "SSE-C" (s3_sse_customer_key).
    s3_sse: Literal["", "AES256", "aws:kms", "SSE-C"] = ""
    s3_sse_kms_key_id: str = ""
    # SSE-C keys, urlsafe base64 of 32 bytes, comma-separated: producers encrypt with the first,
    # consumers decrypt with whichever the pointer names (rotation: add the new key to consumers first).
    s3_sse_customer_keys: str = ""
    # Producers: tag stored objects (claimcheck-managed=true, claimcheck-job=<job>) plus these
    # "k=v,..." tags, for a bucket lifecycle rule as a last-resort safety net. Needs s3:PutObjectTagging.
    s3_tag_objects: bool = False
    s3_tags: str = ""

    @field_validator(*_KEY_PARSERS)
    @classmethod
    def _keys_parse(cls, value: str, info: ValidationInfo) -> str:
        assert info.field_name is not None  # a field validator always runs for a named field
        if value:
            _KEY_PARSERS[info.field_name](value)  # a KeyFormatError names the setting
        return value

    # -- keys, by role -----------------------------------------------------------------------

    def broker_is_local(self) -> bool:
        """Whether the broker is on this machine (loopback), the only place built-in keys work."""
        host = urllib.parse.urlsplit(self.amqp_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def _own_or_local(self, value: str, local: str, setting: str) -> str:
        if value and value != local:
            return value
        if self.broker_is_local():
            return local
        host = urllib.parse.urlsplit(self.amqp_url).hostname
        state = "is the built-in local key" if value else "is not set, so the built-in local key would be used"
        raise InsecureDefault(f"CLAIMCHECK_{setting} {state}, which only a broker on this machine may see "
                              f"(the broker is {host}): generate keys with `claimcheck keys`")

    def pointer_signer(self) -> Signer:
        """A producer's signer for pointers and intents: the pointer key, and the ledger key for coordinators."""
        pointer = signing.pointer_signer(self._own_or_local(self.pointer_signing_key, LOCAL_POINTER_SIGNING_KEY,
                                                            "POINTER_SIGNING_KEY"))
        ledger = self._own_or_local(self.ledger_signing_key, LOCAL_LEDGER_KEY, "LEDGER_SIGNING_KEY")
        return pointer.with_ledger(signing.ledger_signer(ledger))

    def ack_signer(self, group: str) -> Signer:
        """Recipient ``group``'s ACK signer."""
        local = f"{signing.LOCAL_KEY_ID}:{signing.local_ack_secret(group)}"
        return signing.ack_signer(self._own_or_local(self.ack_signing_key, local, "ACK_SIGNING_KEY"), group)

    def coordinator_signer(self) -> Signer:
        """The coordinators' signer for the sweeper's barriers."""
        return signing.coordinator_signer(self._own_or_local(self.coordinator_key, LOCAL_COORDINATOR_KEY,
                                                             "COORDINATOR_KEY"))

    def _pointer_verify_keys(self) -> str:
        local = signing.public_of(LOCAL_POINTER_SIGNING_KEY)
        return self._own_or_local(self.pointer_verify_keys, local, "POINTER_VERIFY_KEYS")

    def consumer_verifier(self, group: str) -> Verifier:
        """What a replica of ``group`` verifies: pointers only; its own ACK key is named, never trusted."""
        return Verifier.parse(self._pointer_verify_keys(), retired=self.retired_key_ids,
                              signing_key_ids={self.ack_signer(group).key_id: "ack"})

    def coordinator_verifier(self) -> Verifier:
        """What a coordinator verifies: pointers and intents (by their ledger signature, else their pointer
        signature), every group's ACKs, barriers."""
        local_acks = not self.ack_verify_keys
        if local_acks:
            self._own_or_local("", "local", "ACK_VERIFY_KEYS")
        coordinator_key = self._own_or_local(self.coordinator_key, LOCAL_COORDINATOR_KEY, "COORDINATOR_KEY")
        ledger_keys = self._own_or_local(self.ledger_verify_keys, LOCAL_LEDGER_KEY, "LEDGER_VERIFY_KEYS")
        return Verifier.parse(self._pointer_verify_keys(), self.ack_verify_keys, coordinator_key,
                              self.retired_key_ids, local_acks=local_acks, ledger_keys=ledger_keys)

    def accepted_control_tokens(self) -> list[str]:
        """The bearer tokens a coordinator accepts on DELETE /jobs/<job>."""
        tokens = self._own_or_local(self.control_tokens, LOCAL_CONTROL_TOKEN, "CONTROL_TOKENS")
        return [token.strip() for token in tokens.split(",") if token.strip()]

    def sent_control_token(self) -> str:
        """The bearer token a client of DELETE /jobs/<job> sends."""
        return self._own_or_local(self.control_token, LOCAL_CONTROL_TOKEN, "CONTROL_TOKEN")

    def allowed_recipients(self) -> frozenset[str]:
        """The configured recipient groups (empty: any)."""
        return frozenset(name.strip() for name in self.recipients.split(",") if name.strip())

    @field_validator("coordinator_shard_ids")
    @classmethod
    def _shard_ids_exist(cls, value: str, info: ValidationInfo) -> str:
        shards = info.data.get("coordinator_shards")
        if shards is not None and not all(part.isdigit() and int(part) < shards for part in _shard_ids(value)):
            raise ValueError(f"{value!r}: shard numbers from 0 to {shards - 1} expected "
                             f"(CLAIMCHECK_COORDINATOR_SHARDS={shards})")
        return value

    def owned_shards(self) -> list[int]:
        """The shards this coordinator consumes (CLAIMCHECK_COORDINATOR_SHARD_IDS; all by default)."""
        return sorted({int(part) for part in _shard_ids(self.coordinator_shard_ids)}) or list(range(self.coordinator_shards))


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def _shard_ids(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
