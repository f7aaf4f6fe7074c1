"""Versioned schema migrations for the ledger: ``migrations/NNNN_name.sql``, applied in order.

Coordinators may start together, so the whole run holds a transaction-scoped advisory lock.

Hand-written on purpose: all pending migrations run in one transaction under
``pg_advisory_xact_lock`` (all or nothing, and PostgreSQL releases the lock if the process
dies). A migrations library (yoyo-migrations; alembic needs SQLAlchemy) would run each file in
a transaction of its own, take its lock through a table of its own and keep its own bookkeeping
tables, which every existing ledger's ``schema_migrations`` would first have to be converted to.
"""

import logging
import re
from importlib import resources

import psycopg2

log = logging.getLogger(__name__)

_LOCK_KEY = 0x636C61696D  # "claim"
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in order."""
    found = []
    for entry in resources.files("claimcheck.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text()))
    return sorted(found)


def migrate(dsn: str) -> list[int]:
    """Apply every migration not applied yet; return the versions applied now."""
    applied_now = []
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cursor.fetchall()}
        for version, name, sql in available():
            if version in done:
                continue
            cursor.execute(sql)
            cursor.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
            log.info("applied ledger migration %04d_%s", version, name)
    connection.close()
    return applied_now
