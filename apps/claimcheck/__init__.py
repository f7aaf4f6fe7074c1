"""claimcheck: large-message offloading for RabbitMQ with refcounted, exactly-once deletion.

The data path, one module per step:
produce (payload) -> store (store) -> publish (publisher) -> consume (consumer)
-> verify (store.download_verified) -> ack (consumer) -> count (ledger) -> delete (coordinator).
"""

__version__ = "0.1.0"
