"""Starting, finding, probing and stopping the stack's daemons, which outlive the command that
started them: each runs in its own session with its output appended to a log file, and is found
again later through a pid file and its command name (so a recycled pid is never mistaken for it).
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import tenacity

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.2

# Daemons this process started, until it reaps them: one that exits while we still run would
# otherwise stay a zombie, and look alive in /proc.
_launched: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """A service did not start, stop or answer as it must; the message says which and where its log is."""


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def launch(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start a daemon in its own session, stdin from /dev/null, output appended to ``log``; its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n==== {datetime.now().astimezone():%Y-%m-%dT%H:%M:%S%z} localstack: starting {' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=None if env is None else dict(env), cwd=cwd, start_new_session=True)
    _launched[process.pid] = process
    return process.pid


def alive(pid: int, command: str | None = None) -> bool:
    """Process ``pid`` exists and (if given) its command name is ``command``.

    A zombie counts as gone only once every thread of it is: a multi-threaded daemon's main
    thread turns zombie while the others still tear down and hold its listening sockets."""
    if pid in _launched and _launched[pid].poll() is not None:
        del _launched[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if command is not None and stat[stat.index("(") + 1 : stat.rindex(")")] != command:
        return False
    return any(_state(task) not in ("Z", "X", "") for task in Path(f"/proc/{pid}/task").glob("*/stat"))


def _state(task_stat: Path) -> str:
    """One thread's state letter, "" if it is already gone."""
    try:
        stat = task_stat.read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2 :].split()[0]


class PidFile:
    """Where a daemon's pid is kept, and the command name that pid must have."""

    def __init__(self, path: Path, command: str) -> None:
        self.path = path
        self.command = command

    def pid(self) -> int | None:
        """The recorded pid if that process runs ``command``, else None."""
        try:
            text = self.path.read_text().split()
        except OSError:
            return None
        pid = int(text[0]) if text and text[0].isdigit() else 0
        return pid if pid and alive(pid, self.command) else None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def wait_for(check: Callable[[], bool], seconds: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; after ``seconds`` raise StackError with the log's last lines.

    tenacity instead of a hand-written loop: the deadline, the poll interval and the final error
    are declared, and every readiness wait of the stack reads the same way.
    """

    def give_up(_: tenacity.RetryCallState) -> None:
        detail = f"; last lines of {log}:\n{log_tail(log)}" if log is not None else ""
        raise StackError(f"{what}: not ready after {seconds:.0f}s{detail}")

    tenacity.Retrying(stop=tenacity.stop_after_delay(seconds), wait=tenacity.wait_fixed(POLL_SECONDS),
                      retry=tenacity.retry_if_result(lambda ok: not ok), retry_error_callback=give_up)(check)


def wait_gone(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` exited within ``seconds``."""
    try:
        wait_for(lambda: not alive(pid), seconds, f"exit of pid {pid}")
    except StackError:
        return False
    return True


def terminate(pid: int, what: str, seconds: float = 30) -> None:
    """SIGTERM, wait up to ``seconds``, then SIGKILL."""
    _signal(pid, signal.SIGTERM)
    if not wait_gone(pid, seconds):
        logger.warning(f"{what} (pid {pid}) ignored SIGTERM for {seconds:.0f}s, killing it")
        kill(pid, what)


def kill(pid: int, what: str) -> None:
    """SIGKILL, and wait until the process is gone."""
    _signal(pid, signal.SIGKILL)
    if not wait_gone(pid, 10):
        raise StackError(f"{what} (pid {pid}) survived SIGKILL")


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


# -- probes ------------------------------------------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def amqp_answers(port: int, host: str = "127.0.0.1") -> bool:
    """Sending the AMQP 0-9-1 header gets a frame back (Connection.Start: frame type 1)."""
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.settimeout(3)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def ensure_free(what: str, ports: Sequence[int]) -> None:
    """Fail clearly if something (not ours: callers check their own pid first) already listens on a port."""
    for port in ports:
        if port_open(port):
            owner = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False).stdout
            raise StackError(f"{what}: port {port} is already in use" + (f" ({owner.strip()})" if owner.strip() else ""))


def pids_named(command: str) -> list[int]:
    """Pids of every live process whose command name is ``command``."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and alive(int(entry), command)]
