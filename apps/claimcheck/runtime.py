"""Process-wide settings for long-running, allocation-heavy workers; applied once at CLI start.

* One glibc malloc arena. glibc gives each thread that contends for the heap an arena of its
  own (up to 8 per core). The producer's upload threads and s3transfer's part threads allocate
  and free multi-MiB part buffers from several of them, and each arena keeps its own high-water
  mark: a 100 MiB or 1 GiB upload peaked ~15 MiB higher than with one arena, for no speed gain.
  Python runs one thread at a time under the GIL, so a single arena costs no parallelism.
* A calmer cyclic garbage collector. Every message makes short-lived objects (deliveries,
  pydantic models, boto3 request dicts); with the default gen-0 threshold of 700 the collector
  ran constantly and rescanned the large, permanent module graphs of boto3 and pydantic.
  Freezing what exists after the imports and collecting gen 0 every 10,000 allocations cut the
  coordinator's CPU in an ACK drain by about a fifth (docs/benchmarks.md).
"""

import ctypes
import ctypes.util
import gc

M_ARENA_MAX = -8  # from glibc's malloc.h
GC_THRESHOLDS = (10_000, 20, 20)


def use_one_arena() -> bool:
    """Limit glibc to one malloc arena; False where the C library is not glibc (nothing to do)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, 1))


def calm_garbage_collector() -> None:
    """Move everything imported so far out of the collector's sight and collect gen 0 less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune() -> None:
    """Both of the above; call before any thread starts."""
    use_one_arena()
    calm_garbage_collector()
