"""Where the CPU goes: py-spy samples of the product's processes, folded into a few categories.

``py-spy record --native --format raw`` gives collapsed stacks (root first, leaf last) with
native frames, so time inside zlib, OpenSSL's sha256 or libpq shows as such rather than as the
Python line that called it. Only busy threads are sampled (py-spy's default), so the shares are
shares of CPU time, not of wall time.
"""

import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

IDLE = "idle (blocked waiting)"
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

# (category, pattern on the innermost Python frame's file) in priority order.
_MODULES = [
    ("start-up (imports)", r"<frozen importlib|[(/]importlib/"),
    ("pydantic (message validation)", r"[(/]pydantic"),
    ("pika (AMQP client)", r"[(/]pika/"),
    ("psycopg2 / ledger SQL", r"[(/]psycopg2|claimcheck/ledger\.py"),
    ("boto3 / HTTP (S3 client)", r"[(/](botocore|boto3|s3transfer|urllib3)/|[(/]http/client\.py|[(/]ssl\.py|[(/]socket\.py"),
    ("logging", r"[(/]logging/"),
    ("json", r"[(/]json/"),
    ("payload generation, buffering", r"claimcheck/payload\.py"),
    ("download/verify loop", r"claimcheck/store\.py"),
    ("HMAC signing", r"claimcheck/signing\.py|[(/]hmac\.py"),
    ("prometheus_client", r"[(/]prometheus_client/"),
    ("tenacity (retry wrappers)", r"[(/]tenacity/"),
    ("threads, futures, queues", r"[(/]threading\.py|[(/]concurrent/|[(/]queue\.py"),
]


_WAITING = re.compile(
    r"PyThread_acquire_lock_timed|epoll_wait|^poll \(|pthread_cond_(timed)?wait|sem_(timed)?wait|internal_select|"
    r"select_poll_poll|select_epoll_poll|^select \(|nanosleep|clock_nanosleep|__futex|futex_wait|pysleep"
)


def category(frames: Sequence[str]) -> str:
    """The category of one sample; ``idle`` for a thread that is blocked waiting."""
    leaf = frames[-1] if frames else ""
    if any(_WAITING.search(frame) for frame in frames[-6:]):
        return IDLE
    python = [frame for frame in frames if re.search(r"\.py:\d+\)$|<frozen", frame)]
    inner = python[-1] if python else ""
    stack = ";".join(frames)
    if "libz" in leaf or leaf.startswith(("crc32", "deflate", "inflate", "adler32")):
        # Decide by the Python code that called into zlib: the producer's compressor runs inside
        # s3transfer's read of the stream, so "botocore in the stack" alone would mislabel it.
        if "claimcheck/payload.py" in inner:
            return "gzip (zlib deflate)"
        if "claimcheck/store.py" in inner or "decompress" in inner:
            return "gunzip (zlib inflate)"
        if re.search(r"[(/](botocore|s3transfer|boto3|urllib3)/", inner):
            return "CRC32 checksums (botocore)"
        return "gunzip (zlib inflate)" if "decompress" in stack else "gzip (zlib deflate)"
    if "libisal" in leaf or "isal" in leaf:
        return "gunzip (zlib inflate)" if "decompress" in stack else "gzip (zlib deflate)"
    if "libcrypto" in leaf or "sha256" in leaf.lower() or "sha2" in leaf.lower():
        return "HMAC signing" if "hmac" in stack else "sha256"
    if "libpq" in leaf or "_psycopg" in leaf:
        return "psycopg2 / ledger SQL"
    if leaf.startswith(("gc_collect", "gc_")) or "gc_collect" in stack.rsplit(";", 3)[-1]:
        return "garbage collector"
    for name, pattern in _MODULES:
        if re.search(pattern, inner):
            return name
    return "other Python / interpreter"


def read_raw(path: Path) -> collections.Counter[str]:
    """Samples per category in a py-spy raw file."""
    counts: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return counts
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if not frame.startswith(("thread (", "process "))]
        counts[category(frames)] += int(number)
    return counts


def record_command(out: Path, rate: int = 67, native: bool = True) -> list[str]:
    """The py-spy prefix that profiles a command started under it."""
    return [PY_SPY, "record", "--format", "raw", "--rate", str(rate), "--output", str(out),
            *(["--native"] if native else []), "--"]


def attach(pid: int, out: Path, rate: int = 67, native: bool = True) -> subprocess.Popen[bytes]:
    """Start sampling a running process until it exits or the returned py-spy is interrupted."""
    return subprocess.Popen([PY_SPY, "record", "--format", "raw", "--rate", str(rate), "--output", str(out),
                             *(["--native"] if native else []), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def available() -> bool:
    try:
        return subprocess.run([PY_SPY, "--version"], capture_output=True, check=False).returncode == 0
    except OSError:
        return False
