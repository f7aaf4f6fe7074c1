"""The ack step's transport: business ACKs of one replica's workers, published together.

Each worker that finished a payload hands its ACK to :meth:`AckBatcher.submit` and goes on
with the next pointer; whatever is waiting travels as one signed
:class:`~claimcheck.protocol.AckBatch` (a lone ACK as a plain :class:`~claimcheck.protocol.Ack`),
see :mod:`claimcheck.group_commit`. The first ACK of a message waits up to ``ACK_LINGER``
for company: a few milliseconds on the way to deletion buy several objects per broker message.
"""

from claimcheck import topology
from claimcheck.group_commit import GroupCommit
from claimcheck.protocol import MAX_ACKS_PER_BATCH, Ack, AckBatch, AckedObject, Pointer, now
from claimcheck.publisher import BrokerSession
from claimcheck.signing import Signer

# How long the first ACK of a message waits for others: short next to a download and the
# coordinator's commit, long enough for a busy replica's workers to finish a few more objects.
ACK_LINGER = 0.005


class AckBatcher(GroupCommit[Pointer]):
    """Publishes the business ACKs of ``recipient``'s replica ``consumer`` in batches."""

    def __init__(self, publisher: BrokerSession, signer: Signer, recipient: str, consumer: str,
                 max_batch: int = MAX_ACKS_PER_BATCH, linger: float = ACK_LINGER, shards: int = 1) -> None:
        super().__init__(publisher, signer, topology.ACK_EXCHANGE,
                         lambda pointer: topology.ack_route(pointer.object_id, shards),
                         min(max_batch, MAX_ACKS_PER_BATCH), f"acks-{recipient}", linger)
        self._recipient = recipient
        self._consumer = consumer

    def _identity(self, item: Pointer) -> str:
        # A pointer redelivered while its first copy still waits would confirm one object twice.
        return item.object_id

    def _encode(self, items: list[Pointer]) -> tuple[bytes, str]:
        if len(items) == 1:
            (pointer,) = items
            ack = Ack(object_id=pointer.object_id, job=pointer.job, recipient=self._recipient,
                      payload_sha256=pointer.payload_sha256, consumer=self._consumer, acked_at=now())
            return ack.encode(), f"{pointer.object_id}.{self._recipient}"
        batch = AckBatch(recipient=self._recipient, consumer=self._consumer, acked_at=now(),
                         acks=tuple(AckedObject(object_id=p.object_id, job=p.job, payload_sha256=p.payload_sha256)
                                    for p in items))
        return batch.encode(), f"{items[0].object_id}+{len(items) - 1}.{self._recipient}"
