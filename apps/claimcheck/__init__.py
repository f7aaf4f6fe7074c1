"""claimcheck: large-message offloading for RabbitMQ with refcounted, exactly-once deletion.

The data path, one module per step:
produce (producer, payload) -> store (store) -> publish (publisher) -> consume (consumer, amqp_loop)
-> verify (store.download_verified) -> ack (consumer) -> count (ledger) -> delete (coordinator).

Around it: protocol and signing (the messages and who may sign them), topology (queues and
exchanges), config (settings), coordinator_client (the coordinator's HTTP API seen from other
components), migrate (the ledger's schema), sweeper (orphans), status (the ``status`` command).
"""

__version__ = "0.1.0"
