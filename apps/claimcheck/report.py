"""``claimcheck status``: the ledger as a person reads it."""

import psycopg2

_BY_JOB = """
    SELECT job,
           count(*) FILTER (WHERE state <> 'awaiting_pointer') AS published,
           count(*) FILTER (WHERE state = 'pending') AS pending,
           count(*) FILTER (WHERE state = 'deleting') AS deleting,
           count(*) FILTER (WHERE state = 'deleted') AS deleted,
           count(*) FILTER (WHERE state = 'awaiting_pointer') AS early_acks_only,
           min(pointer_seen_at) FILTER (WHERE state IN ('pending', 'deleting')) AS oldest_pending
      FROM objects WHERE %(job)s::text IS NULL OR job = %(job)s
     GROUP BY job ORDER BY min(first_seen_at) DESC LIMIT 50
"""
_WAITING = """
    SELECT o.job, r.recipient, count(*)
      FROM objects o CROSS JOIN LATERAL unnest(o.recipients) AS r(recipient)
     WHERE o.state = 'pending' AND (%(job)s::text IS NULL OR o.job = %(job)s)
       AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.object_id = o.object_id AND a.recipient = r.recipient)
     GROUP BY 1, 2 ORDER BY 1, 2
"""


def ledger_report(dsn: str, job: str | None) -> str:
    """A table of jobs with their object states, and who the pending objects wait for."""
    with psycopg2.connect(dsn, connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute(_BY_JOB, {"job": job})
        jobs = cursor.fetchall()
        cursor.execute(_WAITING, {"job": job})
        waiting = cursor.fetchall()
    connection.close()
    if not jobs:
        return "no objects in the ledger" + (f" for job {job}" if job else "")
    header = f"{'job':<32} {'published':>9} {'pending':>7} {'deleting':>8} {'deleted':>7} {'early':>5}  oldest pending"
    lines = [header]
    for name, published, pending, deleting, deleted, early, oldest in jobs:
        since = oldest.isoformat(timespec="seconds") if oldest else "-"
        lines.append(f"{name:<32} {published:>9} {pending:>7} {deleting:>8} {deleted:>7} {early:>5}  {since}")
    if waiting:
        lines.append("")
        lines.append("pending objects wait for:")
        lines.extend(f"  {name}: {count} objects not yet confirmed by {recipient}" for name, recipient, count in waiting)
    return "\n".join(lines)
