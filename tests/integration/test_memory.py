"""A 100 MiB payload passes through producer and consumer processes with flat memory."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from integration_helpers import unique

PAYLOAD = 100 * 1024 * 1024
# Both processes must stay well under the payload size (the interpreter, boto3 and pika alone
# take ~60 MiB); docs/benchmarks.md tracks the measured figures.
RSS_LIMIT = 100 * 1024 * 1024


def run_measured(args: list[str], env: dict[str, str], log: Path) -> tuple[int, int, str]:
    """Run ``python -m claimcheck ARGS``; return exit code, peak RSS in bytes, stdout."""
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "claimcheck", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdout is not None
        out = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024, out


def test_100_mib_payload_through_producer_and_consumer_with_flat_memory(
    coordinator_url: str, recipients: Callable[..., list[str]], tmp_path: Path
) -> None:
    (name,) = recipients("bulk")
    job = unique("memory")
    env = {**os.environ, "CLAIMCHECK_COORDINATOR_URL": coordinator_url}

    code, producer_rss, out = run_measured(
        ["producer", "--job", job, "--count", "1", "--size", "100MiB", "--recipients", name, "--no-verify"],
        env, tmp_path / "producer.log",
    )
    assert code == 0, (tmp_path / "producer.log").read_text()
    assert json.loads(out.splitlines()[-1])["payload_bytes"] == PAYLOAD

    code, consumer_rss, out = run_measured(
        ["consumer", "--recipient", name, "--job", job, "--expect", "1"], env, tmp_path / "consumer.log"
    )
    assert code == 0, (tmp_path / "consumer.log").read_text()
    stats = json.loads(out.splitlines()[-1])
    assert stats["verified_by_job"] == {job: 1}

    print(f"peak RSS for a 100 MiB payload: producer {producer_rss / 2**20:.0f} MiB, "
          f"consumer {consumer_rss / 2**20:.0f} MiB")
    assert producer_rss < RSS_LIMIT, f"producer peaked at {producer_rss / 2**20:.0f} MiB"
    assert consumer_rss < RSS_LIMIT, f"consumer peaked at {consumer_rss / 2**20:.0f} MiB"
