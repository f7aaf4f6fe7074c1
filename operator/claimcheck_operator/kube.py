"""Job create/read/delete through the ``kubernetes`` client (kopf creates no objects itself).

Everything here is idempotent: reads go by name, a create answered 409 means the Job is
already there (made by this operator before a restart), a delete answered 404 is done.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException


def load_client_config() -> None:
    """In-cluster credentials when in a Pod, else the kubeconfig (``KUBECONFIG`` or ~/.kube/config)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        # The client reads KUBECONFIG once at import; read it now, so a later change counts.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)  # type: ignore[no-untyped-call]


def _batch() -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api()


def read_job(namespace: str, name: str) -> dict[str, Any] | None:
    """The Job as a plain dict, or None if it does not exist."""
    try:
        response = _batch().read_namespaced_job(name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    # _preload_content=False: the raw JSON, not the client's model objects.
    result: dict[str, Any] = json.loads(response.data)  # type: ignore[attr-defined]
    return result


def create_job(namespace: str, manifest: Mapping[str, Any]) -> bool:
    """Create the Job; True if created now, False if a Job of that name already existed (409)."""
    try:
        _batch().create_namespaced_job(namespace, dict(manifest))  # type: ignore[arg-type]  # dicts are accepted
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def delete_job(namespace: str, name: str) -> bool:
    """Delete the Job and (in the background) its Pods; False if it was already gone."""
    try:
        _batch().delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def owner_uids(job: Mapping[str, Any]) -> set[str]:
    """UIDs of the Job's owners, to tell our Job from a same-named leftover."""
    return {ref.get("uid", "") for ref in (job.get("metadata") or {}).get("ownerReferences") or []}
