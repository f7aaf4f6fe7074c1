"""Prometheus metrics of every component. Label values are bounded: never an object id."""

from prometheus_client import Counter, Histogram

PUBLISHED_OBJECTS = Counter("claimcheck_producer_objects_published_total", "Pointers published and confirmed")
PUBLISHED_BYTES = Counter("claimcheck_producer_payload_bytes_total", "Uncompressed payload bytes published")
UPLOAD_SECONDS = Histogram("claimcheck_producer_upload_seconds", "Time to generate, gzip and upload one payload")

CONSUMED = Counter(
    "claimcheck_consumer_messages_total", "Pointers handled by a recipient, by result", ["recipient", "result"]
)
DOWNLOAD_SECONDS = Histogram(
    "claimcheck_consumer_download_seconds", "Time to download and verify one payload", ["recipient"]
)

LEDGER_MESSAGES = Counter(
    "claimcheck_coordinator_messages_total", "Pointers and ACKs applied to the ledger, by outcome", ["kind", "outcome"]
)
DELETES = Counter("claimcheck_coordinator_deletes_total", "S3 objects deleted after all recipients confirmed")
DELETE_FAILURES = Counter("claimcheck_coordinator_delete_failures_total", "S3 deletes that failed and will be retried")

SWEPT = Counter("claimcheck_coordinator_orphans_swept_total", "Unreferenced objects removed by the sweeper")

DEAD_LETTERS = Counter(
    "claimcheck_dead_letters_total", "Messages dead-lettered, by component and reason", ["component", "reason"]
)
