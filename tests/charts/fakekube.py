"""A tiny read-only Kubernetes API on 127.0.0.1 for helm's `lookup` and `--dry-run`.

Serves exactly what the helm CLI asks for when it renders against a "cluster":
/version, discovery (/api, /apis, resource lists), GET of single objects and lists of
the objects it holds. Enough to prove that charts reuse existing Secrets on upgrade
(lookup) and read the claimcheck-infra connection Secret; it is no API server.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CORE = [("secrets", "Secret", True), ("serviceaccounts", "ServiceAccount", True), ("configmaps", "ConfigMap", True),
        ("services", "Service", True), ("namespaces", "Namespace", False), ("events", "Event", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True), ("pods", "Pod", True), ("endpoints", "Endpoints", True)]
GROUPS = {
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "batch/v1": [("jobs", "Job", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                     ("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "events.k8s.io/v1": [("events", "Event", True)],
    "claimcheck.io/v1alpha1": [("claimcheckjobs", "ClaimCheckJob", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _resource_list(group_version: str, resources: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [{"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": VERBS}
                          for n, k, ns in resources]}


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name)
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(resource, meta.get("namespace", ""), meta["name"])] = obj

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
        }))
        return path

    def __enter__(self) -> FakeKube:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self) -> None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": f"{self.path} not found"})

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                fake.requests.append(self.path)
                if path == "/version":
                    return self._send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.3",
                                            "platform": "linux/amd64"})
                if path == "/api":
                    return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": []})
                if path == "/apis":
                    groups = []
                    for gv in GROUPS:
                        g, v = gv.split("/")
                        entry = {"groupVersion": gv, "version": v}
                        groups.append({"name": g, "versions": [entry], "preferredVersion": entry})
                    return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
                if path == "/api/v1":
                    return self._send(200, _resource_list("v1", CORE))
                m = re.fullmatch(r"/apis/([^/]+)/([^/]+)", path)
                if m and f"{m[1]}/{m[2]}" in GROUPS:
                    return self._send(200, _resource_list(f"{m[1]}/{m[2]}", GROUPS[f"{m[1]}/{m[2]}"]))
                m = re.fullmatch(r"/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/([^/]+))?/([a-z]+)(?:/([^/]+))?", path)
                if m:
                    namespace, resource, name = m[1] or "", m[2], m[3]
                    if name is not None:
                        obj = fake.objects.get((resource, namespace, name))
                        return self._send(200, obj) if obj else self._not_found()
                    items = [o for (r, ns, _), o in fake.objects.items() if r == resource and ns == namespace]
                    return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
                return self._not_found()

        return Handler
