"""Worker processes that do not outlive the process they work for."""

from __future__ import annotations

import os
import threading
import time

POLL_S = 0.5
_watched: set[int] = set()
_lock = threading.Lock()


def watch_parent(parent: int) -> None:
    """In a worker process: exit at once (no clean-up: the parent is gone, nobody waits for the result) when the
    process `parent` ends. Linux's PR_SET_PDEATHSIG would tie the worker to the thread that started it, not to
    the process, so a watcher thread polls: its parent process id changes when the parent dies (the worker is
    re-parented), and the parent's id no longer answers signal 0."""
    with _lock:
        if parent in _watched:
            return
        _watched.add(parent)
    started_under = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            if os.getppid() != started_under or not _alive(parent):
                os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
