"""A stand-in for the MinIO client `mc`, for running the bucket Job's script here.

No registry this project reaches ships the real `mc` binary (PyPI's `minio-client` is a
3 KB wrapper, Debian has none), so this records every call and answers as the pinned mc
(RELEASE.2025-08-13T08-35-41Z) does, read from its source:
- `admin user info --json` prints the userMessage struct with json.MarshalIndent(u, "", " ");
  policyName is a comma-separated string;
- `admin policy attach` of a policy already attached succeeds (XMinioAdminPolicyChangeAlreadyApplied),
  `admin user remove` of an unknown user fails; `admin policy detach` of a policy not attached
  fails here (the script detaches only what `admin user info` listed);
- `admin policy create` overwrites, `admin user add` updates the secret and keeps policies;
- `mb` fails on an existing bucket unless --ignore-existing.
Buckets are simulated in the state file, or, with MC_STANDIN_REAL_S3=1, created on the S3
server the alias points at (boto3), so the bucket part runs against a real server.

State and the call log live in MC_STANDIN_DIR (state.json, calls.jsonl).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

DIR = Path(os.environ["MC_STANDIN_DIR"])
STATE = DIR / "state.json"


def load() -> dict[str, Any]:
    if STATE.exists():
        state: dict[str, Any] = json.loads(STATE.read_text())
        return state
    return {"aliases": {}, "buckets": [], "policies": {}, "users": {}}


def fail(message: str, code: int = 1) -> int:
    print(f"mc: <ERROR> {message}", file=sys.stderr)
    return code


def s3_client(alias: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=alias["url"], aws_access_key_id=alias["access_key"],
                        aws_secret_access_key=alias["secret_key"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))


def main(argv: list[str]) -> int:
    with (DIR / "calls.jsonl").open("a") as log:
        log.write(json.dumps(argv) + "\n")
    args = list(argv)
    if args[:1] == ["--config-dir"]:
        args = args[2:]
    flags = {a for a in args if a.startswith("--")}
    words = [a for a in args if not a.startswith("--")]
    if "--region" in args:
        words.remove(args[args.index("--region") + 1])
    if "--user" in args:
        words.remove(args[args.index("--user") + 1])
    state = load()
    real = os.environ.get("MC_STANDIN_REAL_S3") == "1"
    code = 0
    match words:
        case ["alias", "set", name, url, access_key, secret_key]:
            state["aliases"][name] = {"url": url, "access_key": access_key, "secret_key": secret_key}
        case ["ready", name]:
            if name not in state["aliases"]:
                return fail(f"unknown alias {name}")
            if real:
                s3_client(state["aliases"][name]).list_buckets()
            print(f"The cluster '{name}' is ready")
        case ["mb", target]:
            alias, _, bucket = target.partition("/")
            if alias not in state["aliases"]:
                return fail(f"unknown alias {alias}")
            if real:
                client = s3_client(state["aliases"][alias])
                exists = bucket in {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            else:
                exists = bucket in state["buckets"]
            if exists and "--ignore-existing" not in flags:
                return fail(f"Unable to make bucket `{target}`. Your previous request to create the named bucket succeeded")
            if not exists:
                if real:
                    client.create_bucket(Bucket=bucket)
                else:
                    state["buckets"].append(bucket)
            print(f"Bucket created successfully `{target}`.")
        case ["admin", "policy", "create", _alias, policy, path]:
            document = json.loads(Path(path).read_text())  # a broken JSON document is an error, as in mc
            state["policies"][policy] = document
            print(f"Created policy `{policy}` successfully.")
        case ["admin", "user", "add", _alias, access_key, secret_key]:
            user = state["users"].setdefault(access_key, {"policies": []})
            user["secret_key"] = secret_key
            print(f"Added user `{access_key}` successfully.")
        case ["admin", "user", "info", _alias, access_key]:
            if access_key not in state["users"]:
                return fail(f"Cannot get user info: The specified user does not exist ({access_key})")
            user = state["users"][access_key]
            message: dict[str, Any] = {"status": "success", "accessKey": access_key}
            if user["policies"]:
                message["policyName"] = ",".join(user["policies"])
            message["userStatus"] = "enabled"
            print(json.dumps(message, indent=1) if "--json" in flags else f"AccessKey: {access_key}")
        case ["admin", "policy", "attach", _alias, policy]:
            access_key = args[args.index("--user") + 1]
            if policy not in state["policies"]:
                return fail(f"Unable to make user/group policy association: policy {policy} does not exist")
            if access_key not in state["users"]:
                return fail(f"Unable to make user/group policy association: user {access_key} does not exist")
            if policy not in state["users"][access_key]["policies"]:
                state["users"][access_key]["policies"].append(policy)
            print(f"Attached Policies: [{policy}]\nTo User: {access_key}")
        case ["admin", "policy", "detach", _alias, policy]:
            access_key = args[args.index("--user") + 1]
            if access_key not in state["users"]:
                return fail(f"Unable to make user/group policy association: user {access_key} does not exist")
            if policy not in state["users"][access_key]["policies"]:
                # Stricter than needed: the script only detaches what `user info` listed.
                return fail(f"Unable to detach policy {policy}: not attached to {access_key}")
            state["users"][access_key]["policies"].remove(policy)
            print(f"Detached Policies: [{policy}]\nFrom User: {access_key}")
        case ["admin", "user", "remove", _alias, access_key]:
            if access_key not in state["users"]:
                return fail(f"Unable to remove user {access_key}: The specified user does not exist")
            del state["users"][access_key]
            print(f"Removed user `{access_key}` successfully.")
        case _:
            return fail(f"the stand-in does not know `mc {' '.join(argv)}`", 2)
    STATE.write_text(json.dumps(state))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
