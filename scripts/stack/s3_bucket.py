"""Create the claimcheck bucket on the local S3 server and check it works.

Used by scripts/stack.sh once SeaweedFS has been started. SeaweedFS answers
on its S3 port before its filer is ready (it then fails requests with 500),
so this retries the bucket creation until a deadline, then does one
PUT/GET/DELETE round trip. Settings come from the same CLAIMCHECK_S3_*
variables as the applications (defaults: the local stack).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import boto3
import botocore.exceptions
from botocore.config import Config


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("CLAIMCHECK_S3_ENDPOINT_URL", "http://127.0.0.1:38333"),
        aws_access_key_id=os.environ.get("CLAIMCHECK_S3_ACCESS_KEY_ID", "claimcheck"),
        aws_secret_access_key=os.environ.get("CLAIMCHECK_S3_SECRET_ACCESS_KEY", "claimcheck-secret"),
        region_name=os.environ.get("CLAIMCHECK_S3_REGION", "us-east-1"),
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


def ensure_bucket(s3, bucket: str, deadline: float) -> str:
    """Create the bucket; 409 (already exists / owned by you) counts as done."""
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            s3.create_bucket(Bucket=bucket)
            return "created"
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 409 or code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return "exists"
            if status in (401, 403):
                raise SystemExit(f"S3 rejected the credentials: {code}") from None
            last = f"{status} {code}"
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise SystemExit(f"S3 bucket {bucket!r} not ready before the deadline (last: {last})")


def round_trip(s3, bucket: str) -> None:
    key = f"stack-probe/{uuid.uuid4().hex}"
    body = os.urandom(64 * 1024)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=key)
    if got != body:
        raise SystemExit("S3 round trip returned different bytes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bucket", default=os.environ.get("CLAIMCHECK_S3_BUCKET", "claimcheck"))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for S3")
    parser.add_argument("--verify", action="store_true", help="also PUT/GET/DELETE one object")
    args = parser.parse_args()

    s3 = client()
    state = ensure_bucket(s3, args.bucket, time.monotonic() + args.timeout)
    if args.verify:
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                round_trip(s3, args.bucket)
                break
            except botocore.exceptions.ClientError as exc:
                if time.monotonic() >= deadline:
                    raise SystemExit(f"S3 PUT/GET/DELETE failed: {exc}") from None
                time.sleep(0.2)
    print(f"bucket {args.bucket}: {state}" + (", PUT/GET/DELETE ok" if args.verify else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
