"""The orphan sweeper: removes payloads that no live pointer references.

A producer that dies between upload and publish, or a pointer the coordinator dead-lettered,
leaves an object in S3 that no recipient will ever confirm. Once such an object is older than
the grace period and the ledger has no pending or deleting record of it, it is recorded as
swept and deleted. Objects with pending recipients are never touched, nor keys that do not
have the producer's ``<job>/<object id>.json.gz`` form.
"""

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from claimcheck import metrics, store
from claimcheck.ledger import Ledger

log = logging.getLogger(__name__)

_KEY = re.compile(r"^(?P<job>[A-Za-z0-9][A-Za-z0-9._-]{0,127})/(?P<object_id>[0-9a-f]{32})\.json\.gz$")
PAGE = 1000


def sweep(s3: Any, ledger: Ledger, bucket: str, grace_seconds: float, prefix: str = "") -> int:
    """Sweep the keys under ``prefix`` once; return how many orphans were deleted."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_seconds)
    swept = 0
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": PAGE})
    for page in pages:
        candidates = {}
        for item in page.get("Contents", []):
            match = _KEY.match(item["Key"])
            if match and item["LastModified"] < cutoff:
                candidates[match["object_id"]] = (match["job"], item["Key"])
        if not candidates:
            continue
        live = ledger.live_object_ids(list(candidates))
        for object_id, (job, key) in candidates.items():
            if object_id in live or not ledger.claim_orphan(object_id, job, bucket, key):
                continue
            store.delete(s3, bucket, key)
            metrics.SWEPT.inc()
            swept += 1
            log.warning("swept orphan s3://%s/%s: no live pointer references it", bucket, key)
    return swept
