"""Keep the C allocator's memory flat under threads: one glibc malloc arena per process.

glibc gives each thread that contends for the heap an arena of its own (up to 8 per core).
The producer's upload threads and s3transfer's part threads allocate and free multi-MiB part
buffers from several of them, and each arena keeps its own high-water mark: a 100 MiB or
1 GiB upload peaked ~15 MiB higher than with one arena, for no speed gain (docs/benchmarks.md).
Python itself runs one thread at a time under the GIL, so a single arena costs no parallelism.
"""

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # from glibc's malloc.h


def use_one_arena() -> bool:
    """Limit glibc to one malloc arena; False where the C library is not glibc (nothing to do)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, 1))
