"""A 100 MiB payload passes through producer and consumer processes with flat memory: each
process's peak RSS with a 100 MiB payload stays within a few S3 parts of its peak with a 1 MiB
payload. (The rest, ~100 MiB, is the interpreter with boto3, pika and pydantic loaded.)"""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.integration.integration_helpers import peak_rss, rss_measured, unique

MiB = 1024 * 1024
# Allowed growth of peak RSS from a 1 MiB to a 100 MiB payload: a few S3 parts and buffers (the
# producer grew by 26-31 MiB once measured apart from pytest's peak: 8 MiB read to choose between
# one PUT and a multipart upload, up to three 5 MiB parts read ahead, two in flight).
GROWTH_LIMIT = 40 * MiB


def run_measured(args: list[str], env: dict[str, str], log: Path) -> tuple[int, int, str]:
    """Run ``python -m claimcheck ARGS``; return exit code, its own peak RSS in bytes, stdout."""
    report = log.with_suffix(".rss.json")
    with log.open("wb") as stderr:
        process = subprocess.run(rss_measured([sys.executable, "-m", "claimcheck", *args], report), env=env,
                                 stdout=subprocess.PIPE, stderr=stderr, check=False)
    return process.returncode, peak_rss(report), process.stdout.decode()


def peaks(size: str, recipient: str, env: dict[str, str], logs: Path) -> tuple[int, int]:
    """Peak RSS of a producer storing one payload of ``size`` and a consumer verifying it."""
    job = unique("memory")
    code, producer_rss, out = run_measured(
        ["producer", "--job", job, "--count", "1", "--size", size, "--recipients", recipient, "--no-verify"],
        env, logs / f"producer-{size}.log",
    )
    assert code == 0, (logs / f"producer-{size}.log").read_text()
    assert json.loads(out.splitlines()[-1])["published"] == 1

    code, consumer_rss, out = run_measured(
        ["consumer", "--recipient", recipient, "--job", job, "--expect", "1"], env, logs / f"consumer-{size}.log"
    )
    assert code == 0, (logs / f"consumer-{size}.log").read_text()
    assert json.loads(out.splitlines()[-1])["verified_by_job"] == {job: 1}
    return producer_rss, consumer_rss


def test_100_mib_payload_through_producer_and_consumer_with_flat_memory(
    coordinator_url: str, recipients: Callable[..., list[str]], tmp_path: Path
) -> None:
    (name,) = recipients("bulk")
    env = {**os.environ, "CLAIMCHECK_COORDINATOR_URL": coordinator_url}

    small = peaks("1MiB", name, env, tmp_path)
    large = peaks("100MiB", name, env, tmp_path)

    print(f"peak RSS, 1 MiB -> 100 MiB payload: producer {small[0] / MiB:.0f} -> {large[0] / MiB:.0f} MiB, "
          f"consumer {small[1] / MiB:.0f} -> {large[1] / MiB:.0f} MiB")
    for role, before, after in zip(("producer", "consumer"), small, large, strict=True):
        assert after - before < GROWTH_LIMIT, f"{role} grew by {(after - before) / MiB:.0f} MiB"
