"""One child process with its output in a log file: started in its own session, stopped (SIGTERM,
then SIGKILL) or killed, and reaped with what it used (wall time, peak RSS, CPU). The demo, the
benchmarks and the fault suite run every component through it, so they stop and measure them alike.
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.02
OUTPUT_CHARACTERS = 20_000


@dataclass(frozen=True)
class Exit:
    """How a child process ended."""

    returncode: int
    seconds: float  # from start to exit
    maxrss_bytes: int
    cpu_seconds: float
    output: str  # the end of its log


class ChildProcess:
    """``argv`` as a child in its own session; stderr (and stdout, unless ``stdout_path`` is given)
    appended to ``log_path``. Restartable with :meth:`start` once it has exited."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, stdout_path: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stdout_path = stdout_path
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.exit: Exit | None = None
        self.start()

    def start(self) -> None:
        """Start the process (again)."""
        assert not self.alive, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            stdout = self.stdout_path.open("ab") if self.stdout_path is not None else log
            try:
                self._popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                               stdout=stdout, stderr=log, start_new_session=True)
            finally:
                if stdout is not log:
                    stdout.close()
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.exit = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def alive(self) -> bool:
        return hasattr(self, "_popen") and self.poll() is None

    @property
    def returncode(self) -> int | None:
        finished = self.poll()
        return None if finished is None else finished.returncode

    def poll(self) -> Exit | None:
        """Reap the process if it exited (with its resource usage), else None."""
        if self.exit is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == 0:
                return None
            self._popen.returncode = os.waitstatus_to_exitcode(status)
            self.exit = self._reaped(self._popen.returncode, time.monotonic() - self.started, usage.ru_maxrss * 1024,
                                     usage.ru_utime + usage.ru_stime)
        return self.exit

    def _reaped(self, returncode: int, seconds: float, maxrss_bytes: int, cpu_seconds: float) -> Exit:
        """What the exit records; a subclass may measure differently."""
        return Exit(returncode, seconds, maxrss_bytes, cpu_seconds, self.log_text()[-OUTPUT_CHARACTERS:])

    def wait(self, timeout: float) -> Exit:
        """Wait up to ``timeout`` seconds for the exit; TimeoutError if it keeps running."""
        deadline = time.monotonic() + timeout
        while (finished := self.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} (pid {self.pid}) still running after {timeout:.0f} s; see {self.log_path}")
            time.sleep(POLL_SECONDS)
        return finished

    def stop(self, timeout: float = 30) -> Exit:
        """SIGTERM to the process, then SIGKILL to its whole session after ``timeout``; always reaps."""
        if self.poll() is None:
            self._signal(signal.SIGTERM, group=False)
            try:
                return self.wait(timeout)
            except TimeoutError:
                self._signal(signal.SIGKILL, group=True)
                return self.wait(10)
        assert self.exit is not None
        return self.exit

    def kill(self) -> float:
        """SIGKILL the process and what it started; return the moment (epoch) it was sent."""
        assert self.alive, f"{self.name} is not running"
        at = time.time()
        self._signal(signal.SIGKILL, group=True)
        self.wait(10)
        with self.log_path.open("ab") as log:
            log.write(f"==== {self.name} killed with SIGKILL\n".encode())
        return at

    def _signal(self, signum: signal.Signals, group: bool) -> None:
        with contextlib.suppress(ProcessLookupError):
            (os.killpg if group else os.kill)(self.pid, signum)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
