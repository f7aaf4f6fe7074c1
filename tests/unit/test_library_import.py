"""Importing claimcheck as a library has no side effects an application would have to undo."""

import json
import subprocess
import sys

PROBE = """
import json, threading
from prometheus_client import REGISTRY
before = set(REGISTRY._names_to_collectors)
import claimcheck
from claimcheck import Consumer, Producer, register_metrics, wait_until_deleted
after = set(REGISTRY._names_to_collectors)
registered_on_import = sorted(after - before)
threads = [thread.name for thread in threading.enumerate()]
register_metrics()
register_metrics()  # idempotent
print(json.dumps({"on_import": registered_on_import, "threads": threads,
                  "on_request": sorted(n for n in set(REGISTRY._names_to_collectors) - after if n.startswith("claimcheck_"))}))
"""


def test_importing_claimcheck_registers_no_metrics_and_starts_no_thread() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["on_import"] == []
    assert found["threads"] == ["MainThread"]
    assert "claimcheck_producer_objects_published_total" in found["on_request"]


def test_the_package_is_typed() -> None:
    import claimcheck

    assert claimcheck.__file__ is not None
    from pathlib import Path

    assert (Path(claimcheck.__file__).parent / "py.typed").is_file()
