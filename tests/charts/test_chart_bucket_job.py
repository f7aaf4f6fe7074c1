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
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

from claimcheck.localstack.accounts import ADMIN_S3
from claimcheck.localstack.ports import HOST, LOCAL

from .conftest import INFRA, one, render

STANDIN = Path(__file__).with_name("mc_standin.py")
LOCAL_S3 = (HOST, LOCAL.s3)
LOCAL_S3_KEYS = (ADMIN_S3.user, ADMIN_S3.password)


def bucket_job() -> dict[str, Any]:
    job = one(render(INFRA), "Job", "claimcheck-infra-minio-bucket")
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


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
        state: dict[str, Any] = json.loads((self.root / "state.json").read_text())
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        (self.root / "state.json").write_text(json.dumps(state))


SECRETS = {"ROOT_USER": "root-user", "ROOT_PASSWORD": "root-password-0123456789",
           "PRODUCER_ACCESS_KEY": "claimcheck-producer", "PRODUCER_SECRET_KEY": "producer-secret-0123456789",
           "CONSUMER_ACCESS_KEY": "claimcheck-consumer", "CONSUMER_SECRET_KEY": "consumer-secret-0123456789",
           "COORDINATOR_ACCESS_KEY": "claimcheck-coordinator", "COORDINATOR_SECRET_KEY": "coordinator-secret-0123456789"}
ROLE_POLICY = {"claimcheck-producer": "claimcheck-producer", "claimcheck-consumer": "claimcheck-consumer",
               "claimcheck-coordinator": "claimcheck-coordinator"}
# What each role may do on the bucket, and nothing else (issue 12).
ALLOWED = {
    "claimcheck-producer": {"s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"},
    "claimcheck-consumer": {"s3:GetObject"},
    "claimcheck-coordinator": {"s3:GetObject", "s3:DeleteObject", "s3:ListBucket"},
}
EVERY_ACTION = {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts", "s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy",
                "s3:GetBucketPolicy", "s3:PutObjectTagging", "s3:ListAllMyBuckets"}


def attaches(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if "attach" in c]


def permitted(policy: dict[str, Any], action: str, resource: str) -> bool:
    """IAM evaluation for the policies the Job writes: an Allow statement naming the action
    (or a matching wildcard) on the resource (or a matching wildcard); no Deny is used."""
    def matches(pattern: str, value: str) -> bool:
        return pattern == value or (pattern.endswith("*") and value.startswith(pattern[:-1]))

    return any(st["Effect"] == "Allow" and any(matches(a, action) for a in st["Action"])
               and any(matches(r, resource) for r in st["Resource"]) for st in policy["Statement"])


def resource_of(action: str, bucket: str = "claimcheck") -> str:
    bucket_level = {"s3:ListBucket", "s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy", "s3:GetBucketPolicy"}
    if action == "s3:ListAllMyBuckets":
        return "arn:aws:s3:::*"
    return f"arn:aws:s3:::{bucket}" if action in bucket_level else f"arn:aws:s3:::{bucket}/some/object"


def test_first_run_creates_the_bucket_and_one_user_per_role(tmp_path: Path) -> None:
    mc = Mc(tmp_path)
    result = mc.run_script(SECRETS)
    assert result.returncode == 0, result.stderr
    state = mc.state()
    assert state["buckets"] == ["claimcheck"]
    assert set(state["users"]) == set(ROLE_POLICY)
    for user, policy in ROLE_POLICY.items():
        assert state["users"][user]["policies"] == [policy], user
    assert state["users"]["claimcheck-consumer"]["secret_key"] == "consumer-secret-0123456789"
    assert len(attaches(mc.calls())) == 3
    assert all(c[:2] == ["--config-dir", "/tmp/mc"] for c in mc.calls())
    assert "bucket claimcheck ready for claimcheck-producer (put)" in result.stdout


def test_each_role_may_do_exactly_its_part_on_the_bucket_only(tmp_path: Path) -> None:
    """The policy documents, evaluated: producers only put (and abort multipart uploads),
    consumers only get, only the coordinator deletes and lists; nobody touches another bucket
    or the bucket's own settings."""
    mc = Mc(tmp_path)
    assert mc.run_script(SECRETS).returncode == 0
    state = mc.state()
    for user, allowed in ALLOWED.items():
        (policy_name,) = state["users"][user]["policies"]
        policy = state["policies"][policy_name]
        granted = {a for a in EVERY_ACTION if permitted(policy, a, resource_of(a))}
        assert granted == allowed, f"{user}: {sorted(granted)}"
        assert not any(permitted(policy, a, resource_of(a, "other-bucket")) for a in EVERY_ACTION), user
    assert not permitted(state["policies"]["claimcheck-consumer"], "s3:DeleteObject", "arn:aws:s3:::claimcheck/x")
    assert not permitted(state["policies"]["claimcheck-producer"], "s3:GetObject", "arn:aws:s3:::claimcheck/x")


def test_permitted_is_not_vacuous() -> None:
    everything = {"Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::claimcheck/*"]}]}
    assert permitted(everything, "s3:DeleteObject", "arn:aws:s3:::claimcheck/x")
    assert not permitted(everything, "s3:DeleteObject", "arn:aws:s3:::other/x")


def test_second_run_is_idempotent_and_attaches_nothing(tmp_path: Path) -> None:
    """The old script's `mc ... | grep` failed in the mc image (no grep), so its `if` was always
    true on upgrade; now the second run sees each policy attached and leaves it."""
    mc = Mc(tmp_path)
    assert mc.run_script(SECRETS).returncode == 0
    first_state, first_calls = mc.state(), len(mc.calls())
    second = mc.run_script(SECRETS)
    assert second.returncode == 0, second.stderr
    assert mc.state() == first_state
    assert attaches(mc.calls()[first_calls:]) == []
    for user, policy in ROLE_POLICY.items():
        assert f"policy {policy} already attached to {user}" in second.stdout


@pytest.mark.parametrize("existing", [["readonly"], ["claimcheck-consumer-old"], ["old-claimcheck-consumer", "readwrite"]])
def test_a_role_user_with_other_policies_gets_exactly_its_own(tmp_path: Path, existing: list[str]) -> None:
    """The name must match a whole item of policyName, not a part of another policy's name;
    any other policy is detached, so a role user never keeps wider rights."""
    mc = Mc(tmp_path)
    mc.set_state({"aliases": {}, "buckets": ["claimcheck"], "policies": {p: {} for p in existing},
                  "users": {"claimcheck-consumer": {"policies": list(existing), "secret_key": "old"}}})
    result = mc.run_script(SECRETS)
    assert result.returncode == 0, result.stderr
    assert mc.state()["users"]["claimcheck-consumer"]["policies"] == ["claimcheck-consumer"]
    detached = [c for c in mc.calls() if "detach" in c]
    assert sorted(c[c.index("detach") + 2] for c in detached) == sorted(existing)


@pytest.mark.parametrize("existing", [["claimcheck-coordinator"], ["readwrite", "claimcheck-coordinator"],
                                      ["a", "claimcheck-coordinator", "b"]])
def test_the_policy_found_anywhere_in_the_list_is_not_attached_again(tmp_path: Path, existing: list[str]) -> None:
    mc = Mc(tmp_path)
    mc.set_state({"aliases": {}, "buckets": [], "policies": {p: {} for p in existing},
                  "users": {"claimcheck-coordinator": {"policies": list(existing), "secret_key": "old"}}})
    assert mc.run_script(SECRETS).returncode == 0
    assert [c for c in attaches(mc.calls()) if "claimcheck-coordinator" in c] == []
    assert mc.state()["users"]["claimcheck-coordinator"]["policies"] == ["claimcheck-coordinator"]


def test_the_full_rights_user_of_earlier_versions_is_removed(tmp_path: Path) -> None:
    """Upgrading from the chart that had one application user with s3:* on the bucket."""
    mc = Mc(tmp_path)
    mc.set_state({"aliases": {}, "buckets": ["claimcheck"], "policies": {"claimcheck-rw": {}},
                  "users": {"claimcheck": {"policies": ["claimcheck-rw"], "secret_key": "old"}}})
    first = mc.run_script(SECRETS)
    assert first.returncode == 0, first.stderr
    assert "claimcheck" not in mc.state()["users"]
    again = mc.run_script(SECRETS)  # nothing left to remove: no error, no remove call
    assert again.returncode == 0, again.stderr
    assert sum(1 for c in mc.calls() if c[2:5] == ["admin", "user", "remove"]) == 1


def test_a_role_user_is_never_removed_as_an_old_user(tmp_path: Path) -> None:
    mc = Mc(tmp_path)
    result = mc.run_script({**SECRETS, "REMOVE_USERS": "claimcheck claimcheck-consumer"})
    assert result.returncode == 0, result.stderr
    assert "claimcheck-consumer" in mc.state()["users"]


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
    """The bucket steps against a real S3 server: SeaweedFS of `make up`."""
    if not _local_s3_up():
        pytest.skip(f"the local S3 server (SeaweedFS, `make up`) is not running on {HOST}:{LOCAL.s3}")
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


def _exists(s3: S3Client, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError:  # 404: the script failed before creating it
        return False
