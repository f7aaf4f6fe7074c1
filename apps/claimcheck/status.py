"""``claimcheck status``: the ledger as a person reads it.

Runs (newest first) with their object states and the age of their oldest unfinished object,
who the pending objects wait for, and how many messages sit in the dead-letter queue (a
passive declare: it reads the count without creating or changing anything).
"""

from datetime import datetime, timezone

import pika
import pika.exceptions
import psycopg2

from claimcheck import topology
from claimcheck.ledger import single_row
from claimcheck.publisher import parameters

MAX_WAITING_LINES = 30

_BY_JOB = """
    SELECT job,
           count(*) FILTER (WHERE pointer_seen_at IS NOT NULL) AS published,
           count(*) FILTER (WHERE state = 'pending') AS pending,
           count(*) FILTER (WHERE state = 'deleting') AS deleting,
           count(*) FILTER (WHERE state = 'deleted' AND cancelled_at IS NULL AND swept_at IS NULL) AS deleted,
           count(*) FILTER (WHERE cancelled_at IS NOT NULL) AS cancelled,
           count(*) FILTER (WHERE swept_at IS NOT NULL) AS swept,
           count(*) FILTER (WHERE state = 'awaiting_pointer') AS awaiting_pointer,
           min(pointer_seen_at) FILTER (WHERE state IN ('pending', 'deleting')) AS oldest_pending,
           min(first_seen_at) AS started
      FROM objects WHERE %(job)s::text IS NULL OR job = %(job)s
     GROUP BY job ORDER BY min(first_seen_at) DESC LIMIT 50
"""
_WAITING = """
    SELECT o.job, r.recipient, count(*), min(o.pointer_seen_at)
      FROM objects o CROSS JOIN LATERAL unnest(o.recipients) AS r(recipient)
     WHERE o.state = 'pending' AND (%(job)s::text IS NULL OR o.job = %(job)s)
       AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.object_id = o.object_id AND a.recipient = r.recipient
                                                AND a.payload_sha256 = o.payload_sha256)
     GROUP BY 1, 2 ORDER BY 1, 2
"""
_OLDEST = """
    SELECT object_id, job, state, pointer_seen_at FROM objects
     WHERE state IN ('pending', 'deleting') AND (%(job)s::text IS NULL OR job = %(job)s)
     ORDER BY pointer_seen_at LIMIT 1
"""


def age(since: datetime | None, now: datetime) -> str:
    """``3h05m``, ``4m12s``, ``9s``: how long ago ``since`` was."""
    if since is None:
        return "-"
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def dead_letter_count(amqp_url: str) -> int | None:
    """Messages in the dead-letter queue, or None when the broker cannot be asked."""
    try:
        connection = pika.BlockingConnection(parameters(amqp_url))
    except (pika.exceptions.AMQPError, OSError):
        return None
    try:
        declared = connection.channel().queue_declare(topology.DEAD_LETTER_QUEUE, passive=True)
        return int(declared.method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0  # the queue does not exist yet: nothing was ever dead-lettered
    except (pika.exceptions.AMQPError, OSError):
        return None
    finally:
        if connection.is_open:
            connection.close()


def ledger_report(dsn: str, job: str | None, amqp_url: str | None = None) -> str:
    """Runs with their object states, who pending objects wait for, the oldest pending, dead letters."""
    with psycopg2.connect(dsn, connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute(_BY_JOB, {"job": job})
        jobs = cursor.fetchall()
        cursor.execute(_WAITING, {"job": job})
        waiting = cursor.fetchall()
        cursor.execute(_OLDEST, {"job": job})
        oldest = cursor.fetchone()
        cursor.execute("SELECT now()")
        now = single_row(cursor)[0]
    connection.close()
    lines = []
    if not jobs:
        lines.append("no objects in the ledger" + (f" for job {job}" if job else ""))
    else:
        lines.append(f"{'run':<40} {'started':<20} {'published':>9} {'pending':>7} {'deleting':>8} {'deleted':>7} "
                     f"{'cancelled':>9} {'swept':>5} {'unpublished':>11}  oldest pending")
        for name, published, pending, deleting, deleted, cancelled, swept, awaiting, oldest_at, started in jobs:
            started_at = started.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{name:<40} {started_at:<20} {published:>9} {pending:>7} {deleting:>8} {deleted:>7} "
                         f"{cancelled:>9} {swept:>5} {awaiting:>11}  {age(oldest_at, now)}")
        lines.append("deleted: confirmed by every recipient; unpublished: announced or early ACKs, pointer not seen yet")
    lines.append("")
    if waiting:
        lines.append("pending objects per recipient (not yet confirmed):")
        lines.extend(f"  {name}: {count} waiting for {recipient}, oldest {age(since, now)}"
                     for name, recipient, count, since in waiting[:MAX_WAITING_LINES])
        if len(waiting) > MAX_WAITING_LINES:
            lines.append(f"  ... and {len(waiting) - MAX_WAITING_LINES} more (use --job)")
    else:
        lines.append("pending objects per recipient: none")
    if oldest is not None:
        object_id, oldest_job, state, since = oldest
        lines.append(f"oldest pending object: {object_id} of {oldest_job} ({state}, {age(since, now)})")
    if amqp_url is not None:
        dead = dead_letter_count(amqp_url)
        where = topology.DEAD_LETTER_QUEUE
        lines.append(f"dead letters: {'unknown (broker unreachable)' if dead is None else dead} in {where}")
    return "\n".join(lines)
