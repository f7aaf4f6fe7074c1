"""Count step: the ACK refcount in PostgreSQL, and the once-only decision to delete.

Every change to one object runs in one transaction that first locks the object's row (creating
a placeholder when an ACK arrives before its pointer). Locking serialises concurrent
coordinators per object, so two ACKs counted at the same time cannot both miss each other, and
the guarded ``pending -> deleting`` update can succeed exactly once.
"""

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions

from claimcheck.protocol import Ack, Pointer


class Outcome(enum.Enum):
    """What applying one message did to the ledger."""

    RECORDED = "recorded"  # a new pointer, or an ACK that counts
    EARLY = "early"  # an ACK stored before its pointer; counts once the pointer names its recipient
    DUPLICATE = "duplicate"  # already known; nothing changed
    FOREIGN = "foreign"  # an ACK from a recipient outside the object's set; never counts
    MISMATCH = "mismatch"  # contradicts what the ledger knows (other sha256, other recipient set)


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
    """Per-job counts, as the coordinator's HTTP endpoint reports them."""

    job: str
    published: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    deleted: int = 0
    pending: int = 0
    awaiting_pointer: int = 0
    cancelled: int = 0


_LOCK_OBJECT = """
    INSERT INTO objects (object_id, job) VALUES (%(object_id)s, %(job)s) ON CONFLICT (object_id) DO NOTHING;
    SELECT state, recipients, payload_sha256, bucket, key FROM objects WHERE object_id = %(object_id)s FOR UPDATE
"""

_DECIDE = """
    UPDATE objects o SET state = 'deleting', decided_at = now()
     WHERE o.object_id = %(object_id)s AND o.state = 'pending'
       AND (SELECT count(*) FROM acks a
             WHERE a.object_id = o.object_id AND a.recipient = ANY (o.recipients)
               AND a.payload_sha256 = o.payload_sha256) = cardinality(o.recipients)
    RETURNING object_id
"""


class Ledger:
    """The ledger over one PostgreSQL connection; one instance per thread."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: Any = None

    def _conn(self) -> Any:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(self._dsn, connect_timeout=5)
            self._connection.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED)
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

    def apply(self, messages: Sequence[Pointer | Ack]) -> list[Applied]:
        """Apply a batch of pointers and ACKs in one transaction: one commit for many messages.

        Rows are locked in object-id order, so coordinators applying overlapping batches never
        deadlock; the results come back in the order of ``messages``.
        """
        results: dict[int, Applied] = {}
        with self._conn() as connection, connection.cursor() as cursor:
            for index in sorted(range(len(messages)), key=lambda i: messages[i].object_id):
                message = messages[index]
                results[index] = (
                    _apply_pointer(cursor, message) if isinstance(message, Pointer) else _apply_ack(cursor, message)
                )
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

    def mark_deleted(self, task: DeleteTask, owner: str) -> bool:
        """Record a finished S3 delete; False if this owner's lease was lost meanwhile."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """UPDATE objects SET state = 'deleted', deleted_at = now(), lease_until = NULL, last_error = NULL
                    WHERE object_id = %s AND state = 'deleting' AND lease_owner = %s RETURNING object_id""",
                (task.object_id, owner),
            )
            if cursor.fetchone() is None:
                return False
            cursor.execute("INSERT INTO deletions (object_id, coordinator) VALUES (%s, %s)", (task.object_id, owner))
            return True

    def release_deletion(self, task: DeleteTask, owner: str, error: str) -> None:
        """Give a failed delete back, to be retried after a short delay."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """UPDATE objects SET lease_until = now() + interval '1 second', last_error = %s
                    WHERE object_id = %s AND state = 'deleting' AND lease_owner = %s""",
                (error[:1000], task.object_id, owner),
            )

    def cancel_job(self, job: str) -> int:
        """Make every pending object of ``job`` due for deletion now; return how many.

        Used when a run is abandoned (a ClaimCheckJob deleted mid-run): its payloads must not
        stay in S3 waiting for recipients that will never come. Objects already deleting or
        deleted are untouched, so cancelling twice changes nothing.
        """
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """UPDATE objects SET state = 'deleting', decided_at = now(), cancelled_at = now()
                    WHERE job = %s AND state = 'pending'""",
                (job,),
            )
            return int(cursor.rowcount)

    def live_object_ids(self, object_ids: list[str]) -> set[str]:
        """Those of ``object_ids`` that a pointer made live and that are not deleted yet."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT object_id FROM objects WHERE object_id = ANY (%s) AND state IN ('pending', 'deleting')",
                (object_ids,),
            )
            return {row[0] for row in cursor.fetchall()}

    def claim_orphan(self, object_id: str, job: str, bucket: str, key: str) -> bool:
        """Record that an unreferenced object is being swept; False if a pointer made it live meanwhile.

        The row is written (locked, in state ``deleted``) before the S3 delete, so a pointer
        arriving later is recognised as one for a swept object instead of resurrecting it.
        """
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(_LOCK_OBJECT, {"object_id": object_id, "job": job})
            state = cursor.fetchone()[0]
            if state in ("pending", "deleting"):
                return False
            cursor.execute(
                """UPDATE objects SET state = 'deleted', recipients = coalesce(recipients, '{}'),
                          bucket = %s, key = %s, swept_at = now(), deleted_at = now()
                    WHERE object_id = %s""",
                (bucket, key, object_id),
            )
            return True

    def job_progress(self, job: str) -> JobProgress:
        """Published, per-recipient acked, deleted and pending counts of one job."""
        with self._conn() as connection, connection.cursor() as cursor:
            cursor.execute(
                """SELECT count(*) FILTER (WHERE state <> 'awaiting_pointer'),
                          count(*) FILTER (WHERE state = 'deleted'),
                          count(*) FILTER (WHERE state IN ('pending', 'deleting')),
                          count(*) FILTER (WHERE state = 'awaiting_pointer'),
                          count(*) FILTER (WHERE cancelled_at IS NOT NULL)
                     FROM objects WHERE job = %s""",
                (job,),
            )
            published, deleted, pending, awaiting, cancelled = cursor.fetchone()
            cursor.execute(
                """SELECT a.recipient, count(*) FROM acks a JOIN objects o USING (object_id)
                    WHERE o.job = %s AND a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256
                    GROUP BY a.recipient ORDER BY a.recipient""",
                (job,),
            )
            acked = dict(cursor.fetchall())
        return JobProgress(job, published, acked, deleted, pending, awaiting, cancelled)


def _apply_pointer(cursor: Any, pointer: Pointer) -> Applied:
    cursor.execute(_LOCK_OBJECT, {"object_id": pointer.object_id, "job": pointer.job})
    state, recipients, sha256, bucket, key = cursor.fetchone()
    if recipients == []:
        return Applied(Outcome.MISMATCH, detail="pointer for an object already swept as an orphan")
    if state != "awaiting_pointer":
        if (recipients, sha256, bucket, key) != (
            list(pointer.recipients),
            pointer.payload_sha256,
            pointer.bucket,
            pointer.key,
        ):
            return Applied(Outcome.MISMATCH, detail="pointer contradicts the one already recorded")
        return Applied(Outcome.DUPLICATE)
    cursor.execute(
        """UPDATE objects SET state = 'pending', job = %(job)s, bucket = %(bucket)s, key = %(key)s,
                  recipients = %(recipients)s, payload_size = %(payload_size)s,
                  payload_sha256 = %(payload_sha256)s, pointer_created_at = %(created_at)s,
                  pointer_seen_at = now()
            WHERE object_id = %(object_id)s""",
        {**pointer.model_dump(), "recipients": list(pointer.recipients)},
    )
    return Applied(Outcome.RECORDED, delete_decided=_decide(cursor, pointer.object_id))


def _apply_ack(cursor: Any, ack: Ack) -> Applied:
    cursor.execute(_LOCK_OBJECT, {"object_id": ack.object_id, "job": ack.job})
    state, recipients, sha256, _, _ = cursor.fetchone()
    if recipients is not None and ack.recipient not in recipients:
        return Applied(Outcome.FOREIGN, detail=f"recipient {ack.recipient!r} is not in {recipients}")
    if sha256 is not None and ack.payload_sha256 != sha256:
        return Applied(Outcome.MISMATCH, detail="ACK names a different payload sha256 than the pointer")
    cursor.execute(
        """INSERT INTO acks (object_id, recipient, payload_sha256, consumer)
           VALUES (%(object_id)s, %(recipient)s, %(payload_sha256)s, %(consumer)s)
           ON CONFLICT (object_id, recipient) DO UPDATE SET duplicates = acks.duplicates + 1
           RETURNING duplicates""",
        ack.model_dump(),
    )
    if cursor.fetchone()[0] > 0:
        return Applied(Outcome.DUPLICATE)
    if state == "awaiting_pointer":
        return Applied(Outcome.EARLY)
    return Applied(Outcome.RECORDED, delete_decided=_decide(cursor, ack.object_id))


def _decide(cursor: Any, object_id: str) -> bool:
    """The guarded pending -> deleting transition; True only for the one call that makes it."""
    cursor.execute(_DECIDE, {"object_id": object_id})
    return cursor.fetchone() is not None
