"""The benchmark's own corner of the local stack, and the probes it reads the broker with.

A run gets a RabbitMQ vhost, PostgreSQL databases and an S3 bucket named after its run id;
everything it starts is a child process it stops by pid. ``BenchEnv.cleanup`` deletes the
vhosts (and so every queue in them), drops the databases and empties and deletes the bucket.
"""

import base64
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from claimcheck.childprocess import ChildProcess, Exit
from claimcheck.config import Settings
from claimcheck.localstack.daemons import StackError, pids_named, port_open
from claimcheck.localstack.ports import HOST, LOCAL, NODES
from claimcheck.localstack.services import LocalStack
from claimcheck.provisioning import provision

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

LOCAL_STACK = LocalStack.from_env()
MGMT_URL = os.environ.get("BENCH_RABBIT_MGMT_URL", f"http://{HOST}:{LOCAL.management}")
MGMT_AUTH = ("guest", "guest")
PROMETHEUS_PORTS = tuple(LOCAL.node_metrics(n) for n in NODES)
AMQP_BASE = f"amqp://guest:guest@{HOST}:{LOCAL.amqp}"
ADMIN_DSN = Settings().database_url


# -- RabbitMQ management API and per-node probes ----------------------------------------------


def mgmt(method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    """One management API call; returns the decoded JSON (None for an empty answer)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(MGMT_URL + path, data=data, method=method)
    token = base64.b64encode(f"{MGMT_AUTH[0]}:{MGMT_AUTH[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def queue_counters(vhost: str, settle_seconds: float = 3.0, timeout: float = 30.0) -> tuple[int, int]:
    """``(enqueues, settlements)`` the broker counted over every queue of ``vhost`` so far.

    From the management API's per-queue ``message_stats`` (``publish``: messages enqueued into
    the queue; ``ack``: deliveries settled by acknowledgement), which the broker refreshes every
    few seconds: read until two reads ``settle_seconds`` apart agree.
    """
    def read() -> tuple[int, int]:
        queues = mgmt("GET", f"/api/queues/{quote(vhost)}?columns=name,message_stats") or []
        stats = [queue.get("message_stats") or {} for queue in queues]
        return sum(int(s.get("publish", 0)) for s in stats), sum(int(s.get("ack", 0)) for s in stats)

    deadline = time.monotonic() + timeout
    last = read()
    while True:
        time.sleep(settle_seconds)
        current = read()
        if current == last or time.monotonic() > deadline:
            return current
        last = current


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def node_pids() -> dict[str, int]:
    """OS pid of each RabbitMQ node of the local stack that is running, by node."""
    return {node.name: pid for node in LOCAL_STACK.nodes if (pid := node.pid()) is not None}


def broker_settings() -> dict[str, Any]:
    """Version, memory watermark and other limits that decide where inline payloads break."""
    overview = mgmt("GET", "/api/overview")
    nodes = mgmt("GET", "/api/nodes")
    return {
        "rabbitmq_version": overview.get("rabbitmq_version"),
        "erlang_version": overview.get("erlang_version"),
        "nodes": len(nodes),
        "mem_limit_bytes": [node.get("mem_limit") for node in nodes],
        "disk_free_limit_bytes": [node.get("disk_free_limit") for node in nodes],
        "max_message_size_bytes": _max_message_size(),
    }


def _max_message_size() -> int | None:
    """``max_message_size`` as the node runs with it (rabbitmqctl), or None if that fails."""
    match = re.search(r"\{ok,(\d+)\}", _rabbit_eval(0, "application:get_env(rabbit, max_message_size)."))
    return int(match[1]) if match else None


def _rabbit_eval(node: int, expression: str) -> str:
    try:
        return LOCAL_STACK.node(node).rabbitmqctl("eval", expression, timeout=60)
    except (StackError, subprocess.TimeoutExpired):
        return ""


# RabbitMQ's own default (3.10); the local stack runs with 128 KiB, a bound for pointers and ACKs.
BROKER_DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


@contextmanager
def broker_max_message_size(limit: int) -> Iterator[None]:
    """Run with ``max_message_size`` at ``limit`` on every node, then restore it.

    The inline comparison sends whole payloads through the broker; the stack's own bound keeps
    every message under 128 KiB, so for the comparison the broker gets its stock limit back.
    New channels read the setting, so the inline senders started inside see ``limit``.
    """
    configured = _max_message_size()
    nodes = range(len(mgmt("GET", "/api/nodes")))
    for node in nodes:
        _rabbit_eval(node, f"application:set_env(rabbit, max_message_size, {limit}).")
    try:
        yield
    finally:
        if configured is not None:
            for node in nodes:
                _rabbit_eval(node, f"application:set_env(rabbit, max_message_size, {configured}).")


def _proc_field(pid: int, name: str, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/{name}") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def prometheus_value(port: int, metric: str) -> float | None:
    """One unlabelled sample from a node's Prometheus endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(rf"^{re.escape(metric)} ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(match[1]) if match else None


@dataclass
class BrokerUsage:
    """What the three broker nodes did during one measurement."""

    seconds: float = 0.0
    rss_start: int = 0  # bytes, sum over nodes
    rss_peak: int = 0  # bytes, highest sum over nodes seen while sampling
    node_rss_peak: int = 0  # bytes, highest single node
    write_bytes: int = 0  # /proc/<pid>/io write_bytes delta, sum over nodes (storage layer)
    prom_io_write_bytes: float = 0.0  # rabbitmq_io_write_bytes_total delta, sum over nodes
    nodes_restarted: bool = False  # a node's pid changed meanwhile (another user of the stack)

    @property
    def rss_growth(self) -> int:
        return max(0, self.rss_peak - self.rss_start)


class BrokerSampler:
    """Samples the nodes' RSS every ``interval`` seconds between start() and stop()."""

    def __init__(self, interval: float = 0.1) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.usage = BrokerUsage()

    def _rss(self) -> tuple[int, int]:
        values = [(_proc_field(pid, "status", "VmRSS:") or 0) * 1024 for pid in self._pids.values()]
        return sum(values), max(values, default=0)

    def _write_bytes(self) -> dict[int, int]:
        values = {pid: _proc_field(pid, "io", "write_bytes:") for pid in self._pids.values()}
        return {pid: value for pid, value in values.items() if value is not None}

    def _prom(self) -> float:
        return sum(prometheus_value(port, "rabbitmq_io_write_bytes_total") or 0.0 for port in PROMETHEUS_PORTS)

    def start(self) -> "BrokerSampler":
        self._pids = node_pids()
        self._started = time.monotonic()
        self._write0 = self._write_bytes()
        self._prom0 = self._prom()
        total, node = self._rss()
        self.usage = BrokerUsage(rss_start=total, rss_peak=total, node_rss_peak=node)
        self._thread = threading.Thread(target=self._run, name="broker-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            total, node = self._rss()
            self.usage.rss_peak = max(self.usage.rss_peak, total)
            self.usage.node_rss_peak = max(self.usage.node_rss_peak, node)

    def stop(self) -> BrokerUsage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.usage.seconds = time.monotonic() - self._started
        end = self._write_bytes()
        # Only nodes that ran throughout count; a node restarted meanwhile (by another user of the
        # stack) is flagged instead of producing a negative difference.
        self.usage.write_bytes = sum(end[pid] - start for pid, start in self._write0.items() if pid in end)
        self.usage.prom_io_write_bytes = self._prom() - self._prom0
        try:
            self.usage.nodes_restarted = not set(self._pids.values()) <= set(node_pids().values())
        except OSError:
            self.usage.nodes_restarted = True
        return self.usage


# -- child processes ------------------------------------------------------------------------


class Proc(ChildProcess):
    """A benchmark's child. With ``measure`` it runs under bench/rss.py, so that its peak RSS and
    CPU time are its own and not those inherited from this (much bigger) process."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], logdir: Path, measure: bool = False) -> None:
        self._usage_path = logdir / f"{name}.rusage.json" if measure else None
        if self._usage_path is not None:
            args = [PYTHON, "-S", str(REPO / "bench" / "rss.py"), str(self._usage_path), "--", *args]
        super().__init__(name, args, logdir / f"{name}.log", env=env, cwd=REPO)

    def _reaped(self, returncode: int, seconds: float, maxrss_bytes: int, cpu_seconds: float) -> Exit:
        if self._usage_path is not None:
            try:
                measured = json.loads(self._usage_path.read_text())
                maxrss_bytes, cpu_seconds = int(measured["maxrss_bytes"]), float(measured["cpu_seconds"])
            except (OSError, ValueError, KeyError):
                maxrss_bytes = 0  # unknown rather than the launcher's inherited figure
        return super()._reaped(returncode, seconds, maxrss_bytes, cpu_seconds)


# -- the run's vhosts, databases and bucket -------------------------------------------------


def _admin_execute(sql: str) -> None:
    """One statement as the stack's admin, outside a transaction (CREATE/DROP DATABASE need that)."""
    connection = psycopg2.connect(ADMIN_DSN, connect_timeout=10)
    connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def dsn_for(database: str) -> str:
    parts = urllib.parse.urlsplit(ADMIN_DSN)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


@dataclass
class BenchEnv:
    """Names, resources and children of one benchmark run."""

    run_id: str
    workdir: Path
    vhosts: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    bucket: str = ""

    def __post_init__(self) -> None:
        self.bucket = f"ccbench-{self.run_id}"
        self.workdir.mkdir(parents=True, exist_ok=True)

    # resources
    def vhost(self, suffix: str, recipients: Sequence[str] = (), shards: int = 1) -> str:
        """Create vhost ``ccbench-<run>-<suffix>`` for guest, provisioned for ``recipients`` with
        ``shards`` coordinator shards; return its AMQP URL."""
        name = f"ccbench-{self.run_id}-{suffix}"
        mgmt("PUT", f"/api/vhosts/{quote(name)}", {})
        mgmt("PUT", f"/api/permissions/{quote(name)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        self.vhosts.append(name)
        url = f"{AMQP_BASE}/{quote(name)}"
        self.provision(url, recipients, shards)
        return url

    @staticmethod
    def provision(amqp_url: str, recipients: Sequence[str], shards: int = 1) -> None:
        """Declare the topology and the recipients' queues, as `claimcheck provision` does."""
        provision(amqp_url, "", list(recipients), [], shards=shards)

    def database(self, suffix: str, migrate: bool = True) -> str:
        """Create database ``ccbench_<run>_<suffix>``, apply the ledger migrations; return its DSN."""
        name = f"ccbench_{self.run_id}_{suffix}".replace("-", "_")
        _admin_execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        dsn = dsn_for(name)
        if migrate:
            done = subprocess.run([PYTHON, "-m", "claimcheck", "migrate"], env=self.env(database_url=dsn),
                                  cwd=REPO, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"claimcheck migrate failed: {done.stdout}{done.stderr}")
        return dsn

    def drop_database(self, dsn: str) -> None:
        name = urllib.parse.urlsplit(dsn).path.lstrip("/")
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def env(self, amqp_url: str | None = None, database_url: str | None = None, http_port: int | None = None,
            **extra: str) -> dict[str, str]:
        """The environment of a claimcheck child process pointed at this run's resources."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("CLAIMCHECK_")}
        for key in ("CLAIMCHECK_S3_ENDPOINT_URL", "CLAIMCHECK_S3_ACCESS_KEY_ID", "CLAIMCHECK_S3_SECRET_ACCESS_KEY",
                    "CLAIMCHECK_POINTER_SIGNING_KEY", "CLAIMCHECK_POINTER_VERIFY_KEYS", "CLAIMCHECK_ACK_SIGNING_KEY",
                    "CLAIMCHECK_ACK_VERIFY_KEYS", "CLAIMCHECK_COORDINATOR_KEY"):
            if key in os.environ:
                env[key] = os.environ[key]
        env["CLAIMCHECK_S3_BUCKET"] = self.bucket
        env["CLAIMCHECK_LOG_LEVEL"] = os.environ.get("BENCH_LOG_LEVEL", "INFO")
        if amqp_url:
            env["CLAIMCHECK_AMQP_URL"] = amqp_url
        if database_url:
            env["CLAIMCHECK_DATABASE_URL"] = database_url
        if http_port:
            env["CLAIMCHECK_HTTP_PORT"] = str(http_port)
            env["CLAIMCHECK_COORDINATOR_URL"] = f"http://127.0.0.1:{http_port}"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str], measure: bool = False) -> Proc:
        proc = Proc(name, args, env, self.workdir, measure)
        self.procs.append(proc)
        return proc

    def claimcheck(self, name: str, args: Sequence[str], env: dict[str, str], measure: bool = False) -> Proc:
        """Start ``python -m claimcheck ARGS`` (the product's own command)."""
        return self.spawn(name, [PYTHON, "-m", "claimcheck", *args], env, measure)

    def cleanup(self) -> None:
        for proc in self.procs:
            try:
                proc.stop(timeout=10)
            except Exception as exc:  # noqa: BLE001 - clean up what we can
                log.warning("stopping %s failed: %s", proc.name, exc)
        for vhost in list(self.vhosts):
            try:
                mgmt("DELETE", f"/api/vhosts/{quote(vhost)}")
                self.vhosts.remove(vhost)
            except Exception as exc:  # noqa: BLE001
                log.warning("deleting vhost %s failed: %s", vhost, exc)
        for database in list(self.databases):
            try:
                self.drop_database(dsn_for(database))
            except Exception as exc:  # noqa: BLE001
                log.warning("dropping database %s failed: %s", database, exc)
        try:
            delete_bucket(self.bucket)
        except Exception as exc:  # noqa: BLE001
            log.warning("deleting bucket %s failed: %s", self.bucket, exc)


def s3_client() -> Any:
    """A client with the product's settings (claimcheck.store.client)."""
    from claimcheck import store

    return store.client(Settings())


def ensure_bucket(bucket: str) -> None:
    from claimcheck import store

    store.ensure_bucket(s3_client(), bucket)


def delete_prefix(bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``; return how many there were."""
    s3 = s3_client()
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def count_prefix(bucket: str, prefix: str = "") -> int:
    s3 = s3_client()
    return sum(len(page.get("Contents", [])) for page in
               s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))


def delete_bucket(bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        delete_prefix(bucket, "")
        s3_client().delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("NoSuchBucket", "404"):
            raise


# -- CPU accounting ---------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds spent by each part of the stack between two snapshots.

    Services (RabbitMQ nodes, PostgreSQL backends, SeaweedFS) are found by process name; the
    benchmark's own children are passed in by pid. Other users of the shared stack add to the
    services' numbers, so these are upper bounds for them.
    """

    def __init__(self) -> None:
        self.children: dict[int, str] = {}

    def _pids(self) -> dict[int, str]:
        pids = {pid: "rabbitmq" for pid in node_pids().values()}
        pids.update({pid: "postgresql" for pid in pids_named("postgres")})
        pids.update({pid: "seaweedfs" for pid in pids_named("weed")})
        pids.update(self.children)
        return pids

    def snapshot(self) -> dict[int, tuple[str, float]]:
        return {pid: (category, seconds) for pid, category in self._pids().items()
                if (seconds := _cpu_seconds(pid)) is not None}

    @staticmethod
    def delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, (category, seconds) in after.items():
            start = before.get(pid, (category, 0.0))[1]
            totals[category] = totals.get(category, 0.0) + max(0.0, seconds - start)
        return totals


# -- health of the shared stack -------------------------------------------------------------


def stack_problem() -> str | None:
    """None when all three RabbitMQ nodes, PostgreSQL and S3 answer, else what does not."""
    try:
        running = [node for node in mgmt("GET", "/api/nodes", timeout=5) if node.get("running")]
        if len(running) < 3:
            return f"{len(running)} of 3 RabbitMQ nodes running"
    except OSError as exc:
        return f"RabbitMQ management API: {exc}"
    try:
        psycopg2.connect(ADMIN_DSN, connect_timeout=5).close()
    except psycopg2.Error as exc:
        return f"PostgreSQL: {str(exc).strip()[:100]}"
    try:
        s3_client().list_buckets()
    except Exception as exc:  # noqa: BLE001 - any S3 failure
        return f"S3: {str(exc)[:100]}"
    if not port_open(LOCAL.amqp):
        return "HAProxy AMQP port closed"
    return None


def wait_healthy(timeout: float = 300.0) -> float:
    """Block until the stack is whole again (other users stop and restart parts of it); seconds waited."""
    started = time.monotonic()
    reported = None
    while (problem := stack_problem()) is not None:
        if problem != reported:
            log.warning("waiting for the stack: %s", problem)
            reported = problem
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the stack did not recover within {timeout:.0f} s: {problem}")
        time.sleep(2.0)
    if reported is not None:
        time.sleep(5.0)  # let quorum queues elect leaders and clients reconnect
    return time.monotonic() - started
