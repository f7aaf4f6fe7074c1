"""Count step: the ACK refcount in PostgreSQL, and the once-only decision to delete.

Every change to one object runs in one transaction that first locks the object's row (creating
a placeholder when an ACK arrives before its pointer). Locking serialises concurrent
coordinators per object, so two ACKs counted at the same time cannot both miss each other, and
the guarded ``pending -> deleting`` update can succeed exactly once.
"""

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import extensions as pg
from psycopg2.extras import execute_values

from claimcheck.protocol import Ack, Barrier, Intent, Pointer

Message = Pointer | Ack | Intent | Barrier


class Outcome(enum.Enum):
    """What applying one message did to the ledger."""

    RECORDED = "recorded"  # a new pointer, or an ACK that counts
    EARLY = "early"  # an ACK stored before its pointer; counts once the pointer names its recipient
    DUPLICATE = "duplicate"  # already known; nothing changed
    FOREIGN = "foreign"  # an ACK from a recipient outside the object's set; never counts
    MISMATCH = "mismatch"  # contradicts what the ledger knows (other sha256, other recipient set)
    CANCELLED = "cancelled"  # a pointer of a cancelled run: recorded and deleted, never delivered


@dataclass(frozen=True)
class Applied:
    """The outcome of one message, and whether it made the object due for deletion."""

    outcome: Outcome
    delete_decided: bool = False
    detail: str = ""


@dataclass(frozen=True)
class DeleteTask:
    """An object whose deletion this coordinator holds the lease for."""

    object_id: str
    bucket: str
    key: str
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
        order = sorted((i for i, m in enumerate(messages) if not isinstance(m, Barrier)),
                       key=lambda i: messages[i].object_id)  # type: ignore[union-attr]  # stable: arrival order per object
        jobs = {messages[i].object_id: messages[i].job for i in reversed(order)}  # type: ignore[union-attr]
        with self._conn() as connection, connection.cursor() as cursor:
            rows, cancelled_jobs = _lock_rows(cursor, sorted(jobs.items())) if jobs else ({}, set())
            batch = _Batch(rows, cancelled_jobs)
            results.update({index: batch.judge(index, messages[index]) for index in order})  # type: ignore[arg-type]
            batch.write(cursor)
            if barriers:
                execute_values(cursor, "INSERT INTO sweep_barriers (nonce) VALUES %s ON CONFLICT DO NOTHING",
                               [(nonce,) for nonce in barriers])
            for object_id in batch.decide(cursor):
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


@dataclass
class _Row:
    """One object's ledger row as locked by a batch, updated in memory as the batch is judged."""

    state: str
    recipients: list[str] | None
    sha256: str | None
    bucket: str | None
    key: str | None
    # (recipient, sha256) of every ACK row, counted or not: an ACK counts for the checksum it names.
    acked: set[tuple[str, str]] = field(default_factory=set)


def _lock_rows(cursor: pg.cursor, objects: list[tuple[str, str]]) -> tuple[dict[str, _Row], set[str]]:
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
    rows = {object_id: _Row(*rest) for object_id, *rest in cursor.fetchall()}
    cursor.execute("SELECT object_id, recipient, payload_sha256 FROM acks WHERE object_id = ANY (%s)", (object_ids,))
    for object_id, recipient, sha256 in cursor.fetchall():
        rows[object_id].acked.add((recipient, sha256))
    cursor.execute("SELECT job FROM cancelled_jobs WHERE job = ANY (%s)", (sorted({job for _, job in objects}),))
    return rows, {job for (job,) in cursor.fetchall()}


class _Batch:
    """Judges each message against the locked rows and collects the writes it implies."""

    def __init__(self, rows: dict[str, _Row], cancelled_jobs: set[str]) -> None:
        self.rows = rows
        self.cancelled_jobs = cancelled_jobs
        self.pointers: list[tuple[Pointer, bool]] = []  # (pointer, its run was cancelled)
        self.intents: list[Intent] = []
        self.acks: list[Ack] = []
        self.duplicate_acks: Counter[tuple[str, str, str]] = Counter()
        self.last_recorded: dict[str, int] = {}  # object -> index of the last message that may have made it due

    def judge(self, index: int, message: Pointer | Ack | Intent) -> Applied:
        """The outcome of ``message`` (at ``index`` in the batch), given everything judged before it."""
        if isinstance(message, Intent):
            return self._intent(message)
        applied = self._pointer(message) if isinstance(message, Pointer) else self._ack(message)
        if applied.outcome is Outcome.RECORDED:
            self.last_recorded[message.object_id] = index
        return applied

    def _intent(self, intent: Intent) -> Applied:
        row = self.rows[intent.object_id]
        if row.key is not None:
            if (row.bucket, row.key) != (intent.bucket, intent.key):
                return Applied(Outcome.MISMATCH, detail="intent names another key than the one already recorded")
            return Applied(Outcome.DUPLICATE)
        row.bucket, row.key = intent.bucket, intent.key
        self.intents.append(intent)
        return Applied(Outcome.RECORDED)

    def _pointer(self, pointer: Pointer) -> Applied:
        row = self.rows[pointer.object_id]
        if row.recipients == []:
            return Applied(Outcome.MISMATCH, detail="pointer for an object already swept as an orphan")
        if row.state != "awaiting_pointer":
            if (row.recipients, row.sha256, row.bucket, row.key) != (
                list(pointer.recipients), pointer.payload_sha256, pointer.bucket, pointer.key,
            ):
                return Applied(Outcome.MISMATCH, detail="pointer contradicts the one already recorded")
            return Applied(Outcome.DUPLICATE)
        if row.key is not None and (row.bucket, row.key) != (pointer.bucket, pointer.key):
            return Applied(Outcome.MISMATCH, detail="pointer names another key than its intent")
        cancelled = pointer.job in self.cancelled_jobs
        row.state = "deleting" if cancelled else "pending"
        row.recipients, row.sha256 = list(pointer.recipients), pointer.payload_sha256
        row.bucket, row.key = pointer.bucket, pointer.key
        self.pointers.append((pointer, cancelled))
        if cancelled:
            return Applied(Outcome.CANCELLED, delete_decided=True, detail=f"run {pointer.job} was cancelled")
        return Applied(Outcome.RECORDED)

    def _ack(self, ack: Ack) -> Applied:
        row = self.rows[ack.object_id]
        if row.recipients is not None and ack.recipient not in row.recipients:
            return Applied(Outcome.FOREIGN, detail=f"recipient {ack.recipient!r} is not in {row.recipients}")
        if row.sha256 is not None and ack.payload_sha256 != row.sha256:
            return Applied(Outcome.MISMATCH, detail="ACK names a different payload sha256 than the pointer")
        slot = (ack.recipient, ack.payload_sha256)
        if slot in row.acked:
            self.duplicate_acks[(ack.object_id, *slot)] += 1
            return Applied(Outcome.DUPLICATE)
        row.acked.add(slot)
        self.acks.append(ack)
        return Applied(Outcome.EARLY if row.state == "awaiting_pointer" else Outcome.RECORDED)

    def write(self, cursor: pg.cursor) -> None:
        """Record the new intents, pointers and ACKs and the duplicate counts: one statement each.

        An intent whose pointer is in the same batch is not written: the pointer's update sets
        the same key and makes the object live, after which the intent's time means nothing.
        """
        pointed = {pointer.object_id for pointer, _ in self.pointers}
        intents = [intent for intent in self.intents if intent.object_id not in pointed]
        if intents:
            execute_values(
                cursor,
                """UPDATE objects o SET bucket = v.bucket, key = v.key, intent_seen_at = now()
                     FROM (VALUES %s) AS v (object_id, bucket, key) WHERE o.object_id = v.object_id""",
                [(i.object_id, i.bucket, i.key) for i in intents],
                page_size=len(intents),
            )
        if self.pointers:
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
                  p.created_at, cancelled) for p, cancelled in self.pointers],
                template="(%s, %s, %s, %s, %s::text[], %s::bigint, %s, %s::timestamptz, %s::boolean)",
                page_size=len(self.pointers),
            )
        if self.acks:
            # Plain INSERT: every ACK writer holds the object's row lock, so a conflict here would
            # be a broken invariant and must fail the transaction, not be absorbed.
            execute_values(
                cursor,
                "INSERT INTO acks (object_id, recipient, payload_sha256, consumer) VALUES %s",
                [(a.object_id, a.recipient, a.payload_sha256, a.consumer) for a in self.acks],
                page_size=len(self.acks),
            )
        if self.duplicate_acks:
            execute_values(
                cursor,
                """UPDATE acks a SET duplicates = a.duplicates + v.n FROM (VALUES %s) AS v (object_id, recipient, sha, n)
                    WHERE a.object_id = v.object_id AND a.recipient = v.recipient AND a.payload_sha256 = v.sha""",
                [(*slot, n) for slot, n in self.duplicate_acks.items()],
                template="(%s, %s, %s, %s::integer)",
                page_size=len(self.duplicate_acks),
            )

    def decide(self, cursor: pg.cursor) -> list[str]:
        """The guarded pending -> deleting transition for the objects this batch advanced.

        Returns the objects it moved; the guard in SQL makes it succeed once per object ever.
        """
        if not self.last_recorded:
            return []
        cursor.execute(_DECIDE, (list(self.last_recorded),))
        return [object_id for (object_id,) in cursor.fetchall()]
