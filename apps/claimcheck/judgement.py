"""The ledger's rules: how each pointer, intent and ACK of a batch changes an object's row.

Pure: :class:`BatchJudgement` judges the messages of one batch, in arrival order, against the
batch's rows as :mod:`claimcheck.ledger` locked them, updating those rows in memory as it goes
and collecting the writes the judgements imply. The ledger then writes them and runs the
guarded ``pending -> deleting`` update in SQL, which alone decides a deletion.
"""

import enum
from collections import Counter
from dataclasses import dataclass, field

from claimcheck.protocol import Ack, Barrier, Intent, Pointer

Message = Pointer | Ack | Intent | Barrier
ObjectMessage = Pointer | Ack | Intent  # the messages about one object; a barrier is about the queue


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


@dataclass
class ObjectRow:
    """One object's ledger row as locked by a batch, updated in memory as the batch is judged.

    ``recipients`` is None until a pointer named them, and empty for an object swept as an orphan.
    """

    state: str
    recipients: list[str] | None
    sha256: str | None
    bucket: str | None
    key: str | None
    # (recipient, sha256) of every ACK row, counted or not: an ACK counts for the checksum it names.
    acked: set[tuple[str, str]] = field(default_factory=set)


class BatchJudgement:
    """Judges each message against the locked rows and collects the writes it implies."""

    def __init__(self, rows: dict[str, ObjectRow], cancelled_jobs: set[str]) -> None:
        self.rows = rows
        self.cancelled_jobs = cancelled_jobs
        self.pointers: list[tuple[Pointer, bool]] = []  # (pointer, its run was cancelled)
        self.intents: list[Intent] = []
        self.acks: list[Ack] = []
        self.duplicate_acks: Counter[tuple[str, str, str]] = Counter()
        self.last_recorded: dict[str, int] = {}  # object -> index of the last message that may have made it due

    def judge(self, index: int, message: ObjectMessage) -> Applied:
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
