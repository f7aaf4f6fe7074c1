"""claimcheck: large-message offloading for RabbitMQ with refcounted, exactly-once deletion.

The library (docs/library.md)::

    from claimcheck import Producer, Consumer, wait_until_deleted

    with Producer() as producer:
        pointer = producer.send(Path("report.pdf"), recipients=["billing", "audit"], content_type="application/pdf")

    Consumer("billing", lambda message: print(message.object_id, message.read()[:20])).run(stop)

Importing it registers no Prometheus metrics (see :func:`register_metrics`) and starts no threads.

The data path, one module per step:
send (producer, sources, payload) -> store (store) -> publish (publisher, group_commit) -> consume (consumer, amqp_loop)
-> verify (store.open_verified) -> ack (consumer, ack_batcher) -> settle the pointer (settlement)
-> count (ledger, judgement; coordinator and ordered_worker apply them) -> delete (coordinator).

Around it: protocol and signing (the messages and who may sign them), topology (queues and
exchanges), deadletter (setting a message aside with a reason), config (settings), runtime,
logsetup, metrics and httpapi (what every process shares: allocator settings, logs, metrics, the
health endpoint), coordinator_client (the coordinator's HTTP API seen from other components),
deletion (waiting for a run's deletions), migrate and migrations/ (the ledger's schema), sweeper
(orphans), provisioning (broker topology and role accounts), cli and __main__ (the ``claimcheck``
command), files (what ``send`` reads and ``receive`` writes), status (the ``status`` command),
demo, progressbar and sizes (for people at a terminal). localstack/ is the local stack as code
(``make up``, its ports), childprocess the one wrapper of a child process (demo, bench, fault harness).
"""

from claimcheck.config import Settings
from claimcheck.consumer import Consumer, Message
from claimcheck.deletion import DeletionReport, NotDeleted, wait_until_deleted
from claimcheck.metrics import register as register_metrics
from claimcheck.producer import Producer
from claimcheck.protocol import Pointer
from claimcheck.publisher import BrokerRefused
from claimcheck.store import StorageConfigError, StorageOptions
from claimcheck.topology import NotProvisioned

__version__ = "0.1.0"

__all__ = [
    "BrokerRefused",
    "Consumer",
    "DeletionReport",
    "Message",
    "NotDeleted",
    "NotProvisioned",
    "Pointer",
    "Producer",
    "Settings",
    "StorageConfigError",
    "StorageOptions",
    "__version__",
    "register_metrics",
    "wait_until_deleted",
]
