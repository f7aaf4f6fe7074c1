"""The end of every scenario: the shared check that the job completed, and the dead letters it may contain."""

import re
from dataclasses import dataclass
from typing import Any

import psycopg2

from claimcheck import store
from claimcheck.protocol import parse_object_key
from tests.faults.fault_harness.components import DEAD_LETTERED
from tests.faults.fault_harness.scenario import Scenario
from tests.testkit import wait_until


def assert_job_complete(
    scenario: Scenario,
    expected: int | None = None,
    timeout: float = 120,
    allow_orphans: bool = False,
) -> dict[str, Any]:
    """The end of every scenario: every published object verified by every recipient, deleted
    exactly once, nothing of the job left in S3, the ledger consistent.

    ``expected``: how many pointers were published (None: whatever the ledger recorded, for a
    producer killed mid-run). ``allow_orphans``: keys under the job prefix that no pointer ever
    named may remain (returned as ``orphans``); every other check still applies to them.
    """
    job, ledger, recipients = scenario.job, scenario.ledger, scenario.recipients
    db_down = (psycopg2.OperationalError,)

    def settled() -> dict[str, int] | None:
        states = ledger.states(job)
        published = len(ledger.published_ids(job))
        if expected is not None and published < expected:
            return None
        if any(states.get(s, 0) for s in ("pending", "deleting", "awaiting_pointer")):
            return None
        return states if published else None

    try:
        wait_until(settled, timeout, f"every object of job {job} deleted, nothing pending", poll=0.5, tolerate=db_down)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nledger states: {ledger.states(job)}\n{diagnostics(scenario)}") from None

    published = ledger.published_ids(job)
    if expected is not None:
        assert len(published) == expected, f"ledger recorded {len(published)} pointers, the producer confirmed {expected}"
    logged = {object_id for _, object_id in scenario.published_log()}
    assert logged <= published, f"pointers the producer confirmed but the ledger never recorded: {sorted(logged - published)[:5]}"

    # Verified by every recipient: ledger counts, and the consumers' own logs.
    acked = ledger.counted_acks(job)
    assert acked == {r: len(published) for r in recipients}, f"counted ACKs per recipient {acked}, published {len(published)}"
    stray = ledger.query(
        """SELECT a.object_id, a.recipient FROM acks a JOIN objects o USING (object_id)
            WHERE o.job = %s AND NOT (a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256)""",
        job,
    )
    assert not stray, f"ACKs that do not count (foreign recipient or other sha256): {stray[:5]}"
    # Dead letters: the only acceptable ones are `missing_object` for a pointer redelivered after
    # its object was already deleted with this recipient's ACK counted (the recipient's ACK was
    # confirmed, but the pointer's delivery-ack was lost with its connection): harmless
    # duplicates, see docs/failure-model.md. Anything else of this job is a failure.
    benign, harmful = classify_dead_letters(scenario, published)
    assert not harmful, f"messages of this job were dead-lettered: {harmful[:5]}"
    by_recipient: dict[str, set[str]] = {r: set() for r in recipients}
    for _, recipient, object_id in scenario.acked_log():
        by_recipient.setdefault(recipient, set()).add(object_id)
    for recipient, object_id in scenario.settled_log():  # its ACK was counted before: the ledger said so
        by_recipient.setdefault(recipient, set()).add(object_id)
    for recipient in recipients:
        # A consumer logs "verified and acked" after its pointer delivery-ack; the benign case
        # above verified and sent its ACK (counted in the ledger) but lost that delivery-ack.
        unexplained = published - by_recipient[recipient] - {d.object_id for d in benign if d.recipient == recipient}
        assert not unexplained, (
            f"{recipient}: no consumer log shows {len(unexplained)} objects verified, e.g. {sorted(unexplained)[:3]}"
        )

    # Deleted exactly once, the ledger consistent.
    rows = ledger.query(
        "SELECT object_id, state, deleted_at IS NOT NULL, cancelled_at IS NOT NULL FROM objects WHERE object_id = ANY (%s)",
        sorted(published),
    )
    not_deleted = [r for r in rows if r[1] != "deleted" or not r[2]]
    assert not not_deleted, f"objects not in state deleted: {not_deleted[:5]}"
    cancelled = [r[0] for r in rows if r[3]]
    assert not cancelled, f"objects deleted by cancellation instead of ACKs: {cancelled[:5]}"
    deletions = dict(
        ledger.query("SELECT object_id, count(*) FROM deletions WHERE object_id = ANY (%s) GROUP BY 1", sorted(published))
    )
    assert deletions == {object_id: 1 for object_id in published}, (
        f"deletions per object not exactly one: "
        f"{ {k: v for k, v in deletions.items() if v != 1} } missing {len(published - set(deletions))}"
    )
    states = ledger.states(job)
    assert set(states) <= {"deleted", "swept"}, f"ledger states of the job: {states}"
    assert states.get("deleted", 0) == len(published), f"ledger states {states}, published {len(published)}"

    # Nothing left in S3 under the job's prefix (except orphans, when allowed).
    keys = store.list_keys(scenario.s3, scenario.settings.s3_bucket, f"{job}/")
    leftovers = {}
    for key in keys:
        parsed = parse_object_key(key)
        assert parsed and parsed[0] == job, f"unexpected key under the job prefix: {key}"
        leftovers[parsed[1]] = key
    referenced = set(leftovers) & published
    assert not referenced, f"published objects still in S3 after their deletion: {sorted(referenced)[:5]}"
    orphans = sorted(set(leftovers) - published)
    if not allow_orphans:
        assert not orphans, f"{len(orphans)} objects left in S3 under {job}/ that no pointer named: {orphans[:5]}"

    ids = published | set(leftovers)
    _, harmful = classify_dead_letters(scenario, ids)
    assert not harmful, f"messages of this job were dead-lettered: {harmful[:5]}"
    return {"published": len(published), "orphans": orphans, "acked": acked, "benign_dead_letters": len(benign)}


@dataclass(frozen=True)
class DeadLetter:
    component: str
    recipient: str | None
    object_id: str
    at: float
    reason: str


def refused_objects(message_id: str, reason: str) -> list[tuple[str, str]]:
    """(object id, reason) of each object a dead letter refused: a single message's id names its
    object; a pointer batch's reason names each refused object, ``; `` apart, in the first one's
    category unless another is given (``settlement.combine``)."""
    if not message_id.startswith("pointers-"):
        return [(message_id.split(".")[0], reason)]
    category, _, details = reason.partition(": ")
    refused = []
    for detail in details.split("; "):
        named = re.search(r"[0-9a-f]{32}", detail)
        if named is not None:
            other = re.match(r"^([a-z_]+): ", detail)
            refused.append((named[0], detail if other else f"{category}: {detail}"))
    return refused


def classify_dead_letters(scenario: Scenario, ids: set[str]) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Dead letters of ``ids`` logged by this scenario's components: (benign, harmful).

    Benign: a consumer's ``missing_object`` for an object the ledger had already deleted,
    after counting that consumer's recipient's ACK.
    """
    letters = []
    for component in scenario.components:
        recipient = component.name.removeprefix("consumer-").rsplit("-", 1)[0] if component.name.startswith("consumer-") else None
        for at, match in component.events(DEAD_LETTERED):
            for object_id, reason in refused_objects(match["message_id"], match["reason"]):
                if object_id in ids:
                    letters.append(DeadLetter(component.name, recipient, object_id, at, reason))
    if not letters:
        return [], []
    rows = scenario.ledger.query(
        """SELECT o.object_id, extract(epoch FROM o.deleted_at), array_agg(a.recipient)
             FROM objects o JOIN acks a USING (object_id)
            WHERE o.object_id = ANY (%s) AND o.state = 'deleted' AND o.deleted_at IS NOT NULL
              AND a.recipient = ANY (o.recipients) AND a.payload_sha256 = o.payload_sha256
            GROUP BY 1, 2""",
        sorted({letter.object_id for letter in letters}),
    )
    deleted = {object_id: (float(at), set(acked)) for object_id, at, acked in rows}
    benign: list[DeadLetter] = []
    harmful: list[DeadLetter] = []
    for letter in letters:
        known = deleted.get(letter.object_id)
        ok = (
            letter.reason.startswith("missing_object:")
            and known is not None
            and known[0] <= letter.at + 0.5  # log and database clocks: same host, ms resolution
            and letter.recipient in known[1]
        )
        (benign if ok else harmful).append(letter)
    return benign, harmful


def diagnostics(scenario: Scenario) -> str:
    parts = []
    for component in scenario.components:
        parts.append(f"--- {component.name} (exit {component.returncode}) {component.log_path}\n{component.tail(15)}")
    return "\n".join(parts)
