"""``claimcheck demo``: the whole data path once, on whatever stack the settings point at.

Starts a coordinator (unless one already answers), two replicas of recipient ``billing`` and
one of ``audit``, then a producer in verify mode; every child is a real process running the
same CLI a user runs. Prints what each did and returns the machine-readable summary.
"""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from claimcheck import localstack, store
from claimcheck.config import Settings
from claimcheck.coordinator_client import fetch_progress, wait_for
from claimcheck.producer import new_job_id
from claimcheck.provisioning import parse_users, provision
from claimcheck.sizes import format_size

RECIPIENTS = {"billing": 2, "audit": 1}


@dataclass
class Child:
    """A CLI subprocess of the demo, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def last_json(self) -> dict[str, Any]:
        """The JSON document the command printed last on stdout."""
        out = self.process.stdout.read().decode() if self.process.stdout else ""
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}


def _start(name: str, args: list[str], log_dir: Path, role_env: dict[str, str]) -> Child:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "claimcheck", *args], stdout=subprocess.PIPE, stderr=log, env=os.environ | role_env
    )
    return Child(name, process, log_path, log)


def _roles(settings: Settings) -> Callable[..., dict[str, str]]:
    """On the local stack every component runs as its own role (provisioned here, as an admin);
    elsewhere the environment says who each one is."""
    if not settings.broker_is_local():
        return lambda *role: {}
    users = parse_users(localstack.broker_users(list(RECIPIENTS)))
    provision(settings.amqp_url, settings.management_url, list(RECIPIENTS), users, settings.confirm_timeout)
    return localstack.role_env


def _say(text: str) -> None:
    click.echo(f"  {text}")


def run_demo(settings: Settings, count: int, size: int, timeout: float) -> dict[str, Any]:
    """Run the demo and return its summary (published, verified, acked, deleted, leftover_objects)."""
    job = new_job_id()
    log_dir = Path(os.environ.get("CLAIMCHECK_STACK_DIR", ".stack")) / "logs" / "demo" / job
    log_dir.mkdir(parents=True, exist_ok=True)
    groups = ", ".join(f"{name} ({replicas} replica{'s' if replicas > 1 else ''})" for name, replicas in RECIPIENTS.items())
    click.echo(f"claimcheck demo, job {job}: {count} x {format_size(size)} payloads for {groups}")

    children: list[Child] = []
    role_env = _roles(settings)
    try:
        if fetch_progress(settings.coordinator_url, job) is None:
            coordinator = _start("coordinator", ["coordinator"], log_dir, role_env("coordinator"))
            children.append(coordinator)
            ready = wait_for(settings.coordinator_url, job, lambda _: True, timeout=30)
            if ready is None:
                raise click.ClickException(f"coordinator did not come up; see {coordinator.log_path}")
            _say(f"started coordinator (pid {coordinator.process.pid}) at {settings.coordinator_url}")
        else:
            _say(f"using the coordinator already running at {settings.coordinator_url}")

        consumers = [
            _start(f"consumer-{name}-{index}", ["consumer", "--recipient", name, "--job", job, "--expect", str(count)],
                   log_dir, role_env("recipient", name))
            for name, replicas in RECIPIENTS.items()
            for index in range(1, replicas + 1)
        ]
        children += consumers
        _say("started " + ", ".join(f"{child.name} (pid {child.process.pid})" for child in consumers))

        producer = _start(
            "producer",
            ["producer", "--job", job, "--count", str(count), "--size", str(size),
             "--recipients", ",".join(RECIPIENTS), "--verify", "--timeout", str(timeout)],
            log_dir, role_env("producer"),
        )
        children.append(producer)
        producer.process.wait(timeout=timeout + 60)
        produced = producer.last_json()
        _say(f"producer: published {produced.get('published', 0)} pointers, "
             f"{format_size(produced.get('payload_bytes', 0))} of payload stored as "
             f"{format_size(produced.get('object_bytes', 0))} gzip")

        verified = 0
        for child in consumers:
            child.process.wait(timeout=60)
            stats = child.last_json()
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
            if child.process.poll() is None:
                child.process.terminate()
                try:
                    child.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.process.kill()
            child.log.close()
