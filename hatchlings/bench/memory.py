"""The process's memory, as the arena measures and tunes it (Linux first; None/False where unavailable).

Peak resident memory is the arena's memory figure: every model trains in a fresh process, so the peak is its
own. glibc's allocator settings decide whether large tensors come from recycled heap or fresh pages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resident_mib() -> float | None:
    """Current resident memory of this process (Linux /proc), or None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_resident_mib() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def reuse_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory for large tensors instead of mapping fresh pages each time.

    glibc serves allocations of 32 MiB and more (its largest mmap threshold) with a new mmap, and the first
    touch of every page then faults. A BDH tiny training step allocates a few dozen (H, B, T, N) neuron
    tensors of exactly 32 MiB, so it pays that on every one (about 20% of its step time on 2 cores), while
    smaller models' tensors are recycled from the heap. Turning mmap off (and heap trimming down) gives
    every model the recycled-memory behaviour; users can do the same with the environment variables
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296. Returns False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from glibc's malloc.h
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False
