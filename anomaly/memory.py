"""Keeping freed memory for reuse in commands that run once and exit (`detect` on a large file)."""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def reuse_freed_memory() -> None:
    """Make glibc keep large freed blocks instead of giving them back to the system. By default each array
    over 32 MiB is mapped and unmapped, and freed heap is trimmed, so every block of a large file faulted its
    pages in again: in a fresh process scaling and scoring 1M rows took 2.25 s against 1.3 s with the memory
    kept. The blocks are all about the same size, so peak memory is unchanged; memory is not given back until
    exit, which suits a command and not a server (not called there). A no-op without glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(M_MMAP_THRESHOLD, 1 << 30)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
