"""Prometheus metrics of every component.

Conventions: units in names (``_seconds``, ``_bytes``), counters end in ``_total``, and label
values come from small closed sets (recipient groups, outcomes, reasons): never an object id
or a job id. Importing this module registers nothing: the metrics count from the start, and
:func:`register` adds them to a registry (the default one when a component serves its HTTP
endpoint), so an application using claimcheck as a library decides whether and where they are
exposed. Each process serves the default registry on its HTTP endpoint (``/metrics``);
Prometheus's ``job`` and ``instance`` labels tell the components apart. Metric names are part
of the dashboard's contract (charts/claimcheck/dashboards/claimcheck.json, docs/observability.md).
"""

import logging
import threading
import time
from collections.abc import Iterable, Iterator

import psycopg2
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg2 import extensions as pg
from tenacity import RetryCallState

log = logging.getLogger(__name__)

# Seconds, from a small payload on a local stack to a multi-GB upload.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Publish-to-delete: includes queueing behind slow recipients, so it reaches hours.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 14400.0)

# Every reason a component dead-letters with (InvalidMessage categories, consumer and ledger
# verdicts). Pre-created so that "no dead letters" is a 0, not a missing series.
DEAD_LETTER_REASONS = {
    "consumer": ("invalid", "forged", "foreign_recipient", "foreign_bucket", "integrity", "missing_object",
                 "processing_failed", "internal"),
    "coordinator": ("invalid", "forged", "foreign_recipient", "foreign_bucket", "mismatch", "internal"),
}

_ALL: list[Counter | Histogram] = []  # every metric below, registered by register()


def _counter(name: str, documentation: str, labelnames: Iterable[str] = ()) -> Counter:
    metric = Counter(name, documentation, labelnames, registry=None)
    _ALL.append(metric)
    return metric


def _histogram(name: str, documentation: str, labelnames: Iterable[str] = (), *,
               buckets: Iterable[float] = DURATION_BUCKETS) -> Histogram:
    metric = Histogram(name, documentation, labelnames, registry=None, buckets=tuple(buckets))
    _ALL.append(metric)
    return metric


# -- producer ---------------------------------------------------------------------------------
PUBLISHED_OBJECTS = _counter("claimcheck_producer_objects_published_total", "Pointers published and confirmed")
PUBLISHED_BYTES = _counter("claimcheck_producer_payload_bytes_total", "Uncompressed payload bytes published")
STORED_BYTES = _counter("claimcheck_producer_stored_bytes_total", "Gzipped object bytes uploaded to S3 and published")
UPLOAD_SECONDS = _histogram(
    "claimcheck_producer_upload_seconds", "Time to generate, gzip and upload one payload", buckets=DURATION_BUCKETS
)
PUBLISH_SECONDS = _histogram(
    "claimcheck_producer_publish_seconds", "Time to publish one pointer until the broker confirmed it (retries included)",
    buckets=DURATION_BUCKETS,
)
UPLOAD_RETRIES = _counter("claimcheck_producer_upload_retries_total", "S3 uploads retried after a storage error")
# Every publisher: the producer's pointers, the consumers' ACKs, dead letters.
PUBLISH_RETRIES = _counter(
    "claimcheck_publish_retries_total", "Publishes retried on a fresh connection (NACK, confirm timeout, lost connection)"
)

# -- consumer ---------------------------------------------------------------------------------
RECEIVED = _counter("claimcheck_consumer_pointers_received_total", "Pointers delivered to a recipient", ["recipient"])
VERIFIED = _counter(
    "claimcheck_consumer_payloads_verified_total", "Payloads whose sizes and sha256 matched their pointer", ["recipient"]
)
CHECKSUM_FAILURES = _counter(
    "claimcheck_consumer_checksum_failures_total", "Payloads whose size or sha256 did not match (dead-lettered)",
    ["recipient"],
)
CONSUMED = _counter(
    "claimcheck_consumer_messages_total",
    "Pointers handled by a recipient, by result (acked, dead_lettered, retried, already_settled: redelivered after "
    "its object was deleted with this recipient's ACK counted, or cancelled)",
    ["recipient", "result"],
)
DOWNLOAD_SECONDS = _histogram(
    "claimcheck_consumer_download_seconds", "Time to download, decompress and verify one payload", ["recipient"],
    buckets=DURATION_BUCKETS,
)
PROCESSING_SECONDS = _histogram(
    "claimcheck_consumer_processing_seconds", "Time the processing hook took for one verified payload", ["recipient"],
    buckets=DURATION_BUCKETS,
)

# -- coordinator ------------------------------------------------------------------------------
LEDGER_MESSAGES = _counter(
    "claimcheck_coordinator_messages_total",
    "Pointers and ACKs applied to the ledger, by kind (pointer, ack) and outcome (recorded, early, duplicate, ...)",
    ["kind", "outcome"],
)
ACKS = _counter(
    "claimcheck_coordinator_acks_total",
    "Business ACKs applied to the ledger, by recipient and outcome (recorded = counted, duplicate = ignored, ...)",
    ["recipient", "outcome"],
)
DELETES = _counter("claimcheck_coordinator_deletes_total", "S3 objects deleted after all recipients confirmed")
DELETE_FAILURES = _counter("claimcheck_coordinator_delete_failures_total", "S3 deletes that failed and will be retried")
PUBLISH_TO_DELETE_SECONDS = _histogram(
    "claimcheck_coordinator_publish_to_delete_seconds",
    "From the producer creating a pointer to the coordinator recording its object's deletion",
    buckets=LATENCY_BUCKETS,
)
SWEPT = _counter("claimcheck_coordinator_orphans_swept_total", "Unreferenced objects removed by the sweeper")
SWEEPS_POSTPONED = _counter(
    "claimcheck_coordinator_sweeps_postponed_total",
    "Sweeper passes skipped because no coordinator applied the pass's barrier in time (a pointer-queue backlog)",
)
DELETER_ERRORS = _counter(
    "claimcheck_coordinator_deleter_errors_total", "Deleter passes that failed (ledger or S3 unavailable, any error); retried"
)
UNAUTHORIZED_REQUESTS = _counter(
    "claimcheck_coordinator_unauthorized_requests_total", "DELETE /jobs requests refused for lack of a valid control token"
)
DEAD_LETTERS = _counter(
    "claimcheck_dead_letters_total", "Messages dead-lettered, by component and reason", ["component", "reason"]
)

# -- everywhere -------------------------------------------------------------------------------
CONNECTION_RECOVERIES = _counter(
    "claimcheck_connection_recoveries_total",
    "Broker connections rebuilt after a loss, by role (consume, publish) and cause (broker, dependency)",
    ["role", "cause"],
)


def recipient_metrics(recipient: str) -> None:
    """Create a recipient's series at zero, so rates and sums exist before the first event."""
    RECEIVED.labels(recipient)
    VERIFIED.labels(recipient)
    CHECKSUM_FAILURES.labels(recipient)
    for result in ("acked", "dead_lettered", "retried", "already_settled"):
        CONSUMED.labels(recipient, result)
    for component in ("consumer",):
        for reason in DEAD_LETTER_REASONS[component]:
            DEAD_LETTERS.labels(component, reason)


def coordinator_metrics() -> None:
    """Create the coordinator's labelled series at zero."""
    for kind in ("pointer", "ack", "intent"):
        for outcome in ("recorded", "early", "duplicate", "foreign", "mismatch", "cancelled"):
            LEDGER_MESSAGES.labels(kind, outcome)
    for reason in DEAD_LETTER_REASONS["coordinator"]:
        DEAD_LETTERS.labels("coordinator", reason)


for _role in ("consume", "publish"):
    for _cause in ("broker", "dependency"):
        CONNECTION_RECOVERIES.labels(_role, _cause)


def count_ack(recipient: str, outcome: str) -> None:
    """One business ACK applied by the coordinator; remembers the recipient for the ledger gauges."""
    ACKS.labels(recipient, outcome).inc()
    if outcome == "recorded" and len(_known_recipients) < 1000:  # recipients are configured groups, a small set
        _known_recipients.add(recipient)


_known_recipients: set[str] = set()


def count_publish_retry(_: RetryCallState) -> None:
    """A tenacity ``before_sleep`` hook: one more publish retry."""
    PUBLISH_RETRIES.inc()


# -- the ledger at scrape time ----------------------------------------------------------------

_LIVE = """
    SELECT state, count(*), coalesce(extract(epoch FROM now() - min(coalesce(pointer_seen_at, first_seen_at))), 0)
      FROM objects WHERE state IN ('awaiting_pointer', 'pending', 'deleting') GROUP BY state
"""
_WAITING = """
    SELECT r.recipient, count(*)
      FROM objects o CROSS JOIN LATERAL unnest(o.recipients) AS r(recipient)
     WHERE o.state = 'pending'
       AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.object_id = o.object_id AND a.recipient = r.recipient)
     GROUP BY 1
"""
LIVE_STATES = ("awaiting_pointer", "pending", "deleting")


class LedgerCollector(Collector):
    """Objects not deleted yet, read from the ledger when Prometheus scrapes.

    Two small aggregate queries over the live (not yet deleted) rows, on one connection with
    a 2 s statement timeout; a ledger that does not answer reports ``..._ledger_up 0``
    instead of failing the scrape. Every coordinator replica reports the same numbers:
    dashboards take ``max`` over replicas.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: pg.connection | None = None
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []  # values come from the database at collect time; do not query on register

    def _query(self) -> tuple[list[tuple[str, int, float]], list[tuple[str, int]]]:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg2.connect(self._dsn, connect_timeout=3, options="-c statement_timeout=2000")
            self._connection.autocommit = True
        with self._connection.cursor() as cursor:
            cursor.execute(_LIVE)
            live = [(state, int(count), float(age)) for state, count, age in cursor.fetchall()]
            cursor.execute(_WAITING)
            waiting = [(recipient, int(count)) for recipient, count in cursor.fetchall()]
        return live, waiting

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.monotonic()
        with self._lock:
            try:
                live, waiting = self._query()
                up = 1.0
            except psycopg2.Error as exc:
                log.warning("ledger metrics unavailable: %s", exc)
                if self._connection is not None:
                    self._connection.close()
                self._connection = None
                live, waiting, up = [], [], 0.0
        yield GaugeMetricFamily("claimcheck_coordinator_ledger_up", "1 when the ledger answered this scrape", value=up)
        yield GaugeMetricFamily(
            "claimcheck_coordinator_ledger_scrape_seconds", "Time the ledger queries of this scrape took",
            value=time.monotonic() - started,
        )
        if not up:
            return
        counts = {state: (count, age) for state, count, age in live}
        objects = GaugeMetricFamily(
            "claimcheck_coordinator_objects", "Objects in the ledger not deleted yet, by state", labels=["state"]
        )
        oldest = GaugeMetricFamily(
            "claimcheck_coordinator_oldest_object_age_seconds",
            "Age of the oldest object in each live state (0 when there is none)", labels=["state"],
        )
        for state in LIVE_STATES:
            count, age = counts.get(state, (0, 0.0))
            objects.add_metric([state], count)
            oldest.add_metric([state], age)
        yield objects
        yield oldest
        awaiting = GaugeMetricFamily(
            "claimcheck_coordinator_objects_awaiting_recipient",
            "Pending objects not yet confirmed by each recipient group", labels=["recipient"],
        )
        by_recipient = dict.fromkeys(sorted(_known_recipients), 0) | dict(waiting)
        for recipient, count in by_recipient.items():
            awaiting.add_metric([recipient], count)
        yield awaiting

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


_registered: list[CollectorRegistry] = []


def register(registry: CollectorRegistry = REGISTRY) -> None:
    """Register every claimcheck metric with ``registry``, once per registry."""
    with _register_lock:
        if any(known is registry for known in _registered):
            return
        for metric in _ALL:
            registry.register(metric)
        _registered.append(registry)


def register_ledger_collector(dsn: str) -> LedgerCollector:
    """Register (once per process) the collector reading the ledger at ``dsn``."""
    global _ledger_collector
    with _register_lock:
        if _ledger_collector is None:
            _ledger_collector = LedgerCollector(dsn)
            REGISTRY.register(_ledger_collector)
        return _ledger_collector


_register_lock = threading.Lock()
_ledger_collector: LedgerCollector | None = None
