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
from claimcheck.judgement import Applied, Outcome
from claimcheck.ledger import Ledger
from claimcheck.protocol import Ack, Pointer, make_pointer, now
from tests.testkit import temporary_database

POOL = ["r0", "r1", "r2", "r3", "r4"]
SHA = "c" * 64

Event = tuple[str, str]  # ("pointer", "") or ("ack", recipient)


def make(recipients: list[str]) -> Pointer:
    object_id = uuid.uuid4().hex
    return make_pointer(object_id=object_id, job="prop", bucket="claimcheck", key=f"prop/{object_id}.json.gz",
                        payload_size=1, payload_sha256=SHA, object_size=1, object_sha256=SHA, recipients=recipients)


def message(pointer: Pointer, event: Event) -> Pointer | Ack:
    kind, recipient = event
    if kind == "pointer":
        return pointer
    return Ack(object_id=pointer.object_id, job=pointer.job, recipient=recipient, payload_sha256=SHA,
               consumer="prop", acked_at=now())


def apply(ledger: Ledger, pointer: Pointer, event: Event) -> Applied:
    return ledger.apply([message(pointer, event)])[0]


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
    """A database of its own (and of this run: test sessions may overlap on one stack), so no
    running coordinator deletes what these tests inspect."""
    with temporary_database(settings.database_url) as url:
        yield url


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


@st.composite
def batched_runs(draw: Any) -> tuple[list[tuple[list[str], list[Event]]], list[int], list[int]]:
    """Several objects' scenarios, their events interleaved, cut into consecutive batches."""
    objects = draw(st.lists(scenarios(), min_size=1, max_size=4))
    tagged = [index for index, (_, events) in enumerate(objects) for _ in events]
    interleaving = draw(st.permutations(tagged))
    cuts = sorted(draw(st.lists(st.integers(0, len(interleaving)), max_size=4)))
    return objects, interleaving, cuts


def _batches(objects: list[tuple[list[str], list[Event]]], interleaving: list[int], cuts: list[int],
             pointers: list[Pointer]) -> list[list[Pointer | Ack]]:
    """The messages in interleaving order (each object's events keep their own order), cut at ``cuts``."""
    queues = [list(events) for _, events in objects]
    messages = [message(pointers[index], queues[index].pop(0)) for index in interleaving]
    bounds = [0, *cuts, len(messages)]
    return [messages[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


@SETTINGS
@given(batched_runs())
def test_batches_give_the_same_outcomes_as_one_message_at_a_time(
    ledger: Ledger, state_of: Callable[[Pointer], list[tuple[Any, ...]]],
    run: tuple[list[tuple[list[str], list[Event]]], list[int], list[int]],
) -> None:
    """The coordinator applies whatever one broker read brought as one batch; mixing objects,
    duplicates and early ACKs in a batch must not change a single outcome or decision."""
    objects, interleaving, cuts = run
    batched_pointers = [make(recipients) for recipients, _ in objects]
    single_pointers = [make(recipients) for recipients, _ in objects]
    batched = [result for batch in _batches(objects, interleaving, cuts, batched_pointers)
               for result in ledger.apply(batch)]
    single = [ledger.apply([msg])[0] for batch in _batches(objects, interleaving, [], single_pointers) for msg in batch]
    assert [r.outcome for r in batched] == [r.outcome for r in single]
    for index, (recipients, events) in enumerate(objects):
        decided = sum(r.delete_decided for r, owner in zip(batched, interleaving, strict=True) if owner == index)
        assert decided == int(expected_due(recipients, events))
        assert state_of(batched_pointers[index]) == state_of(single_pointers[index])


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batched_runs(), batched_runs())
def test_two_coordinators_applying_overlapping_batches_decide_once_without_deadlock(
    dsn: str, first: tuple[list[tuple[list[str], list[Event]]], list[int], list[int]],
    second: tuple[list[tuple[list[str], list[Event]]], list[int], list[int]],
) -> None:
    """Both coordinators see every object of the run (as after a redelivery), in batches of their own."""
    objects, interleaving, cuts = first
    pointers = [make(recipients) for recipients, _ in objects]
    other_cuts = [cut for cut in second[2] if cut <= len(interleaving)]
    decisions: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def coordinator(batches: list[list[Pointer | Ack]]) -> None:
        ledger = Ledger(dsn)
        barrier.wait()
        try:
            for batch in batches:
                decisions.extend((m.object_id, r.delete_decided) for m, r in zip(batch, ledger.apply(batch), strict=True))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            ledger.close()

    threads = [threading.Thread(target=coordinator, args=(_batches(objects, interleaving, c, pointers),))
               for c in (cuts, other_cuts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    for pointer, (recipients, events) in zip(pointers, objects, strict=True):
        decided = sum(flag for object_id, flag in decisions if object_id == pointer.object_id)
        assert decided == int(expected_due(recipients, events))


def test_deletion_lease_goes_to_one_owner_and_returns_after_expiry(ledger: Ledger, dsn: str) -> None:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:  # the other tests' decided objects
        cursor.execute("UPDATE objects SET state = 'deleted' WHERE state = 'deleting'")
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
        assert ledger.mark_deleted(first, "one") == [], "the first owner lost its lease"
        assert other.mark_deleted(second, "two") == second
    finally:
        other.close()
