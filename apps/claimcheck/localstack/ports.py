"""Every port of the local stack (``make up``), defined once.

The settings' defaults (claimcheck/config.py), the role accounts (accounts.py), the services'
configuration (services.py and templates/), the operator's default coordinator URL, the benchmarks
and the tests all read them from here. A second stack
beside the usual one (its own state directory, e.g. to try the stack code without disturbing the
one everybody tests against) moves every port by one offset: ``CLAIMCHECK_STACK_PORT_OFFSET``.
100 keeps every port clear of the default stack's (1000 would not: 38333 + 1000 is SeaweedFS's
master port); its RabbitMQ nodes are named ``rmq-N-100@localhost``, since both stacks share epmd.
"""

import dataclasses
import os
import random
import socket
from dataclasses import dataclass

HOST = "127.0.0.1"
NODES = (0, 1, 2)  # RabbitMQ nodes rmq-0..2
OFFSET_VARIABLE = "CLAIMCHECK_STACK_PORT_OFFSET"


@dataclass(frozen=True)
class Ports:
    """The ports of one local stack (docs/interfaces.md, "Local stack ports")."""

    amqp: int = 35672  # HAProxy's AMQP endpoint in front of the cluster
    management: int = 45672  # HAProxy in front of the nodes' management API
    postgresql: int = 35432
    s3: int = 38333
    coordinator: int = 38080  # a coordinator started with the defaults (`make coordinator`)
    prometheus: int = 39090
    haproxy_metrics: int = 48404  # HAProxy's built-in Prometheus exporter
    # Node N uses the first port + N.
    first_node_amqp: int = 35680
    first_node_management: int = 45680
    first_node_metrics: int = 45690  # the prometheus plugin's /metrics
    first_node_distribution: int = 25680  # the Erlang distribution listener
    # rabbitmqctl's own distribution ports (ten from here): its default, 35672..35682, is ours.
    first_cli_distribution: int = 25690
    # `weed mini`, besides S3. Its maintenance worker always dials the admin HTTP port + 10000,
    # whatever -admin.port.grpc says, so that is the admin gRPC port.
    seaweedfs_s3_grpc: int = 38334
    seaweedfs_filer: int = 38888
    seaweedfs_filer_grpc: int = 38889
    seaweedfs_master: int = 39333
    seaweedfs_master_grpc: int = 39334
    seaweedfs_volume: int = 39340
    seaweedfs_volume_grpc: int = 39341
    seaweedfs_admin: int = 39646
    seaweedfs_webdav: int = 39733  # WebDAV is off; the flag is set anyway so it could never clash
    offset: int = 0  # how far every port above was moved from its default

    @classmethod
    def from_env(cls) -> "Ports":
        """The defaults, moved by ``CLAIMCHECK_STACK_PORT_OFFSET`` (if set)."""
        offset = int(os.environ.get(OFFSET_VARIABLE, "0") or 0)
        default = cls()
        return cls(**{field.name: getattr(default, field.name) + offset for field in dataclasses.fields(cls)})

    def node_amqp(self, n: int) -> int:
        return self.first_node_amqp + n

    def node_management(self, n: int) -> int:
        return self.first_node_management + n

    def node_metrics(self, n: int) -> int:
        return self.first_node_metrics + n

    def node_distribution(self, n: int) -> int:
        return self.first_node_distribution + n

    @property
    def seaweedfs(self) -> dict[str, int]:
        """``weed mini`` flag -> port, besides ``-s3.port``."""
        return {"s3.port.grpc": self.seaweedfs_s3_grpc, "filer.port": self.seaweedfs_filer,
                "filer.port.grpc": self.seaweedfs_filer_grpc, "master.port": self.seaweedfs_master,
                "master.port.grpc": self.seaweedfs_master_grpc, "volume.port": self.seaweedfs_volume,
                "volume.port.grpc": self.seaweedfs_volume_grpc, "admin.port": self.seaweedfs_admin,
                "admin.port.grpc": self.seaweedfs_admin + 10000, "webdav.port": self.seaweedfs_webdav}

    def listening(self) -> list[int]:
        """Every port a service of the stack listens on (WebDAV is off)."""
        seaweedfs = [port for flag, port in self.seaweedfs.items() if flag != "webdav.port"]
        nodes = [port for n in NODES
                 for port in (self.node_amqp(n), self.node_management(n), self.node_metrics(n), self.node_distribution(n))]
        return [self.amqp, self.management, self.postgresql, self.s3, self.prometheus, self.haproxy_metrics,
                *nodes, *seaweedfs]


LOCAL = Ports.from_env()


# Ports handed to processes started beside the stack (a coordinator's or consumer's HTTP port in
# a test or benchmark). Below the kernel's ephemeral range (32768 and up) and the stack's own
# ports: a port from bind(0) is ephemeral, and any outgoing connection (a pika or psycopg2 client)
# may take it as its local port before the process it was chosen for binds it (CI saw a consumer
# fail with "Address already in use").
SPARE_PORTS = range(10000, 25000)
_handed_out: set[int] = set()  # not handed out twice by one process, even before anybody bound them


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` (IPv4 or IPv6) nothing listens on right now, for a process started beside the stack."""
    taken = set(LOCAL.listening()) | _handed_out
    for port in random.SystemRandom().sample(SPARE_PORTS, 200):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port among 200 tried in {SPARE_PORTS.start}-{SPARE_PORTS.stop - 1} on {host}")
