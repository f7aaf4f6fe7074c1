"""``claimcheck demo``: the whole data path once, on whatever stack the settings point at.

Starts a coordinator (unless one already answers), two replicas of recipient ``billing`` and
one of ``audit``, then a producer in verify mode; every child is a real process running the
same CLI a user runs. Prints what each did and returns the machine-readable summary.
"""

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from claimcheck import store
from claimcheck.childprocess import ChildProcess
from claimcheck.config import Settings
from claimcheck.coordinator_client import fetch_progress, wait_for
from claimcheck.localstack import accounts
from claimcheck.producer import new_job_id
from claimcheck.provisioning import parse_users, provision
from claimcheck.sizes import format_size

RECIPIENTS = {"billing": 2, "audit": 1}


def _start(name: str, args: list[str], log_dir: Path, role_env: dict[str, str]) -> ChildProcess:
    """``claimcheck ARGS`` as ``name``: its log in ``<name>.log``, its JSON summary (stdout) in ``<name>.out``."""
    return ChildProcess(name, [sys.executable, "-m", "claimcheck", *args], log_dir / f"{name}.log",
                        env=os.environ | role_env, stdout_path=log_dir / f"{name}.out")


def _summary(child: ChildProcess) -> dict[str, Any]:
    """The JSON document the command printed last on stdout."""
    assert child.stdout_path is not None
    lines = [line for line in child.stdout_path.read_text().splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1])) if lines else {}


def _roles(settings: Settings) -> Callable[..., dict[str, str]]:
    """On the local stack every component runs as its own role (provisioned here, as an admin);
    elsewhere the environment says who each one is."""
    if not settings.broker_is_local():
        return lambda *role: {}
    users = parse_users(accounts.broker_users(list(RECIPIENTS)))
    provision(settings.amqp_url, settings.management_url, list(RECIPIENTS), users, settings.confirm_timeout,
              settings.coordinator_shards)
    return accounts.role_env


def _say(text: str) -> None:
    click.echo(f"  {text}")


def run_demo(settings: Settings, count: int, size: int, timeout: float) -> dict[str, Any]:
    """Run the demo and return its summary (published, verified, acked, deleted, leftover_objects)."""
    job = new_job_id()
    log_dir = Path(os.environ.get("CLAIMCHECK_STACK_DIR", ".stack")) / "logs" / "demo" / job
    log_dir.mkdir(parents=True, exist_ok=True)
    groups = ", ".join(f"{name} ({replicas} replica{'s' if replicas > 1 else ''})" for name, replicas in RECIPIENTS.items())
    click.echo(f"claimcheck demo, job {job}: {count} x {format_size(size)} payloads for {groups}")

    children: list[ChildProcess] = []
    role_env = _roles(settings)
    try:
        if fetch_progress(settings.coordinator_url, job) is None:
            coordinator = _start("coordinator", ["coordinator"], log_dir, role_env("coordinator"))
            children.append(coordinator)
            ready = wait_for(settings.coordinator_url, job, lambda _: True, timeout=30)
            if ready is None:
                raise click.ClickException(f"coordinator did not come up; see {coordinator.log_path}")
            _say(f"started coordinator (pid {coordinator.pid}) at {settings.coordinator_url}")
        else:
            _say(f"using the coordinator already running at {settings.coordinator_url}")

        consumers = [
            _start(f"consumer-{name}-{index}", ["consumer", "--recipient", name, "--job", job, "--expect", str(count)],
                   log_dir, role_env("recipient", name))
            for name, replicas in RECIPIENTS.items()
            for index in range(1, replicas + 1)
        ]
        children += consumers
        _say("started " + ", ".join(f"{child.name} (pid {child.pid})" for child in consumers))

        producer = _start(
            "producer",
            ["producer", "--job", job, "--count", str(count), "--size", str(size),
             "--recipients", ",".join(RECIPIENTS), "--verify", "--timeout", str(timeout)],
            log_dir, role_env("producer"),
        )
        children.append(producer)
        producer.wait(timeout + 60)
        produced = _summary(producer)
        _say(f"producer: published {produced.get('published', 0)} pointers, "
             f"{format_size(produced.get('payload_bytes', 0))} of payload stored as "
             f"{format_size(produced.get('object_bytes', 0))} gzip")

        verified = 0
        for child in consumers:
            child.wait(60)
            stats = _summary(child)
            verified += stats.get("verified_by_job", {}).get(job, 0)
            _say(f"{child.name}: verified {stats.get('verified', 0)}, acked {stats.get('acked', 0)}, "
                 f"dead-lettered {stats.get('dead_lettered', 0)}")

        progress = fetch_progress(settings.coordinator_url, job) or {}
        acked = progress.get("acked", {})
        _say(f"ledger: published {progress.get('published', 0)}, acked "
             + ", ".join(f"{name}={n}" for name, n in acked.items())
             + f", deleted {progress.get('deleted', 0)}, pending {progress.get('pending', 0)}")
        leftovers = len(store.list_keys(store.client(settings), settings.s3_bucket, f"{job}/"))
        _say(f"s3: {leftovers} objects left under {job}/")
        _say(f"logs: {log_dir}")
        return {
            "job": job,
            "published": produced.get("published", 0),
            "verified": verified,
            "acked": sum(acked.values()),
            "deleted": progress.get("deleted", 0),
            "leftover_objects": leftovers,
        }
    finally:
        for child in reversed(children):
            child.stop(timeout=15)
