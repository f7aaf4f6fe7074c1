"""The deletion invariant, checked by hypothesis over random interleavings against the real
ledger in PostgreSQL:

an object becomes due for deletion if and only if its pointer is known and every recipient in
its set has ACKed it (each counted once, foreign recipients never), and that decision is taken
exactly once, whatever the order, duplication or concurrency of the messages.
"""

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from claimcheck.config import Settings
from claimcheck.ledger import Applied, Ledger, Outcome
from claimcheck.protocol import Ack, Pointer, make_pointer, now
from claimcheck.schema import migrate

POOL = ["r0", "r1", "r2", "r3", "r4"]
SHA = "c" * 64

Event = tuple[str, str]  # ("pointer", "") or ("ack", recipient)


def make(recipients: list[str]) -> Pointer:
    object_id = uuid.uuid4().hex
    return make_pointer(object_id=object_id, job="prop", bucket="claimcheck", key=f"prop/{object_id}",
                        payload_size=1, payload_sha256=SHA, object_size=1, object_sha256=SHA, recipients=recipients)


def apply(ledger: Ledger, pointer: Pointer, event: Event) -> Applied:
    kind, recipient = event
    if kind == "pointer":
        return ledger.apply_pointer(pointer)
    return ledger.apply_ack(Ack(object_id=pointer.object_id, job=pointer.job, recipient=recipient,
                                payload_sha256=SHA, consumer="prop", acked_at=now()))


@st.composite
def scenarios(draw: Any) -> tuple[list[str], list[Event]]:
    recipients = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True))
    events: list[Event] = [("pointer", "")] * draw(st.integers(0, 3))
    events += [("ack", name) for name in draw(st.lists(st.sampled_from(POOL), max_size=12))]
    return recipients, draw(st.permutations(events))


def expected_due(recipients: list[str], events: list[Event]) -> bool:
    acked = {name for kind, name in events if kind == "ack"}
    return ("pointer", "") in events and set(recipients) <= acked


@pytest.fixture(scope="module")
def dsn(settings: Settings) -> Iterator[str]:
    """A database of its own, so no running coordinator deletes what these tests inspect."""
    name = "claimcheck_properties"
    admin = psycopg2.connect(settings.database_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name}")
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def ledger(dsn: str) -> Iterator[Ledger]:
    instance = Ledger(dsn)
    yield instance
    instance.close()


@pytest.fixture
def state_of(dsn: str) -> Iterator[Callable[[Pointer], list[tuple[Any, ...]]]]:
    connection = psycopg2.connect(dsn)
    connection.autocommit = True

    def query(pointer: Pointer) -> list[tuple[Any, ...]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT state FROM objects WHERE object_id = %s", (pointer.object_id,))
            return cursor.fetchall()

    yield query
    connection.close()


SETTINGS = hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(scenarios())
def test_sequential_interleavings_decide_exactly_when_all_recipients_acked(
    ledger: Ledger, state_of: Callable[[Pointer], list[tuple[Any, ...]]], scenario: tuple[list[str], list[Event]]
) -> None:
    recipients, events = scenario
    pointer = make(recipients)
    decisions = 0
    seen: list[Event] = []
    for event in events:
        result = apply(ledger, pointer, event)
        seen.append(event)
        decisions += result.delete_decided
        due_now = expected_due(recipients, seen)
        assert decisions == int(due_now), f"after {seen}: {decisions} decisions"
        if event[0] == "ack" and event[1] not in recipients and ("pointer", "") in seen[:-1]:
            assert result.outcome is Outcome.FOREIGN
    state = state_of(pointer)
    if events:
        pointer_seen = ("pointer", "") in events
        want = "deleting" if expected_due(recipients, events) else ("pending" if pointer_seen else "awaiting_pointer")
        assert state == [(want,)]


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios(), st.randoms(use_true_random=False))
def test_two_coordinators_applying_concurrently_decide_once(
    dsn: str, scenario: tuple[list[str], list[Event]], rnd: Any,
) -> None:
    recipients, events = scenario
    pointer = make(recipients)
    halves: list[list[Event]] = [[], []]
    for event in events:
        halves[rnd.randrange(2)].append(event)
    decisions: list[bool] = []
    barrier = threading.Barrier(2)

    def coordinator(share: list[Event]) -> None:
        ledger = Ledger(dsn)
        barrier.wait()
        try:
            decisions.extend(apply(ledger, pointer, event).delete_decided for event in share)
        finally:
            ledger.close()

    threads = [threading.Thread(target=coordinator, args=(half,)) for half in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(decisions) == int(expected_due(recipients, events))


def test_deletion_lease_goes_to_one_owner_and_returns_after_expiry(ledger: Ledger, dsn: str) -> None:
    pointer = make(["r0"])
    ledger.apply_pointer(pointer)
    assert apply(ledger, pointer, ("ack", "r0")).delete_decided
    other = Ledger(dsn)
    try:
        first = [t for t in ledger.claim_deletions("one", lease_seconds=0.5) if t.object_id == pointer.object_id]
        second = [t for t in other.claim_deletions("two", lease_seconds=30) if t.object_id == pointer.object_id]
        assert len(first) == 1 and second == []
        deadline = time.monotonic() + 10
        while not second and time.monotonic() < deadline:
            second = [t for t in other.claim_deletions("two", lease_seconds=30) if t.object_id == pointer.object_id]
        assert len(second) == 1, "an expired lease is taken over"
        assert not ledger.mark_deleted(first[0], "one"), "the first owner lost its lease"
        assert other.mark_deleted(second[0], "two")
    finally:
        other.close()
