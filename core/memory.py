"""How our long-lived processes use glibc's allocator (issue 29).

glibc serves an allocation of at least its mmap threshold (128 KiB at start) with a
mapping of its own, unmapped when freed. The threshold is dynamic, though: freeing
such a block raises it to that block's size (up to 32 MiB), so from then on the
megabyte buffers an export cycles through (media segments read, joined, written to
ffmpeg's pipe; some in `asyncio.to_thread` threads, with arenas of their own) come
from the heap arenas, whose free pages between live blocks stay resident: the
worker's RSS crept with every export (bench/leaks.py, bench/README.md "Memory over
many jobs"). Setting the threshold with `mallopt` turns the adjustment off, so every
buffer of `MMAP_THRESHOLD` or more goes back to the system when it is freed.
"""

from __future__ import annotations

import ctypes

MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process; False where
    the C library has no `mallopt` (not glibc) or refuses."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))
