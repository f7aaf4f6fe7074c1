"""Test harness: kmock (an in-memory Kubernetes API) in its own thread, the operator in KopfRunner,
and a stand-in of the coordinator's documented ``GET /jobs/<job>`` endpoint.

kmock has no Job controller, validation, defaulting or garbage collection; tests play the
Job controller by patching Job status, and prove the operator's requests and reactions.
Everything talks plain HTTP to kmock, as kubectl would, so watch events flow for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import kmock
import requests
from kopf.testing import KopfRunner

from tests.testkit import wait_until

NAMESPACE = "runs"
# The operator's CLAIMCHECK_CONTROL_TOKEN in these tests; the stand-in accepts only it for DELETE.
CONTROL_TOKEN = "test-control-token-0123456789"
# The recipient groups the "chart" configured (CLAIMCHECK_OPERATOR_RECIPIENTS).
CONFIGURED_RECIPIENTS = "billing,audit,a"
OperatorFactory = Callable[[], contextlib.AbstractContextManager[KopfRunner]]
CCJ_PATH = "/apis/claimcheck.io/v1alpha1/namespaces/{ns}/claimcheckjobs"
JOB_PATH = "/apis/batch/v1/namespaces/{ns}/jobs"
EVENT_PATH = "/api/v1/namespaces/{ns}/events"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05) -> T:
    """``testkit.wait_until`` with what is awaited named first, as these tests read best."""
    return wait_until(probe, timeout, what, poll=interval)


class ApiServerLikeEmulator(kmock.KubernetesEmulator):
    """kmock plus the metadata bookkeeping a real API server does on writes.

    kmock 0.8 fills in no uid, resourceVersion or creationTimestamp and ignores generateName
    (so the second kopf Event conflicts). kopf relies on resourceVersion to tell a stale
    watch event from a fresh one, so every write here gets a new one.
    """

    _counter = itertools.count(100)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = str(next(self._counter))
        elif request.resource is not None and request.action == kmock.action.UPDATE:
            version = str(next(self._counter))
            if isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(data, list):
                # kmock answers a failed JSON-patch "test" with a 500, which kopf retries with the
                # same stale value forever; a real API server answers 422 and kopf re-reads. This
                # emulator does not do optimistic concurrency: drop the resourceVersion tests.
                data[:] = [op for op in data if not (op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion")]
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)


class FakeCluster:
    """kmock's KubernetesEmulator served on 127.0.0.1 from a background event loop."""

    def __init__(self) -> None:
        self.url = ""
        self.emulator: kmock.KubernetesEmulator | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self.http = requests.Session()

    def __enter__(self) -> FakeCluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("kmock did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.http.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ApiServerLikeEmulator() as emulator, kmock.Server(emulator) as server:
            # Trap: without the bundled builtins kopf waits forever for v1/namespaces.
            emulator.resources.load_bundled()
            emulator.resources["claimcheck.io/v1alpha1/claimcheckjobs"] = kmock.ResourceInfo(
                kind="ClaimCheckJob", singular="claimcheckjob", namespaced=True, shortnames={"ccj"},
                subresources={"status"},
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            )
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    # -- plain HTTP, as a client of the API would do ------------------------------------------
    def get(self, path: str) -> dict[str, Any] | None:
        response = self.http.get(self.url + path, timeout=5)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(self.url + path, json=body, timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.patch(
            self.url + path, data=json.dumps(body), timeout=5,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def delete(self, path: str) -> None:
        self.http.delete(self.url + path, timeout=5).raise_for_status()

    # -- ClaimCheckJob and Job helpers --------------------------------------------------------
    def create_ccj(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a ClaimCheckJob; kmock fills in no uid, so the test does (else adopt() breaks)."""
        body = {
            "apiVersion": "claimcheck.io/v1alpha1",
            "kind": "ClaimCheckJob",
            "metadata": {
                "name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                "resourceVersion": "1", "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "spec": spec,
        }
        return self.post(CCJ_PATH.format(ns=namespace), body)

    def ccj(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"{CCJ_PATH.format(ns=namespace)}/{name}")

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict((self.ccj(namespace, name) or {}).get("status") or {})

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"{JOB_PATH.format(ns=namespace)}/{name}")

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return list((self.get(JOB_PATH.format(ns=namespace)) or {}).get("items") or [])

    def set_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Play the Job controller: write a Job's status."""
        self.patch(f"{JOB_PATH.format(ns=namespace)}/{name}/status", {"status": status})

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return list((self.get(EVENT_PATH.format(ns=namespace)) or {}).get("items") or [])

    def requests_log(self) -> list[Any]:
        assert self.emulator is not None
        return list(self.emulator)

    def job_creations(self) -> list[str]:
        """Names in every POST to a jobs collection, including ones answered 409."""
        return [
            (r.data or {}).get("metadata", {}).get("name", "")
            for r in self.requests_log()
            if str(r.method).upper().endswith("POST") and r.url.path.endswith("/jobs")
        ]


def job_complete(succeeded: int = 1) -> dict[str, Any]:
    return {"succeeded": succeeded, "active": 0,
            "conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]}


def job_failed(reason: str = "BackoffLimitExceeded",
               message: str = "Job has reached the specified backoff limit") -> dict[str, Any]:
    return {"failed": 4, "active": 0,
            "conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]}


class CoordinatorStandIn:
    """A stand-in of the coordinator's HTTP contract (docs/interfaces.md), not of its logic.

    ``GET /jobs/<job>`` answers whatever the test put in ``jobs`` (documented JSON shape), 404
    otherwise, to anyone; ``DELETE /jobs/<job>`` (cancel) requires ``Authorization: Bearer
    <token>`` with one of ``tokens``: without it 401 and nothing is recorded, with it the job is
    recorded in ``deleted_jobs``. Every DELETE's Authorization header lands in ``delete_auth``.
    The real coordinator needs PostgreSQL, RabbitMQ and S3; it is exercised by the e2e test.
    """

    def __init__(self, tokens: tuple[str, ...] = (CONTROL_TOKEN,)) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.deleted_jobs: list[str] = []
        self.delete_auth: list[str | None] = []
        self.tokens = tokens
        self.get_count = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.get_count += 1
                job = self.path.removeprefix("/jobs/")
                if not self.path.startswith("/jobs/") or job not in stand_in.jobs:
                    self._answer(404, {"error": f"unknown job {job}"})
                    return
                self._answer(200, {"job": job, **stand_in.jobs[job]})

            def do_DELETE(self) -> None:
                auth = self.headers.get("Authorization")
                stand_in.delete_auth.append(auth)
                if auth not in {f"Bearer {token}" for token in stand_in.tokens}:
                    self._answer(401, {"error": "a control token is required"})
                    return
                stand_in.deleted_jobs.append(self.path.removeprefix("/jobs/"))
                self._answer(200, {"job": self.path.removeprefix("/jobs/"), "dropped": True})

            def _answer(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="coordinator", daemon=True)

    def set(self, job: str, published: int, acked: dict[str, int], deleted: int) -> None:
        self.jobs[job] = {"published": published, "acked": dict(acked), "deleted": deleted,
                          "pending": published - deleted}

    def __enter__(self) -> CoordinatorStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def kubeconfig_for(url: str, path: str) -> Iterator[str]:
    """A kubeconfig pointing at kmock, for both kopf and the kubernetes client."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "kmock", "user": {"token": "kmock"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": "default"}}],
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    yield path
