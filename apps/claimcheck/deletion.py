"""Waiting until a run's payloads were confirmed by every recipient and deleted (``--verify``)."""

import time
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from claimcheck import store
from claimcheck.config import Settings
from claimcheck.coordinator_client import wait_for


@dataclass
class DeletionReport:
    """How far a job got: ``deleted`` counts only deletions earned by every recipient's ACK.

    ``leftover_objects`` is the number of objects still stored under the job's key prefix, or
    None where this role may not list the bucket.
    """

    job: str
    expected: int
    deleted: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    leftover_objects: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every expected object deleted after confirmation, nothing left in S3 (as far as can be seen)."""
        return self.deleted >= self.expected and self.leftover_objects in (0, None)


class NotDeleted(TimeoutError):
    """The job's objects were not all confirmed and deleted in time; ``report`` says how far it got."""

    def __init__(self, report: DeletionReport) -> None:
        super().__init__(f"job {report.job}: {report.deleted}/{report.expected} deleted after confirmation by every "
                         f"recipient, {report.leftover_objects} objects left in S3, after {report.seconds:.0f} s")
        self.report = report


def wait_until_deleted(job: str, count: int, timeout: float = 300.0, *, settings: Settings | None = None) -> DeletionReport:
    """Wait until the coordinator reports ``count`` objects of ``job`` confirmed by every recipient
    and deleted, then check that nothing of the job is left in S3.

    Returns the report; raises :class:`NotDeleted` (a TimeoutError carrying it) otherwise.
    Inline payloads count like stored ones (with nothing to delete).
    """
    config = settings or Settings()
    started = time.monotonic()
    progress = wait_for(config.coordinator_url, job, lambda p: p["deleted"] >= count, timeout) or {}
    report = DeletionReport(job, count, progress.get("deleted", 0), progress.get("acked", {}),
                            _leftovers(config, job), round(time.monotonic() - started, 3))
    if not report.ok:
        raise NotDeleted(report)
    return report


def _leftovers(config: Settings, job: str) -> int | None:
    try:
        return len(store.list_keys(store.client(config), config.s3_bucket, f"{config.s3_key_prefix}{job}/"))
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("AccessDenied", "403"):
            return None
        raise
