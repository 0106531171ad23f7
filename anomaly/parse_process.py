"""Parsing a large file's numbers in a child process, so that detection's two cores both work.

In one process the pandas parser and the scorer compete for the GIL (a busy Python thread more than doubled
parse time), and nothing parses while torch is imported (~2 s). Here a child that imports only pandas and numpy
reads the file with the same reader as in-process detection (`data.iter_parsed`: the same blocks, the same
values) and hands each block over in an anonymous shared-memory file (memfd) sent over a socket pair: the
numbers as one C-ordered float64 matrix, the block's bytes (the raw lines for pass-through output) and text
columns (the time column) as NUL-separated UTF-8, decoded only for the rows that are asked for.

At most DEPTH blocks wait in shared memory, so memory stays flat whatever the file size. The child ends when
the parent closes its end of the socket (also when the parent dies); a child that dies is an error, never a
hang: its end of the socket closes with it. Linux only (memfd, fd passing); elsewhere detection reads in-process.
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import AnomalyError, DataError, NotFound

DEPTH = 2  # blocks parsed ahead: the child parses a block in well under the time the parent scores one
# Below this size a child costs more than it saves: its own start (importing pandas, ~0.5 s of a core) is
# about what parsing 100 MiB in-process costs; above it the start hides behind the parent's torch import.
MIN_BYTES = 64 << 20
HEADER_BYTES = 1 << 16


def available() -> bool:
    return hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and sys.platform.startswith("linux")


def wanted(size: int) -> bool:
    """Whether a file is read by a child: only when asked (ANOMALY_PARSE_PROCESS=1), see the module's doc."""
    return os.environ.get("ANOMALY_PARSE_PROCESS", "").strip() == "1" and available() and size > 0


class ParserProcess:
    """A child parsing the numeric `columns` of a file; `blocks()` yields `data.Block`s whose `matrix(columns)`
    reads what the child sent (their `frame` is None; a text column is read from the lines, `data.LineTexts`)."""

    def __init__(self, path: Path, fmt, columns: list[str], block_bytes: int):
        self.path, self.columns = path, list(columns)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            root = str(Path(__file__).resolve().parents[1])  # the child imports this package from where we did
            code = f"import sys; sys.path.insert(0, {root!r}); from anomaly.parse_process import serve; serve({child.fileno()})"
            self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=[child.fileno()],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # only the child holds its end now: its death reads as end of file here
        self.sock = parent
        try:
            parent.sendall(pickle.dumps({"path": str(path), "fmt": fmt, "columns": self.columns,
                                         "block_bytes": block_bytes}))
        except OSError:  # the child is already gone: `blocks` says so
            pass

    def serves(self, columns: list[str]) -> bool:
        return self.columns == list(columns)

    def blocks(self) -> Iterator:
        from .data import Block

        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self.sock, HEADER_BYTES, 1)
            except OSError:
                msg, fds = b"", []
            if not msg:
                raise AnomalyError(f"the parser process reading {self.path} ended unexpectedly "
                                   f"(exit status {self._exit_status()})")
            head = pickle.loads(msg)
            if "error" in head:
                for fd in fds:
                    os.close(fd)
                cls = {"DataError": DataError, "NotFound": NotFound}.get(head["kind"], AnomalyError)
                raise cls(head["error"])
            if head.get("end"):
                return
            try:
                mm = mmap.mmap(fds[0], head["size"], flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fds[0])
            self._ack()
            rows, sections = head["rows"], head["sections"]
            X = np.frombuffer(mm, np.float64, rows * len(self.columns), sections["X"][0]).reshape(rows, -1)
            body = mm[slice(*_span(sections["body"]))]
            if head["plain"]:
                from .data import plain_lines
                lines = plain_lines(body)
            else:  # CRLF, blank lines or quoted line breaks: the child's lines, joined, and where each ends
                ends = np.frombuffer(mm, np.int64, rows, sections["ends"][0])
                lines = [body[a:b] for a, b in zip(np.r_[0, ends[:-1]].tolist(), ends.tolist())]
            yield Block(head["start"], lines, None, numbers=(self.columns, X))

    def _ack(self) -> None:
        try:
            self.sock.send(b"n")
        except OSError:  # the child is gone; the next receive says so
            pass

    def _exit_status(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "unknown"
        return f"{code} (signal {-code})" if code < 0 else str(code)

    def close(self) -> None:
        """Stop the child (it sees the socket close) and reap it."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # also wakes a thread blocked receiving from it
        except OSError:
            pass
        self.sock.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _span(section: tuple[int, int]) -> tuple[int, int]:
    offset, length = section
    return offset, offset + length


# --- the child ---------------------------------------------------------------------------------------------


def serve(fd: int) -> None:
    """The child's main: parse the job's file block by block, each into a memfd sent to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which closes the socket
    sock = socket.socket(fileno=fd)
    from . import data  # pandas: imported while the parent still imports torch
    from .memory import reuse_freed_memory

    reuse_freed_memory()

    credit = DEPTH
    try:
        job = pickle.loads(sock.recv(HEADER_BYTES) or pickle.dumps(None))
        if job is None:
            return
        for block in data.iter_parsed(job["path"], job["fmt"], job["columns"], job["block_bytes"],
                                      all_columns=False):
            while credit == 0:  # DEPTH blocks wait unread: wait for the parent to take one
                if not sock.recv(16):
                    return
                credit += 1
            _send_block(sock, block, job["columns"])
            credit -= 1
        sock.send(pickle.dumps({"end": True}))
    except (BrokenPipeError, ConnectionResetError):  # the parent stopped reading: nothing to say
        return
    except Exception as exc:  # noqa: BLE001 - every failure goes to the parent, which raises it
        kind = type(exc).__name__
        message = str(exc) if isinstance(exc, AnomalyError) else f"{kind}: {exc}"
        try:
            sock.send(pickle.dumps({"error": message, "kind": kind}))
        except OSError:
            return
    # Exiting with the parent's acknowledgements unread would reset the connection, and the parent could lose
    # the last message: wait for the parent to close its end.
    try:
        while sock.recv(16):
            pass
    except OSError:
        pass


def _send_block(sock: socket.socket, block, columns: list[str]) -> None:
    rows = len(block.lines)
    parts: dict[str, bytes | None] = {"X": None, "body": block.body}
    if not block.plain:
        joined = b"".join(block.lines)
        parts["body"] = joined
        parts["ends"] = np.cumsum([len(ln) for ln in block.lines], dtype=np.int64).tobytes()
    sizes = {"X": rows * len(columns) * 8, **{k: len(v) for k, v in parts.items() if v is not None}}
    sections, offset = {}, 0
    for name, size in sizes.items():
        sections[name] = (offset, size)
        offset += -(-size // 8) * 8  # 8-byte aligned, for the float64 and int64 sections
    size = max(offset, 1)
    fd = os.memfd_create("anomaly-block", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as mm:
            X = np.ndarray((rows, len(columns)), np.float64, mm, sections["X"][0])
            for j, c in enumerate(columns):  # column by column into C order (the scaler's fast order)
                X[:, j] = block.frame[c].to_numpy(np.float64)
            del X
            for name, value in parts.items():
                if value is not None:
                    start, length = sections[name]
                    mm[start:start + length] = value
        socket.send_fds(sock, [pickle.dumps({"start": block.start, "rows": rows, "size": size, "plain": block.plain,
                                              "sections": sections})], [fd])
    finally:
        os.close(fd)
