"""Read-only queries against the ledger, for the checks and the recovery measurements."""

from typing import Any

import psycopg2


class LedgerProbe:
    """Read-only queries against the ledger; a fresh connection per call (PostgreSQL may be down)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._columns: dict[tuple[str, str], bool] = {}

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        connection = psycopg2.connect(self.dsn, connect_timeout=3)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, args[0] if len(args) == 1 and isinstance(args[0], dict) else args)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def states(self, job: str) -> dict[str, int]:
        """Objects of ``job`` per state (swept orphans counted separately as 'swept')."""
        swept = self.has_column("objects", "swept_at")
        label = "CASE WHEN swept_at IS NOT NULL THEN 'swept' ELSE state END" if swept else "state"
        rows = self.query(f"SELECT {label}, count(*) FROM objects WHERE job = %s GROUP BY 1", job)
        return {state: int(count) for state, count in rows}

    def has_column(self, table: str, column: str) -> bool:
        key = (table, column)
        if key not in self._columns:
            self._columns[key] = bool(
                self.query("SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s", table, column)
            )
        return self._columns[key]

    def published_ids(self, job: str) -> set[str]:
        """Objects of ``job`` whose pointer the coordinator recorded."""
        return {row[0] for row in self.query("SELECT object_id FROM objects WHERE job = %s AND pointer_seen_at IS NOT NULL", job)}

    def all_ids(self, job: str) -> set[str]:
        return {row[0] for row in self.query("SELECT object_id FROM objects WHERE job = %s", job)}

    def counted_acks(self, job: str) -> dict[str, int]:
        """Recipient -> ACKs that count (recipient in the set, same sha256) for ``job``."""
        rows = self.query(
            """SELECT a.recipient, count(*) FROM acks a JOIN objects o USING (object_id)
                WHERE o.job = %s AND a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256
                GROUP BY 1""",
            job,
        )
        return {recipient: int(count) for recipient, count in rows}

    def write_times(self, job: str) -> list[float]:
        """Epochs of every ledger write the coordinator made for ``job``: pointers recorded, ACKs counted."""
        rows = self.query(
            """SELECT extract(epoch FROM pointer_seen_at) FROM objects WHERE job = %(job)s AND pointer_seen_at IS NOT NULL
               UNION ALL
               SELECT extract(epoch FROM a.acked_at) FROM acks a JOIN objects o USING (object_id) WHERE o.job = %(job)s""",
            {"job": job},
        )
        return sorted(float(row[0]) for row in rows)
