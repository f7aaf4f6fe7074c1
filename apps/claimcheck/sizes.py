"""Human payload sizes (``64KB``, ``1MB``, ``1.5MiB``, ``2GB``) to byte counts.

KB/MB/GB are decimal (1 MB = 1,000,000 bytes) and KiB/MiB/GiB binary, as on a disk label.
"""

import re

from claimcheck.protocol import MAX_PAYLOAD_BYTES

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """Return the byte count of ``text``; raise ValueError with a readable reason."""
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: expected a number with an optional unit, e.g. 64KB, 1MB, 1MiB")
    number, unit = match.groups()
    factor = _UNITS.get(unit.upper())
    if factor is None:
        raise ValueError(f"invalid size unit {unit!r} in {text!r}: use one of B, KB, MB, GB, KiB, MiB, GiB")
    size = int(float(number) * factor)
    if size < 1:
        raise ValueError(f"invalid size {text!r}: must be at least 1 byte")
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(f"invalid size {text!r}: larger than the 64 GiB limit")
    return size


def format_size(size: int) -> str:
    """A short binary-unit rendering for summaries (``1.0 MiB``)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
