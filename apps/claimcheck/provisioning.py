"""Provisioning, an administrator's step: the broker topology and one broker user per role.

Run by ``make up`` for the local stack and by the chart's hook Job on Kubernetes, with the
broker's administrator credentials, which no application component holds. Each user gets the
permissions of :mod:`claimcheck.topology` for its role and nothing else.
"""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from claimcheck import topology
from claimcheck.publisher import BrokerSession, reconnecting


class ProvisioningError(Exception):
    """The management API refused or could not be reached; the message says which call."""


@dataclass(frozen=True)
class BrokerUser:
    """A role's broker account: ``role`` is ``producer``, ``coordinator`` or ``recipient.<group>``."""

    role: str
    user: str
    password: str

    def permissions(self) -> tuple[str, str, str]:
        """(configure, write, read) regexes of this role."""
        if self.role == "producer":
            return topology.PRODUCER_PERMISSIONS
        if self.role == "coordinator":
            return topology.COORDINATOR_PERMISSIONS
        return topology.recipient_permissions(self.role.removeprefix("recipient."))


def parse_users(text: str) -> list[BrokerUser]:
    """``role=user:password[,...]`` as in ``CLAIMCHECK_BROKER_USERS``."""
    users = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, _, credentials = item.partition("=")
        user, _, password = credentials.partition(":")
        valid_role = role in ("producer", "coordinator") or (role.startswith("recipient.") and len(role) > 10)
        if not valid_role or not user or not password:
            raise ValueError("CLAIMCHECK_BROKER_USERS must be role=user:password items (role: producer, coordinator "
                             f"or recipient.<group>), got {item.split(':')[0]!r}")
        users.append(BrokerUser(role, user, password))
    return users


class Management:
    """A minimal client of RabbitMQ's management HTTP API (users and permissions)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        self._base = urllib.parse.urlunsplit(parts._replace(netloc=netloc, path=parts.path.rstrip("/") + "/api"))
        credentials = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        self._auth = "Basic " + base64.b64encode(credentials.encode()).decode()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(f"{self._base}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": self._auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise ProvisioningError(f"management API {method} {path}: {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ProvisioningError(f"management API at {self._base} unreachable: {exc}") from None
        return json.loads(payload) if payload else None


def provision(amqp_url: str, management_url: str, recipients: list[str], users: list[BrokerUser],
              confirm_timeout: float = 15.0, shards: int = 1) -> None:
    """Declare the whole topology (``shards`` coordinator shards) with the admin's ``amqp_url``,
    then create or update ``users``."""
    session = BrokerSession(amqp_url, lambda channel: topology.declare(channel, recipients, shards), confirm_timeout)
    try:
        reconnecting(session.channel)()
    finally:
        session.close()
    if not users:
        return
    api = Management(management_url)
    vhost = urllib.parse.quote(urllib.parse.unquote(urllib.parse.urlsplit(amqp_url).path.lstrip("/")) or "/", safe="")
    for account in users:
        api.call("PUT", f"/users/{urllib.parse.quote(account.user, safe='')}", {"password": account.password, "tags": ""})
        configure, write, read = account.permissions()
        api.call("PUT", f"/permissions/{vhost}/{urllib.parse.quote(account.user, safe='')}",
                 {"configure": configure, "write": write, "read": read})
