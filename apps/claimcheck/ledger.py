"""Count step: the ACK refcount in PostgreSQL, and the once-only decision to delete.

Every change to one object runs in one transaction that first locks the object's row (creating
a placeholder when an ACK arrives before its pointer). Locking serialises concurrent
coordinators per object, so two ACKs counted at the same time cannot both miss each other, and
the guarded ``pending -> deleting`` update can succeed exactly once.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import extensions as pg
from psycopg2.extras import execute_values

from claimcheck.judgement import Applied, BatchJudgement, Message, ObjectMessage, ObjectRow, Outcome
from claimcheck.protocol import Ack, Barrier, Pointer


@dataclass(frozen=True)
class DeleteTask:
    """An object whose deletion this coordinator holds the lease for."""

    object_id: str
    bucket: str | None  # both None for an inline payload: nothing is stored
    key: str | None
    # When the producer created the pointer (None for a cancelled run): for the latency metric.
    published_at: datetime | None = None


@dataclass
class JobProgress:
    """Per-job counts, as the coordinator's HTTP endpoint reports them.

    ``deleted`` counts only deletions earned by every recipient's ACK; objects removed because
    the run was cancelled or because no pointer ever named them are ``cancelled`` and ``swept``.
    """

    job: str
    published: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    pending: int = 0
    awaiting_pointer: int = 0
    cancelled: int = 0
    swept: int = 0


@dataclass
class ObjectStatus:
    """One object as the ledger knows it, for a recipient asking about a pointer it holds."""

    object_id: str
    state: str
    confirmed_by: list[str]  # recipients whose ACK of the pointer's sha256 counted
    cancelled: bool
    swept: bool


_CONFIRMED = """
    SELECT count(*) FROM acks a
     WHERE a.object_id = o.object_id AND a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256
"""

_DECIDE = """
    UPDATE objects o SET state = 'deleting', decided_at = now()
     WHERE o.object_id = ANY (%s) AND o.state = 'pending'
       AND (""" + _CONFIRMED + """) = cardinality(o.recipients)
    RETURNING object_id
"""


def single_row(cursor: pg.cursor) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, a locked row, ``now()``)."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError(f"expected one row from {cursor.query!r}, got none")
    return row


class Ledger:
    """The ledger over one PostgreSQL connection; one instance per thread."""

    def __init__(self, dsn: str, application_name: str = "claimcheck") -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._connection: pg.connection | None = None

    def _conn(self) -> pg.connection:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(self._dsn, connect_timeout=5, application_name=self._application_name)
            self._connection.set_session(isolation_level=pg.ISOLATION_LEVEL_READ_COMMITTED)
        return self._connection

    def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def apply(self, messages: Sequence[Message]) -> list[Applied]:
        """Apply a batch of pointers and ACKs in one transaction, in a fixed number of round trips.

        The batch's object rows are created if missing and locked in object-id order (so
        coordinators applying overlapping batches never deadlock); each message is then judged
        against the locked rows in arrival order, the writes go out as one statement per kind,
        and the guarded ``pending -> deleting`` update runs once for every object the batch
        advanced. The results come back in the order of ``messages``.
        """
        if not messages:
            return []
        barriers = [m.nonce for m in messages if isinstance(m, Barrier)]
        results = {i: Applied(Outcome.RECORDED) for i, m in enumerate(messages) if isinstance(m, Barrier)}
        # Grouped by object, each object's messages in arrival order (sorted is stable).
        order: list[tuple[int, ObjectMessage]] = sorted(
            ((i, m) for i, m in enumerate(messages) if not isinstance(m, Barrier)), key=lambda item: item[1].object_id)
        jobs = {message.object_id: message.job for _, message in reversed(order)}
        with self._conn() as connection, connection.cursor() as cursor:
            rows, cancelled_jobs = _lock_rows(cursor, sorted(jobs.items())) if jobs else ({}, set())
            batch = BatchJudgement(rows, cancelled_jobs)
            results.update({index: batch.judge(index, message) for index, message in order})
            _write(cursor, batch)
            if barriers:
                execute_values(cursor, "INSERT INTO sweep_barriers (nonce) VALUES %s ON CONFLICT DO NOTHING",
                               [(nonce,) for nonce in barriers])
            for object_id in _decide(cursor, batch):
                index = batch.last_recorded[object_id]
                results[index] = replace(results[index], delete_decided=True)
        return [results[index] for index in range(len(messages))]

    def apply_pointer(self, pointer: Pointer) -> Applied:
        """Learn an object's recipient set from its pointer."""
        return self.apply([pointer])[0]

    def apply_ack(self, ack: Ack) -> Applied:
        """Count one recipient's ACK, at most once per (object, recipient)."""
        return self.apply([ack])[0]

    def claim_deletions(self, owner: str, lease_seconds: float, limit: int = 100) -> list[DeleteTask]:
        """Lease up to ``limit`` objects due for deletion whose lease is free or expired."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """UPDATE objects SET lease_owner = %(owner)s,
                          lease_until = now() + make_interval(secs => %(lease)s),
                          delete_attempts = delete_attempts + 1
                    WHERE object_id IN (
                          SELECT object_id FROM objects
                           WHERE state = 'deleting' AND (lease_until IS NULL OR lease_until < now())
                           ORDER BY decided_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
                RETURNING object_id, bucket, key, CASE WHEN cancelled_at IS NULL THEN pointer_created_at END""",
                {"owner": owner, "lease": lease_seconds, "limit": limit},
            )
            return [DeleteTask(*row) for row in cursor.fetchall()]

    def mark_deleted(self, tasks: list[DeleteTask], owner: str) -> list[DeleteTask]:
        """Record finished S3 deletes; returns those whose lease this owner still held.

        A task whose lease was lost meanwhile is left to its new owner, which deletes again
        (harmless) and records the one ``deletions`` row.
        """
        if not tasks:
            return []
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """UPDATE objects SET state = 'deleted', deleted_at = now(), lease_until = NULL, last_error = NULL
                    WHERE object_id = ANY (%s) AND state = 'deleting' AND lease_owner = %s RETURNING object_id""",
                ([task.object_id for task in tasks], owner),
            )
            recorded = {object_id for (object_id,) in cursor.fetchall()}
            cursor.execute("""INSERT INTO deletions (object_id, coordinator) SELECT unnest(%s::text[]), %s
                              ON CONFLICT (object_id) DO NOTHING""", (sorted(recorded), owner))
        return [task for task in tasks if task.object_id in recorded]

    def renew_leases(self, tasks: list[DeleteTask], owner: str, lease_seconds: float) -> None:
        """Extend the leases ``owner`` still holds on ``tasks``."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """UPDATE objects SET lease_until = now() + make_interval(secs => %s)
                    WHERE object_id = ANY (%s) AND state = 'deleting' AND lease_owner = %s""",
                (lease_seconds, [task.object_id for task in tasks], owner),
            )

    def release_deletions(self, tasks: list[DeleteTask], owner: str, error: str) -> None:
        """Give failed deletes back, to be retried after a short delay instead of the whole lease."""
        if not tasks:
            return
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """UPDATE objects SET lease_until = now() + interval '1 second', last_error = %s
                    WHERE object_id = ANY (%s) AND state = 'deleting' AND lease_owner = %s""",
                (error[:1000], [task.object_id for task in tasks], owner),
            )

    def cancel_job(self, job: str) -> int:
        """Make every pending object of ``job`` due for deletion now; return how many.

        Used when a run is abandoned (a ClaimCheckJob deleted mid-run): its payloads must not
        stay in S3 waiting for recipients that will never come. Objects already deleting or
        deleted are untouched, so cancelling twice changes nothing; the run is remembered as
        cancelled, so its pointers that arrive later are settled as cancelled too.
        """
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute("INSERT INTO cancelled_jobs (job) VALUES (%s) ON CONFLICT (job) DO NOTHING", (job,))
            cursor.execute(
                """UPDATE objects SET state = 'deleting', decided_at = now(), cancelled_at = now()
                    WHERE job = %s AND state = 'pending'""",
                (job,),
            )
            return int(cursor.rowcount)

    def now(self) -> datetime:
        """The database's clock, the one every ledger timestamp uses."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            now: datetime = single_row(cursor)[0]
            return now

    def barrier_applied(self, nonce: str) -> bool:
        """Whether a coordinator applied the sweeper's barrier ``nonce``."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM sweep_barriers WHERE nonce = %s", (nonce,))
            return cursor.fetchone() is not None

    def expired_intents(self, bucket: str, cutoff: datetime, prefix: str, limit: int) -> list[tuple[str, str, str]]:
        """``(object_id, job, key)`` of uploads to ``bucket`` announced before ``cutoff`` that no pointer or ACK followed."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """SELECT object_id, job, key FROM objects o
                    WHERE state = 'awaiting_pointer' AND intent_seen_at < %s AND bucket = %s
                      AND left(key, length(%s)) = %s
                      AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.object_id = o.object_id)
                    ORDER BY intent_seen_at LIMIT %s""",
                (cutoff, bucket, prefix, prefix, limit),
            )
            return cursor.fetchall()

    def claim_orphan(self, object_id: str, job: str, bucket: str, key: str, cutoff: datetime) -> bool:
        """Record that an object is being swept; False unless the ledger proves nobody needs it.

        Under the object's row lock: it may be swept only while no pointer made it live, no
        ACK names it, and whatever the ledger knows of it (an intent, or nothing until now) is
        older than ``cutoff``. The row is written in state ``deleted`` before the S3 delete, so
        a pointer arriving later is recognised as one for a swept object instead of reviving it.
        """
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute("INSERT INTO objects (object_id, job) VALUES (%s, %s) ON CONFLICT (object_id) DO NOTHING"
                           " RETURNING object_id", (object_id, job))
            unknown_until_now = cursor.fetchone() is not None
            cursor.execute(
                """SELECT state, coalesce(intent_seen_at, first_seen_at) < %s, key,
                          EXISTS (SELECT 1 FROM acks a WHERE a.object_id = o.object_id)
                     FROM objects o WHERE object_id = %s FOR UPDATE""",
                (cutoff, object_id),
            )
            state, old_enough, known_key, acked = single_row(cursor)
            if state != "awaiting_pointer" or acked or known_key not in (None, key):
                return False
            if not (unknown_until_now or old_enough):
                return False
            cursor.execute(
                """UPDATE objects SET state = 'deleted', recipients = '{}', bucket = %s, key = %s,
                          swept_at = now(), deleted_at = now()
                    WHERE object_id = %s""",
                (bucket, key, object_id),
            )
            return True

    def object_status(self, object_id: str) -> ObjectStatus | None:
        """What the ledger knows of one object, None if nothing."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """SELECT state, coalesce((SELECT array_agg(a.recipient ORDER BY a.recipient) FROM acks a
                                            WHERE a.object_id = o.object_id AND a.recipient = ANY (o.recipients)
                                              AND a.payload_sha256 = o.payload_sha256), '{}'),
                          cancelled_at IS NOT NULL, swept_at IS NOT NULL
                     FROM objects o WHERE object_id = %s""",
                (object_id,),
            )
            row = cursor.fetchone()
        return None if row is None else ObjectStatus(object_id, row[0], list(row[1]), row[2], row[3])

    def job_progress(self, job: str) -> JobProgress:
        """Published, per-recipient acked, deleted and pending counts of one job."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """SELECT count(*) FILTER (WHERE pointer_seen_at IS NOT NULL),
                          count(*) FILTER (WHERE state = 'deleted' AND cancelled_at IS NULL AND swept_at IS NULL),
                          count(*) FILTER (WHERE state IN ('pending', 'deleting')),
                          count(*) FILTER (WHERE state = 'awaiting_pointer'),
                          count(*) FILTER (WHERE cancelled_at IS NOT NULL),
                          count(*) FILTER (WHERE swept_at IS NOT NULL)
                     FROM objects WHERE job = %s""",
                (job,),
            )
            published, deleted, pending, awaiting, cancelled, swept = single_row(cursor)
            cursor.execute(
                """SELECT a.recipient, count(*) FROM acks a JOIN objects o USING (object_id)
                    WHERE o.job = %s AND a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256
                    GROUP BY a.recipient ORDER BY a.recipient""",
                (job,),
            )
            acked = dict(cursor.fetchall())
        return JobProgress(job, published, acked, deleted, pending, awaiting, cancelled, swept)


def _lock_rows(cursor: pg.cursor, objects: list[tuple[str, str]]) -> tuple[dict[str, ObjectRow], set[str]]:
    """Create placeholders for unknown objects, then lock every row of the batch in object-id order.

    Also returns which of the batch's jobs were cancelled.
    """
    execute_values(cursor, "INSERT INTO objects (object_id, job) VALUES %s ON CONFLICT (object_id) DO NOTHING",
                   objects, page_size=len(objects))
    object_ids = [object_id for object_id, _ in objects]
    cursor.execute(
        """SELECT object_id, state, recipients, payload_sha256, bucket, key FROM objects
            WHERE object_id = ANY (%s) ORDER BY object_id FOR UPDATE""",
        (object_ids,),
    )
    rows = {object_id: ObjectRow(*rest) for object_id, *rest in cursor.fetchall()}
    cursor.execute("SELECT object_id, recipient, payload_sha256 FROM acks WHERE object_id = ANY (%s)", (object_ids,))
    for object_id, recipient, sha256 in cursor.fetchall():
        rows[object_id].acked.add((recipient, sha256))
    cursor.execute("SELECT job FROM cancelled_jobs WHERE job = ANY (%s)", (sorted({job for _, job in objects}),))
    return rows, {job for (job,) in cursor.fetchall()}


def _write(cursor: pg.cursor, batch: BatchJudgement) -> None:
    """Record the new intents, pointers and ACKs and the duplicate counts of ``batch``: one statement each.

    An intent whose pointer is in the same batch is not written: the pointer's update sets
    the same key and makes the object live, after which the intent's time means nothing.
    """
    pointed = {pointer.object_id for pointer, _ in batch.pointers}
    intents = [intent for intent in batch.intents if intent.object_id not in pointed]
    if intents:
        execute_values(
            cursor,
            """UPDATE objects o SET bucket = v.bucket, key = v.key, intent_seen_at = now()
                 FROM (VALUES %s) AS v (object_id, bucket, key) WHERE o.object_id = v.object_id""",
            [(i.object_id, i.bucket, i.key) for i in intents],
            page_size=len(intents),
        )
    if batch.pointers:
        execute_values(
            cursor,
            """UPDATE objects o SET job = v.job, bucket = v.bucket, key = v.key,
                      recipients = v.recipients, payload_size = v.payload_size,
                      payload_sha256 = v.payload_sha256, pointer_created_at = v.created_at,
                      pointer_seen_at = now(),
                      state = CASE WHEN v.cancelled THEN 'deleting' ELSE 'pending' END,
                      decided_at = CASE WHEN v.cancelled THEN now() END,
                      cancelled_at = CASE WHEN v.cancelled THEN now() END
                 FROM (VALUES %s) AS v (object_id, job, bucket, key, recipients, payload_size,
                                        payload_sha256, created_at, cancelled)
                WHERE o.object_id = v.object_id""",
            [(p.object_id, p.job, p.bucket, p.key, list(p.recipients), p.payload_size, p.payload_sha256,
              p.created_at, cancelled) for p, cancelled in batch.pointers],
            template="(%s, %s, %s, %s, %s::text[], %s::bigint, %s, %s::timestamptz, %s::boolean)",
            page_size=len(batch.pointers),
        )
    if batch.acks:
        # Plain INSERT: every ACK writer holds the object's row lock, so a conflict here would
        # be a broken invariant and must fail the transaction, not be absorbed.
        execute_values(
            cursor,
            "INSERT INTO acks (object_id, recipient, payload_sha256, consumer) VALUES %s",
            [(a.object_id, a.recipient, a.payload_sha256, a.consumer) for a in batch.acks],
            page_size=len(batch.acks),
        )
    if batch.duplicate_acks:
        execute_values(
            cursor,
            """UPDATE acks a SET duplicates = a.duplicates + v.n FROM (VALUES %s) AS v (object_id, recipient, sha, n)
                WHERE a.object_id = v.object_id AND a.recipient = v.recipient AND a.payload_sha256 = v.sha""",
            [(*slot, n) for slot, n in batch.duplicate_acks.items()],
            template="(%s, %s, %s, %s::integer)",
            page_size=len(batch.duplicate_acks),
        )


def _decide(cursor: pg.cursor, batch: BatchJudgement) -> list[str]:
    """The guarded pending -> deleting transition for the objects ``batch`` advanced.

    Returns the objects it moved; the guard in SQL makes it succeed once per object ever.
    """
    if not batch.last_recorded:
        return []
    cursor.execute(_DECIDE, (list(batch.last_recorded),))
    return [object_id for (object_id,) in cursor.fetchall()]
