"""100 MiB payloads through the library with flat memory, from a file and from a generator, each received
byte-identical by two recipient groups and then deleted. Peak RSS of each process (ru_maxrss of the
sender and of each receiver) with 100 MiB stays within a few S3 parts of its peak with 1 MiB."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from claimcheck import Settings, wait_until_deleted
from tests.integration.integration_helpers import peak_rss, rss_measured, unique

MiB = 1024 * 1024
# A 100 MiB file of random bytes does not compress: the sender's peak grew by 37 MiB once measured
# apart from pytest's (8 MiB read to choose between one PUT and a multipart upload, up to three
# 5 MiB parts read ahead, two in flight, the allocator's slack); holding the payload whole is 100.
GROWTH_LIMIT = 48 * MiB
ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str], env: dict[str, str], report: Path) -> tuple[subprocess.Popen[bytes], Path]:
    command = rss_measured([sys.executable, "-m", "tests.integration.library_probe", *args], report)
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL), report


def _finish(started: tuple[subprocess.Popen[bytes], Path]) -> tuple[int, list[dict[str, Any]]]:
    """Wait for the process; its own peak RSS in bytes and the JSON lines it printed."""
    process, report = started
    assert process.stdout is not None
    out = process.stdout.read().decode()
    assert process.wait() == 0, out
    return peak_rss(report), [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _round_trip(source: str, groups: list[str], env: dict[str, str], settings: Settings, reports: Path) -> list[int]:
    """Send one payload to both groups; check each got it byte-identical and it was deleted; peak RSS per process."""
    job = unique("libmem")
    receivers = [_start(["receive", group, "1"], env, reports / f"{job}-{group}.json") for group in groups]
    sender_rss, (sent,) = _finish(_start(["send", source, job, ",".join(groups)], env, reports / f"{job}-sender.json"))
    pointer = sent["pointer"]
    expected = sent["generated_sha256"] if source.startswith("gen:") else pointer["payload_sha256"]
    assert pointer["payload_sha256"] == expected
    peaks = [sender_rss]
    for receiver in receivers:
        rss, (got,) = _finish(receiver)
        assert got == {"object_id": pointer["object_id"], "sha256": expected, "size": pointer["payload_size"]}
        peaks.append(rss)
    report = wait_until_deleted(job, 1, 120, settings=settings)
    assert report.leftover_objects == 0
    return peaks


def test_100_mib_from_a_file_and_from_a_generator_with_flat_memory(
    settings: Settings, coordinator_url: str, recipients: Callable[..., list[str]], tmp_path: Path,
) -> None:
    groups = recipients("libmem-a", "libmem-b")
    env = {**os.environ, "CLAIMCHECK_COORDINATOR_URL": coordinator_url}
    library = settings.model_copy(update={"coordinator_url": coordinator_url})
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(MiB))
    with large.open("wb") as file:
        for _ in range(100):
            file.write(os.urandom(MiB))

    baseline = _round_trip(str(small), groups, env, library, tmp_path)
    from_file = _round_trip(str(large), groups, env, library, tmp_path)
    from_generator = _round_trip(f"gen:{100 * MiB}", groups, env, library, tmp_path)

    roles = ("sender", f"receiver {groups[0]}", f"receiver {groups[1]}")
    print("peak RSS MiB, 1 MiB file / 100 MiB file / 100 MiB generator: " + "; ".join(
        f"{role} {a / MiB:.0f} / {b / MiB:.0f} / {c / MiB:.0f}"
        for role, a, b, c in zip(roles, baseline, from_file, from_generator, strict=True)))
    for role, before, file_peak, generator_peak in zip(roles, baseline, from_file, from_generator, strict=True):
        assert file_peak - before < GROWTH_LIMIT, f"{role} grew by {(file_peak - before) / MiB:.0f} MiB (file)"
        assert generator_peak - before < GROWTH_LIMIT, f"{role} grew by {(generator_peak - before) / MiB:.0f} MiB (generator)"
