"""Run a command and record its own peak RSS and CPU time: ``python -S bench/rss.py OUT -- CMD...``.

Linux keeps a process's ``ru_maxrss`` across ``execve``, and a child forked (or vforked) from
a big parent starts with the parent's high-water mark, so a command started straight from the
benchmark (~120 MiB of matplotlib and friends) would never report less than that. This tiny
launcher (plain ``python -S``, a few MiB) spawns the command itself, forwards SIGTERM and SIGINT
to it, and writes the command's ``wait4`` rusage as JSON to OUT. Standard library only.
"""

import json
import os
import signal
import sys


def main() -> int:
    out, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.stderr.write("usage: rss.py OUT -- CMD [ARGS...]\n")
        return 2
    pid = os.posix_spawnp(command[0], command, dict(os.environ))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: os.kill(pid, number))
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as handle:
        json.dump({"returncode": code, "maxrss_bytes": usage.ru_maxrss * 1024,
                   "cpu_seconds": usage.ru_utime + usage.ru_stime}, handle)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
