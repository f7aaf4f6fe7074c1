"""The MinIO bucket Job's script, run here with /bin/sh and nothing but `mc` on PATH.

The real `mc` binary cannot be installed from the registries this project reaches, so the
script runs against tests/charts/mc_standin.py, which records each call and answers as the
pinned mc release does. PATH holds only the stand-in: a grep, sed or any other tool the
mc image (ubi-micro) lacks would make the script fail here, as it would in the cluster.
One test creates the bucket on the local S3 server (SeaweedFS of `make up`) for real.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import INFRA, one, render

STANDIN = Path(__file__).with_name("mc_standin.py")
LOCAL_S3 = ("127.0.0.1", 38333)
LOCAL_S3_KEYS = ("claimcheck", "claimcheck-secret")


def bucket_job() -> dict[str, Any]:
    return one(render(INFRA), "Job", "claimcheck-infra-minio-bucket")["spec"]["template"]["spec"]["containers"][0]


class Mc:
    """A directory holding the stand-in as `mc` (the only command on PATH), its state and log."""

    def __init__(self, root: Path, real_s3: bool = False) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "mc"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
        wrapper.chmod(0o755)
        self.real_s3 = real_s3

    def run_script(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        container = bucket_job()
        command = container["command"]
        assert command[:2] == ["/bin/sh", "-ec"], command
        base = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        full = {**base, **env, "PATH": str(self.bin), "MC_STANDIN_DIR": str(self.root),
                "MC_STANDIN_REAL_S3": "1" if self.real_s3 else "0"}
        if "PYTHONPATH" in os.environ:
            full["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return subprocess.run(command, env=full, capture_output=True, text=True, timeout=120)

    def calls(self) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / "state.json").read_text())

    def set_state(self, state: dict[str, Any]) -> None:
        (self.root / "state.json").write_text(json.dumps(state))


SECRETS = {"ROOT_USER": "root-user", "ROOT_PASSWORD": "root-password-0123456789",
           "APP_ACCESS_KEY": "claimcheck", "APP_SECRET_KEY": "app-secret-0123456789"}


def attaches(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if "attach" in c]


def test_first_run_creates_bucket_policy_and_user(tmp_path: Path) -> None:
    mc = Mc(tmp_path)
    result = mc.run_script(SECRETS)
    assert result.returncode == 0, result.stderr
    state = mc.state()
    assert state["buckets"] == ["claimcheck"]
    statement = state["policies"]["claimcheck-rw"]["Statement"][0]
    assert statement["Resource"] == ["arn:aws:s3:::claimcheck", "arn:aws:s3:::claimcheck/*"]
    assert state["users"]["claimcheck"] == {"policies": ["claimcheck-rw"], "secret_key": "app-secret-0123456789"}
    assert len(attaches(mc.calls())) == 1
    assert all(c[:2] == ["--config-dir", "/tmp/mc"] for c in mc.calls())
    assert "bucket claimcheck ready for claimcheck" in result.stdout


def test_second_run_is_idempotent_and_attaches_nothing(tmp_path: Path) -> None:
    """The old script's `mc ... | grep` failed in the mc image (no grep), so its `if` was always
    true on upgrade; now the second run sees the policy attached and leaves it."""
    mc = Mc(tmp_path)
    assert mc.run_script(SECRETS).returncode == 0
    first_state, first_calls = mc.state(), len(mc.calls())
    second = mc.run_script(SECRETS)
    assert second.returncode == 0, second.stderr
    assert mc.state() == first_state
    assert attaches(mc.calls()[first_calls:]) == []
    assert "policy claimcheck-rw already attached to claimcheck" in second.stdout


@pytest.mark.parametrize("existing", [["readonly"], ["claimcheck-rw-old"], ["old-claimcheck-rw", "readonly"]])
def test_a_user_with_other_policies_gets_ours(tmp_path: Path, existing: list[str]) -> None:
    """The name must match a whole item of policyName, not a part of another policy's name."""
    mc = Mc(tmp_path)
    mc.set_state({"aliases": {}, "buckets": ["claimcheck"], "policies": {p: {} for p in existing},
                  "users": {"claimcheck": {"policies": list(existing), "secret_key": "old"}}})
    result = mc.run_script(SECRETS)
    assert result.returncode == 0, result.stderr
    assert len(attaches(mc.calls())) == 1
    assert mc.state()["users"]["claimcheck"]["policies"] == [*existing, "claimcheck-rw"]


@pytest.mark.parametrize("existing", [["claimcheck-rw", "readonly"], ["readonly", "claimcheck-rw"],
                                      ["a", "claimcheck-rw", "b"]])
def test_the_policy_found_anywhere_in_the_list_is_not_attached_again(tmp_path: Path, existing: list[str]) -> None:
    mc = Mc(tmp_path)
    mc.set_state({"aliases": {}, "buckets": [], "policies": {p: {} for p in existing},
                  "users": {"claimcheck": {"policies": list(existing), "secret_key": "old"}}})
    assert mc.run_script(SECRETS).returncode == 0
    assert attaches(mc.calls()) == []


def test_a_failing_mc_step_fails_the_job(tmp_path: Path) -> None:
    """`sh -e`: an error (here: the S3 server never ready) ends the script non-zero."""
    mc = Mc(tmp_path)
    (mc.bin / "mc").write_text('#!/bin/sh\ncase "$3" in ready) exit 1;; esac\nexit 0\n')
    result = mc.run_script(SECRETS)
    assert result.returncode != 0


def _local_s3_up() -> bool:
    try:
        with socket.create_connection(LOCAL_S3, timeout=2):
            return True
    except OSError:
        return False


def test_bucket_is_created_once_on_the_local_s3_server(tmp_path: Path) -> None:
    """The bucket steps against a real S3 server: SeaweedFS of `make up` on 127.0.0.1:38333."""
    if not _local_s3_up():
        pytest.skip("the local S3 server (SeaweedFS, `make up`) is not running on 127.0.0.1:38333")
    import boto3
    from botocore.config import Config

    bucket = f"bucket-job-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=f"http://{LOCAL_S3[0]}:{LOCAL_S3[1]}", aws_access_key_id=LOCAL_S3_KEYS[0],
                      aws_secret_access_key=LOCAL_S3_KEYS[1], region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    mc = Mc(tmp_path, real_s3=True)
    env = {**SECRETS, "S3_ENDPOINT": f"http://{LOCAL_S3[0]}:{LOCAL_S3[1]}", "BUCKET": bucket,
           "ROOT_USER": LOCAL_S3_KEYS[0], "ROOT_PASSWORD": LOCAL_S3_KEYS[1]}
    try:
        first = mc.run_script(env)
        assert first.returncode == 0, first.stderr
        s3.head_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="kept", Body=b"x")
        second = mc.run_script(env)  # an upgrade: the bucket exists, its objects stay
        assert second.returncode == 0, second.stderr
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["kept"]
        assert sum(1 for c in mc.calls() if "mb" in c) == 2
    finally:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if _exists(s3, bucket) else []:
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        if _exists(s3, bucket):
            s3.delete_bucket(Bucket=bucket)


def _exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except Exception:
        return False
