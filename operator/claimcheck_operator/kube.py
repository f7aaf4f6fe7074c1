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


def delete_job(namespace: str, name: str, uid: str) -> bool:
    """Delete the Job with this ``uid`` and (in the background) its Pods; False if it was already gone.

    The uid precondition makes the API server refuse (409) to delete a different Job that took
    the name in the meantime: only the Job that was checked as ours is deleted.
    """
    options = kubernetes.client.V1DeleteOptions(
        propagation_policy="Background", preconditions=kubernetes.client.V1Preconditions(uid=uid)
    )
    try:
        _batch().delete_namespaced_job(name, namespace, body=options)
    except ApiException as exc:
        if exc.status in (404, 409):
            return False
        raise
    return True


def owner_uids(job: Mapping[str, Any]) -> set[str]:
    """UIDs of the Job's owners, to tell our Job from a same-named leftover."""
    return {ref.get("uid", "") for ref in (job.get("metadata") or {}).get("ownerReferences") or []}


def owned(job: Mapping[str, Any], owner_uid: str, labels: Mapping[str, str]) -> bool:
    """Whether the operator made this Job for this ClaimCheckJob: an ownerReference to its uid
    and the labels the builders set. A Job of the same name that someone else made is never touched."""
    job_labels = (job.get("metadata") or {}).get("labels") or {}
    return bool(owner_uid) and owner_uid in owner_uids(job) and all(job_labels.get(k) == v for k, v in labels.items())
