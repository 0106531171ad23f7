"""Files written so that a kill at any moment leaves either the old or the new content: atomic replacement,
an atomic swap of two folders, and the clean-up of what a killed writer left behind (its temporary entries
carry its process id, so a running writer's are never touched)."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

STALE_AFTER_S = 3600.0  # a save takes seconds: an entry untouched this long is a leftover whoever made it
# `.<file>.<pid>.<random>` beside a file being replaced: what atomic_write_bytes leaves when its writer is killed
FILE_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+(?:\.tmp)?\Z")
# `.<file>.<pid>[.<random>].tmp`: a result CSV or summary being written (output.py, fleet.write_summary)
OUTPUT_TEMP_RE = re.compile(r"^\..+\.(\d+)(?:\.[A-Za-z0-9_]+)?\.tmp\Z")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)
    try:
        # mkstemp makes it 0600; the file gets what an ordinary write would: the mode of the file it replaces,
        # else 0666 & ~umask (nothing the store writes is a secret)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~umask()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


@functools.cache
def _renameat2():
    """libc's renameat2, or None where there is none (not Linux, an old glibc)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # the symbols the interpreter already loaded: libc's
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE): whatever moment the process dies, each name
    holds one of the two. False where the system or the file system cannot; nothing has moved then."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):  # not offered here: fall back
        return False
    raise OSError(err, os.strerror(err), str(b))


def remove_entry(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def remove_stale_files(folder: Path, pattern: re.Pattern = FILE_TEMP_RE) -> None:
    """Remove the temporary entries in `folder` whose name matches `pattern` (its group 1: the writer's process
    id) and whose writer is gone: what a killed writer left beside the files it was replacing."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if match and writer_gone(int(match.group(1)), entry):
            try:
                remove_entry(entry)
            except OSError:
                pass


def umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which races
    with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def writer_gone(pid: int, path: Path) -> bool:
    """True when the process that made temporary entry `path` has exited (killed mid-write), or the entry has not
    been touched for STALE_AFTER_S (its process id may have been reused since)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:  # it exists, run by another user
        pass
    return _age(path) > STALE_AFTER_S


def _age(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except OSError:
        return 0.0


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
