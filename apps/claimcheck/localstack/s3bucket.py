"""Create the stack's bucket on the local S3 server and check that it works.

SeaweedFS answers on its S3 port before its filer is ready (it then fails requests with 500), so
the bucket creation is retried until a deadline, then one PUT/GET/DELETE round trip decides.
"""

import os
import uuid
from typing import Any

import boto3
import botocore.exceptions
import tenacity
from botocore.config import Config

from claimcheck.localstack.accounts import Account
from claimcheck.localstack.daemons import POLL_SECONDS, StackError


class _NotYet(Exception):
    """S3 answered, but not usably yet (a 5xx, a connection refused)."""


def check_bucket(endpoint: str, account: Account, bucket: str, seconds: float) -> None:
    """Create ``bucket`` (409: it exists), then PUT, GET and DELETE one object; retried until
    ``seconds`` have passed. Wrong credentials fail at once."""
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=account.user, aws_secret_access_key=account.password,
                      region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2,
                                    read_timeout=10))
    retrying = tenacity.Retrying(stop=tenacity.stop_after_delay(seconds), wait=tenacity.wait_fixed(POLL_SECONDS),
                                 retry=tenacity.retry_if_exception_type(_NotYet), reraise=True)
    try:
        retrying(_create, s3, bucket)
        retrying(_round_trip, s3, bucket)
    except _NotYet as exc:
        raise StackError(f"S3 bucket {bucket!r} at {endpoint} not usable after {seconds:.0f}s (last: {exc})") from None


def _create(s3: Any, bucket: str) -> None:
    try:
        s3.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 409 or code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return
        if status in (401, 403):
            raise StackError(f"S3 rejected the credentials: {code}") from None
        raise _NotYet(f"{status} {code}") from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as exc:
        raise _NotYet(type(exc).__name__) from None


def _round_trip(s3: Any, bucket: str) -> None:
    key = f"stack-probe/{uuid.uuid4().hex}"
    body = os.urandom(64 * 1024)
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.delete_object(Bucket=bucket, Key=key)
    except (botocore.exceptions.ClientError, botocore.exceptions.ConnectionError) as exc:
        raise _NotYet(str(exc)) from None
    if got != body:
        raise StackError("S3 round trip returned different bytes")
