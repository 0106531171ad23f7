"""Process tuning: for a command that runs once and exits (the CLI), and the lighter one a server runs with
(never a caller's process)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def reuse_freed_memory() -> None:
    """Make glibc keep large freed blocks instead of giving them back to the system. By default each array
    over 32 MiB is mapped and unmapped, and freed heap is trimmed, so every block of a large file faulted its
    pages in again, which made scaling and scoring a large file much slower than with the memory kept
    (docs/decisions/0007-keep-freed-heap.md). The blocks are all about the same size, so peak memory is
    unchanged; memory is not given back until exit, which suits a command and not a server. A no-op without
    glibc."""
    _set_malloc_thresholds(1 << 30)


SERVER_HEAP_KEEP = 32 << 20  # glibc's own ceiling for its adaptive mmap threshold


def keep_freed_heap(limit: int = SERVER_HEAP_KEEP) -> None:
    """For a server, which runs on: arrays up to `limit` come from the heap, and up to `limit` of freed heap is
    kept per malloc arena for the next call. glibc's defaults start low and adapt to what the process frees: a
    fresh server's scoring thread gave memory back after every detection of a small file, and the next one
    faulted it in again, a sizeable share of the call (docs/decisions/0007-keep-freed-heap.md); whether a
    process did depended on what it had allocated before. Larger arrays are still mapped and freed heap beyond
    the limit is still given back: after a 1M-row detection the server is about as large as with the defaults.
    A no-op without glibc."""
    _set_malloc_thresholds(limit)


def _set_malloc_thresholds(limit: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(M_MMAP_THRESHOLD, limit)
    mallopt(M_TRIM_THRESHOLD, limit)


def exit_without_collecting() -> None:
    """At exit (an atexit handler): move every object to the permanent generation, so that the interpreter's
    final collections do not walk the hundreds of thousands of objects torch created; they are freed with the
    process, which roughly halves the exit of a process that imported torch
    (docs/decisions/0007-keep-freed-heap.md). Objects with finalizers are still finalized by reference counting;
    files the command wrote are closed before it returns."""
    gc.freeze()


@contextlib.contextmanager
def no_collection_until_progress(program: bool):
    """No cyclic garbage collection from here to the first progress event (the first block scored) when this
    process is the command: importing torch creates hundreds of thousands of objects, and the collections
    walking them as they pile up took a noticeable part of detection's start (on the main thread, while the
    reader waits for the GIL; docs/decisions/0007-keep-freed-heap.md). Yields the progress callback; collection
    is back on at the first event, or on the way out."""
    if not program or not gc.isenabled():
        yield None
        return
    gc.disable()
    try:
        yield lambda event: gc.enable()
    finally:
        gc.enable()
