"""Settings shared by every component, read from ``CLAIMCHECK_*`` environment variables.

Defaults point at the local stack that ``make up`` starts (ports in docs/interfaces.md).
"""

from functools import lru_cache

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from claimcheck.signing import Keyring


class Settings(BaseSettings):
    """Where the services are and how to reach them."""

    model_config = SettingsConfigDict(env_prefix="CLAIMCHECK_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:35672/%2F"
    s3_endpoint_url: str = "http://127.0.0.1:38333"
    s3_access_key_id: str = "claimcheck"
    s3_secret_access_key: str = "claimcheck-secret"
    s3_region: str = "us-east-1"
    s3_bucket: str = "claimcheck"
    database_url: str = "postgresql://claimcheck:claimcheck@127.0.0.1:35432/claimcheck"
    coordinator_url: str = "http://127.0.0.1:38080"
    http_port: int = 38080
    # Where components bind their HTTP endpoint (health, readiness, metrics, the coordinator's API).
    http_host: str = "0.0.0.0"
    log_level: str = "INFO"
    # Seconds a publisher waits for a broker confirm before retrying on a fresh channel.
    confirm_timeout: float = 15.0
    # HMAC keys for pointers and ACKs, "kid:secret[,kid:secret]": the first signs, all verify.
    # The default is for the local stack only; the Helm chart generates a random one.
    hmac_keys: str = "local:claimcheck-local-signing-key"
    # Recipient groups a producer may name; empty allows any valid name.
    recipients: str = ""
    # The orphan sweeper deletes objects no live pointer references once they are this old.
    sweep_grace_seconds: float = 3600.0
    sweep_interval_seconds: float = 300.0

    @field_validator("hmac_keys")
    @classmethod
    def _keyring_parses(cls, value: str) -> str:
        Keyring.parse(value)
        return value

    def keyring(self) -> Keyring:
        """The parsed HMAC keyring."""
        return Keyring.parse(self.hmac_keys)

    def allowed_recipients(self) -> frozenset[str]:
        """The configured recipient groups (empty: any)."""
        return frozenset(name.strip() for name in self.recipients.split(",") if name.strip())


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
