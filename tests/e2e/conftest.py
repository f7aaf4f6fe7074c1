"""End-to-end tests on a kind cluster, built by scripts/kind_stack.py: the code `make kind-up` runs.

The cluster, image loading, kubectl and port-forwarding are pytest-kind's ``KindCluster``
(wrapped by ``kind_stack.Stack``), so the fixtures and `make kind-up` cannot drift apart.

They run when CLAIMCHECK_E2E=1, or when Docker and kind are usable here and CLAIMCHECK_E2E
is not 0. Where Docker or kind is not usable they are skipped with the reason; with
CLAIMCHECK_E2E=1 that is a failure instead, so a CI job that asks for them can never pass
without running them.

  CLAIMCHECK_E2E=1        require them
  CLAIMCHECK_E2E=0        never run them
  CLAIMCHECK_E2E_KEEP=1   leave the cluster running afterwards (default: delete it)
  KIND_CLUSTER_NAME       cluster name (default claimcheck)
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testkit import wait_until

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
kind_stack: Any = importlib.import_module("kind_stack")  # scripts/ is not a package: loaded by path

SETTINGS = kind_stack.Settings.from_env()
NAMESPACE = SETTINGS.namespace
COORDINATOR = "http://127.0.0.1:30080"  # NodePort published by kind-config.yaml: survives pod replacement


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e_items = [item for item in items if Path(str(item.fspath)).parent == Path(__file__).parent]
    for item in e2e_items:
        item.add_marker(pytest.mark.e2e)
    if not e2e_items:
        return
    wanted = os.environ.get("CLAIMCHECK_E2E", "")
    if wanted == "0":
        reason = "kind end-to-end tests disabled (CLAIMCHECK_E2E=0)"
    else:
        reason = kind_stack.unusable_reason()
        if reason and wanted != "1":
            reason = f"kind end-to-end tests skipped: {reason} (set CLAIMCHECK_E2E=1 to require them)"
        elif reason:
            return  # required but unusable: the `cluster` fixture fails with the reason
    if reason:
        for item in e2e_items:
            item.add_marker(pytest.mark.skip(reason=reason))


@functools.cache
def stack() -> Any:
    """The one ``kind_stack.Stack`` of this session (built on first use, i.e. only when tests run)."""
    return kind_stack.Stack(SETTINGS)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """`make kind-up`'s code path: the cluster created or reused, the image loaded, both charts ready."""
    reason = kind_stack.unusable_reason()
    if reason:
        pytest.fail(f"CLAIMCHECK_E2E=1 but {reason}")
    stack().up()
    yield stack()
    if os.environ.get("CLAIMCHECK_E2E_KEEP") != "1":
        stack().down()


def kubectl(*args: str, timeout: float = 300, check: bool = True) -> Any:
    """``KindCluster.kubectl`` in the release namespace; ``.returncode``, ``.stdout``, ``.stderr``."""
    return stack().kubectl(*args, timeout=timeout, check=check)


def kubectl_json(*args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kubectl(*args, "-o", "json").stdout)
    return result


def helm(*args: str, timeout: float = 1200) -> Any:
    return stack().helm(*args, timeout=timeout)


def coordinator_job(job: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{COORDINATOR}/jobs/{job}", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def ccj_status(name: str) -> dict[str, Any]:
    return dict(kubectl_json("get", "claimcheckjob", name).get("status") or {})


def wait_for(predicate: Any, what: str, timeout: float, interval: float = 3.0) -> Any:
    """``testkit.wait_until``, polling kubectl every few seconds."""
    return wait_until(predicate, timeout, what, poll=interval)


def psql(query: str) -> list[list[str]]:
    """Rows of a query on the ledger database (psql inside the PostgreSQL pod, local socket)."""
    out = kubectl("exec", "claimcheck-infra-postgresql-0", "--", "psql", "-U", "claimcheck", "-d", "claimcheck",
                  "-At", "-F", "\t", "-c", query).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def secret_data(name: str) -> dict[str, str]:
    import base64

    data = kubectl_json("get", "secret", name).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def bucket_keys() -> set[str]:
    """Every key in the payload bucket, read through a port-forward to MinIO's S3 API (as the
    coordinator's S3 user: the only one allowed to list)."""
    import boto3
    from botocore.config import Config

    conn = secret_data("claimcheck-infra-connection")
    with stack().port_forward("svc/claimcheck-infra-minio", 9000) as port:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=conn["CLAIMCHECK_S3_REGION"],
                          aws_access_key_id=conn["CLAIMCHECK_S3_COORDINATOR_ACCESS_KEY_ID"],
                          aws_secret_access_key=conn["CLAIMCHECK_S3_COORDINATOR_SECRET_ACCESS_KEY"],
                          config=Config(s3={"addressing_style": "path"}))
        keys: set[str] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=conn["CLAIMCHECK_S3_BUCKET"]):
            keys |= {o["Key"] for o in page.get("Contents", [])}
        return keys
