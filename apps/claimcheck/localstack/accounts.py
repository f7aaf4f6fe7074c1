"""The local stack's account for each role (``make up``): one source for the stack (services.py),
the Makefile, the demo and the tests.

Like RabbitMQ's guest/guest these credentials are public: they exist only on a stack bound to
loopback. On Kubernetes the charts generate every credential (docs/kubernetes.md).

    python -m claimcheck.localstack env producer            # CLAIMCHECK_*=... of that role, one per line
    python -m claimcheck.localstack env recipient billing
    python -m claimcheck.localstack broker-users billing,audit
    python -m claimcheck.localstack s3-config               # SeaweedFS identities (JSON)
    python -m claimcheck.localstack reader-sql              # the read-only PostgreSQL role
"""

from dataclasses import dataclass

from claimcheck.localstack.ports import HOST, LOCAL

DATABASE_NAME = "claimcheck"
DATABASE = f"{HOST}:{LOCAL.postgresql}/{DATABASE_NAME}"
BUCKET = "claimcheck"


@dataclass(frozen=True)
class Account:
    user: str
    password: str


ADMIN_S3 = Account("claimcheck", "claimcheck-secret")  # creates the bucket; used by no component
S3 = {  # SeaweedFS actions: it has no separate Delete, so "Write" lets producers delete too
    "producer": (Account("cc-producer", "cc-producer-local-secret"), ["Write"]),
    "recipient": (Account("cc-consumer", "cc-consumer-local-secret"), ["Read"]),
    "coordinator": (Account("cc-coordinator", "cc-coordinator-local-secret"), ["Read", "Write", "List"]),
}
DATABASE_OWNER = Account("claimcheck", "claimcheck")
DATABASE_READER = Account("claimcheck_reader", "claimcheck-reader-local")


def broker_account(role: str, group: str | None = None) -> Account:
    """The broker user of ``role`` (``producer``, ``coordinator``, ``recipient`` with ``group``)."""
    name = f"recipient-{group}" if role == "recipient" else role
    return Account(f"cc-{name}", f"cc-{name}-local")


def role_env(role: str, group: str | None = None) -> dict[str, str]:
    """The CLAIMCHECK_* variables a component of ``role`` runs with on the local stack."""
    if role == "reader":
        return {"CLAIMCHECK_DATABASE_URL": _pg(DATABASE_READER)}
    broker = broker_account(role, group)
    s3, _ = S3[role]
    env = {
        "CLAIMCHECK_AMQP_URL": f"amqp://{broker.user}:{broker.password}@{HOST}:{LOCAL.amqp}/%2F",
        "CLAIMCHECK_S3_ACCESS_KEY_ID": s3.user,
        "CLAIMCHECK_S3_SECRET_ACCESS_KEY": s3.password,
    }
    if role == "coordinator":
        env["CLAIMCHECK_DATABASE_URL"] = _pg(DATABASE_OWNER)
    return env


def _pg(account: Account) -> str:
    return f"postgresql://{account.user}:{account.password}@{DATABASE}"


def broker_users(groups: list[str]) -> str:
    """CLAIMCHECK_BROKER_USERS for ``claimcheck provision``: the producer, the coordinator and ``groups``."""
    items = [("producer", broker_account("producer")), ("coordinator", broker_account("coordinator"))]
    items += [(f"recipient.{group}", broker_account("recipient", group)) for group in groups]
    return ",".join(f"{role}={account.user}:{account.password}" for role, account in items)


def s3_config() -> dict[str, object]:
    """SeaweedFS's identities file: the admin that creates the bucket, and one identity per role."""
    identities = [{"name": ADMIN_S3.user, "credentials": [{"accessKey": ADMIN_S3.user, "secretKey": ADMIN_S3.password}],
                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]
    for account, actions in S3.values():
        identities.append({"name": account.user,
                           "credentials": [{"accessKey": account.user, "secretKey": account.password}],
                           "actions": [f"{action}:{BUCKET}" for action in actions]})
    return {"identities": identities}


def reader_sql() -> str:
    """Create (or update) the read-only role, and let it read every ledger table, now and later."""
    reader, owner = DATABASE_READER, DATABASE_OWNER
    return f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{reader.user}') THEN CREATE ROLE {reader.user}; END IF;
END $$;
ALTER ROLE {reader.user} WITH LOGIN PASSWORD '{reader.password}';
ALTER ROLE {reader.user} SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE {DATABASE_NAME} TO {reader.user};
\\c {DATABASE_NAME}
GRANT USAGE ON SCHEMA public TO {reader.user};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader.user};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner.user} IN SCHEMA public GRANT SELECT ON TABLES TO {reader.user};
"""
