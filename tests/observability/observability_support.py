"""Helpers of the observability tests: deadlines, free ports, Prometheus's HTTP API, /metrics parsing."""

import json
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from claimcheck.localstack.ports import HOST, LOCAL
from tests.testkit import free_port as free_port  # re-exported for the suite
from tests.testkit import wait_until as wait_until

PROMETHEUS_URL = f"http://{HOST}:{LOCAL.prometheus}"

# (metric name, sorted label pairs) -> value, as one scrape of a /metrics endpoint reads.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class ObservedRun:
    """What the run did and where its components' metrics are."""

    job: str
    count: int
    recipients: tuple[str, ...]
    producer_port: int
    coordinator_port: int
    consumer_ports: dict[str, int]
    logs: dict[str, Path]
    object_ids: list[str]
    producer_before: Samples = field(default_factory=dict)  # producer samples before the run (shared process registry)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def scrape(port: int) -> Samples:
    """One /metrics read: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def prom_query(expr: str) -> dict[str, Any]:
    """Evaluate ``expr`` now; the API's ``data`` (raises with Prometheus's error on a bad query)."""
    url = f"{PROMETHEUS_URL}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        document = get_json(url)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"Prometheus rejected {expr!r}: {exc.read().decode()}") from None
    assert document["status"] == "success", document
    return document["data"]  # type: ignore[no-any-return]


def http_put(url: str, body: dict[str, Any] | None, user: str = "guest", password: str = "guest") -> None:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="PUT",
                                     headers={"content-type": "application/json"})
    _authorize(request, user, password)
    urllib.request.urlopen(request, timeout=30).close()


def http_delete(url: str, user: str = "guest", password: str = "guest") -> None:
    request = urllib.request.Request(url, method="DELETE")
    _authorize(request, user, password)
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


def _authorize(request: urllib.request.Request, user: str, password: str) -> None:
    import base64

    request.add_header("authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
