"""`claimcheck send` (a file, standard input, a directory) and `claimcheck receive` against the real stack."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.integration.integration_helpers import unique


def claimcheck(args: list[str], env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "claimcheck", *args], input=stdin, capture_output=True, env=env,
                          timeout=300, check=False)


def test_send_stdin_a_file_and_a_directory_then_receive_each_byte_identical_with_metadata(
    coordinator_url: str, recipients: Callable[..., list[str]], tmp_path: Path,
) -> None:
    groups = recipients("cli-a", "cli-b")
    env = {**os.environ, "CLAIMCHECK_COORDINATOR_URL": coordinator_url, "CLAIMCHECK_LOG_LEVEL": "WARNING"}
    job = unique("cli")
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    originals = {"small.txt": b"hello\n", "large.bin": os.urandom(3 * 1024 * 1024), "empty": b""}
    for name, data in originals.items():
        (outbox / name).write_bytes(data)
    piped = os.urandom(200_000)

    sent_stdin = claimcheck(["send", "-", "--recipients", ",".join(groups), "--job", job, "--meta", "source=pipe"],
                            env, stdin=piped)
    assert sent_stdin.returncode == 0, sent_stdin.stderr.decode()
    stdin_id = sent_stdin.stdout.decode().strip()
    sent_dir = claimcheck(["send", str(outbox), "--recipients", ",".join(groups), "--job", job], env)
    assert sent_dir.returncode == 0, sent_dir.stderr.decode()
    ids = {path: object_id for object_id, path in (line.split("\t") for line in sent_dir.stdout.decode().splitlines())}
    expected = {stdin_id: (piped, {"source": "pipe"})}
    expected |= {ids[str(outbox / name)]: (data, {"filename": name}) for name, data in originals.items()}

    refused = claimcheck(["send", str(outbox / "small.txt"), "--recipients", groups[0], "--meta", "Bad=1"], env)
    assert refused.returncode == 2 and refused.stderr.decode().startswith("claimcheck: error: invalid metadata")

    receivers = [subprocess.Popen([sys.executable, "-m", "claimcheck", "receive", "--recipient", group, "--output",
                                   str(tmp_path / group), "--job", job, "--expect", str(len(expected))],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for group in groups]
    for receiver in receivers:
        out, err = receiver.communicate(timeout=300)
        assert receiver.returncode == 0, err.decode()
        assert json.loads(out.decode().splitlines()[-1])["acked"] == len(expected)
    for group in groups:
        inbox = tmp_path / group
        assert sorted(path.name for path in inbox.iterdir()) == sorted([*expected, *(f"{i}.json" for i in expected)])
        for object_id, (data, metadata) in expected.items():
            assert (inbox / object_id).read_bytes() == data
            written = json.loads((inbox / f"{object_id}.json").read_text())
            assert written["metadata"] == metadata and written["job"] == job and written["size"] == len(data)
            assert written["inline"] == (len(data) <= 64 * 1024)
