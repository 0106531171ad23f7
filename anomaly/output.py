"""Writing per-row results: CSV (the input lines passed through byte for byte, result columns appended),
JSON and JSON Lines. Files are written to a temporary name and renamed at the end, so a failed run never
leaves a half-written result file.

CSV output appends to the raw input lines instead of re-serialising a DataFrame: the user's timestamps,
IDs and number formatting survive untouched, and it is far faster than `DataFrame.to_csv`
(docs/decisions/0012-detection-fast-paths.md).
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from . import jsonsafe
from .data import CsvFormat
from .errors import DataError
from .store import umask

_DIGITS = np.frombuffer(b"0123456789", np.uint8)


def scientific_digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`%.6e`-style text of non-negative floats, vectorised (Python's formatting, value by value, dominated
    writing a large file: docs/decisions/0012-detection-fast-paths.md), as a
    (n, 12) byte matrix, and the mask of values it holds: NaN, negative, infinite or huge values are not (their
    rows are left unspecified)."""
    v = np.asarray(values, np.float64)
    n = len(v)
    ok = np.isfinite(v) & (v >= 0) & (v < 1e99) & ((v == 0) | (v > 1e-300))  # 10**exp must not underflow
    safe = np.where(ok & (v > 0), v, 1.0)
    exp = np.floor(np.log10(safe)).astype(np.int64)
    mant = np.rint(safe / np.power(10.0, exp) * 1e6).astype(np.int64)
    carry = mant >= 10_000_000
    mant = np.where(carry, np.rint(safe / np.power(10.0, exp + 1) * 1e6).astype(np.int64), mant)
    exp = exp + carry
    low = mant < 1_000_000  # float error just below a power of ten
    mant = np.where(low, np.rint(safe / np.power(10.0, exp - 1) * 1e6).astype(np.int64), mant)
    exp = exp - low
    zero = ok & (v == 0)
    mant[zero], exp[zero] = 0, 0
    out = np.empty((n, 12), np.uint8)
    out[:, 0] = _DIGITS[mant // 1_000_000]
    out[:, 1] = ord(".")
    frac = mant % 1_000_000
    for i in range(6):
        out[:, 7 - i] = _DIGITS[frac % 10]
        frac //= 10
    out[:, 8] = ord("e")
    out[:, 9] = np.where(exp < 0, ord("-"), ord("+"))
    a = np.abs(exp)
    out[:, 10] = _DIGITS[a // 10]
    out[:, 11] = _DIGITS[a % 10]
    return out, ok


def format_scientific(values: np.ndarray) -> list[bytes]:
    """`%.6e`-style bytes for non-negative floats (`scientific_digits`); NaN becomes an empty field, negative,
    infinite or huge values fall back to Python formatting."""
    digits, ok = scientific_digits(values)
    result = digits.view("S12").ravel().tolist()
    for i in np.flatnonzero(~ok):
        x = float(values[i])
        result[i] = b"" if np.isnan(x) else f"{x:.6e}".encode()
    return result


class ResultWriter:
    """Streams result rows to `path`: .csv/.txt (pass-through), .json, or .jsonl.

    A regular file (or a new name) is written to a temporary name beside it and renamed into place at the end,
    keeping an existing file's permissions; a symlink is written through to its target (the link stays a link);
    a FIFO or character device (`/dev/stdout`, a named pipe) is streamed to directly; anything else (a block
    device, a socket, the input file itself) is refused."""

    def __init__(self, path: str | os.PathLike, fmt: CsvFormat, header_line: bytes | None, extra_columns: list[str],
                 source: str | os.PathLike | None = None):
        self.path = Path(path)
        self.kind = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(self.path.suffix.lower(), "csv")
        self.fmt, self.extra = fmt, extra_columns
        self.delim = fmt.out_delimiter.encode()
        self.target, self.tmp = self._open_target(source)
        # one write in flight on a helper thread: writing releases the GIL, so the next block is scored meanwhile
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="result-writer")
        self.in_flight = None
        self.first = True
        try:
            if self.kind == "csv":
                header = header_line if header_line is not None else self.delim.join(n.encode() for n in fmt.names)
                if fmt.trailing and header.endswith(self.delim):  # its empty last name was dropped, as the rows' field
                    header = header[: -len(self.delim)]
                self._write_async(header + b"".join(self.delim + c.encode() for c in extra_columns) + b"\n")
            elif self.kind == "json":
                self._write_async(b'{"results": [\n')
        except BaseException:  # Ctrl-C or SIGTERM this early: no caller holds the writer to abort it
            self.abort()
            raise

    def _open_target(self, source) -> tuple[Path, str | None]:
        """Open the file to write: (the real target, the temporary file renamed onto it at the end or None)."""
        target = Path(os.path.realpath(self.path))  # through symlinks: the link stays, its target gets the rows
        try:
            st = os.stat(self.path)  # follows links, /dev/stdout's included
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise self._error(exc) from None
        if st is not None:
            if source is not None and os.path.samestat(st, os.stat(source)):
                raise DataError(f"cannot write output {self.path}: it is the input file; give another name")
            if stat.S_ISDIR(st.st_mode):
                raise DataError(f"cannot write output {self.path}: it is a folder; give a file name such as results.csv")
            if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
                try:  # a pipe or a terminal: there is nothing to replace, rows go straight to it
                    self.f = open(self.path, "wb", buffering=1 << 20)
                except OSError as exc:
                    raise self._error(exc) from None
                return target, None
            if not stat.S_ISREG(st.st_mode):
                raise DataError(f"cannot write output {self.path}: it is not a regular file")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(target)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:100]}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise self._error(exc) from None
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~umask())
            self.f = os.fdopen(fd, "wb", buffering=1 << 20)
        except BaseException as exc:  # an OS refusal, or Ctrl-C / SIGTERM right now: leave no temporary file
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise self._error(exc) from None
            raise
        return target, tmp

    def _error(self, exc: OSError) -> DataError:
        return DataError(f"cannot write output {self.path}: {exc.strerror or exc}")

    def write(self, start: int, raw_lines: list[bytes], frame: pd.DataFrame | None, columns: dict[str, np.ndarray]) -> None:
        """Rows `start..start+len(raw_lines)` with result `columns` (name -> array, one value per row)."""
        if self.kind == "csv":
            self._write_csv(raw_lines, columns)
        else:
            self._write_json(start, frame, columns)

    def _write_csv(self, raw_lines: list[bytes], columns: dict[str, np.ndarray]) -> None:
        self._write_async(self._csv_bytes(raw_lines, columns))

    def _csv_bytes(self, raw_lines: list[bytes], columns: dict[str, np.ndarray]) -> bytes:
        suffix = self._suffixes(len(raw_lines), columns)
        out = self._join(raw_lines, suffix)
        # The result columns hold no delimiter, so one count over the block finds out whether a line is short
        # (numpy counts the one-byte delimiter faster than bytes.count: docs/decisions/0012-detection-fast-paths.md)
        if self._pads() and (np.count_nonzero(np.frombuffer(out, np.uint8) == self.delim[0])
                             != (len(self.fmt.names) - 1 + len(columns)) * len(raw_lines)):
            out = self._join(self._pad_short_lines(raw_lines), suffix)
        return out

    def _suffixes(self, n: int, columns: dict[str, np.ndarray]) -> list[bytes]:
        """Each row's appended text: the delimiter and value of every result column, then the line end. Built
        as one fixed-width byte matrix (numbers as `%.6e`, flags as 0/1): numpy's string concatenation took
        three times as long. A NaN (an unscored row) or a value `scientific_digits` does not hold makes the
        widths vary: those rows are assembled one by one."""
        pieces, odd = [], np.zeros(n, bool)
        delim = np.frombuffer(self.delim, np.uint8)
        for name, values in columns.items():
            pieces.append(np.broadcast_to(delim, (n, len(delim))))
            if values.dtype.kind in "iub":
                pieces.append((values != 0).astype(np.uint8)[:, None] + ord("0"))
                continue
            if name == "threshold":  # constant over long runs of rows: format each run's value once
                starts = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1] if n else np.zeros(0, int)
                lengths = np.diff(np.r_[starts, n])
                digits, ok = (np.repeat(a, lengths, axis=0) for a in scientific_digits(values[starts]))
            else:
                digits, ok = scientific_digits(values)
            pieces.append(digits)
            odd |= ~ok
        pieces.append(np.full((n, 1), ord("\n"), np.uint8))
        rows = np.hstack(pieces)
        suffix = rows.view(f"S{rows.shape[1]}").ravel().tolist()  # ends in a line end: no NUL is stripped
        if odd.any():  # those rows' values formatted together, column by column, as `format_scientific` does
            rows_at = np.flatnonzero(odd)
            texts = [[b"1" if x else b"0" for x in v[rows_at] != 0] if v.dtype.kind in "iub"
                     else format_scientific(v[rows_at]) for v in columns.values()]
            for j, i in enumerate(rows_at):
                suffix[i] = b"".join(self.delim + text[j] for text in texts) + b"\n"
        return suffix

    @staticmethod
    def _join(raw_lines: list[bytes], suffix: list[bytes]) -> bytes:
        parts: list[bytes] = [b""] * (2 * len(raw_lines))
        parts[0::2] = raw_lines
        parts[1::2] = suffix
        return b"".join(parts)

    def _pads(self) -> bool:
        return self.fmt.delimiter != "whitespace" and len(self.fmt.names) >= 2

    def _pad_short_lines(self, raw_lines: list[bytes]) -> list[bytes]:
        """A line with fewer fields than the header (a truncated last line: its rest is missing) gets empty
        fields, and one with empty fields past the header's (a trailing delimiter: the reader dropped them)
        loses them, so the result columns land under their own names."""
        want = len(self.fmt.names) - 1
        out = []
        for ln in raw_lines:
            n = ln.count(self.delim)
            if n < want:
                ln += self.delim * (want - n)
            elif n > want and ln.endswith(self.delim * (n - want)):
                ln = ln[: len(ln) - (n - want) * len(self.delim)]
            out.append(ln)
        return out

    def _write_async(self, data: bytes) -> None:
        self._wait()
        self.in_flight = self.pool.submit(self.f.write, data)

    def _wait(self) -> None:
        if self.in_flight is not None:
            future, self.in_flight = self.in_flight, None
            try:
                future.result()
            except OSError as exc:  # a full disk, /dev/full, a pipe whose reader left
                raise self._error(exc) from None

    def _drain(self) -> None:
        try:
            self._wait()
        finally:
            self.pool.shutdown()

    def _write_json(self, start: int, frame: pd.DataFrame, columns: dict[str, np.ndarray]) -> None:
        out = frame.copy()
        out.insert(0, "index", np.arange(start, start + len(frame)))
        for name, values in columns.items():
            out[name] = values.astype(bool) if values.dtype.kind in "iub" else values.astype(np.float64)
        if self.kind == "jsonl":
            text = out.to_json(orient="records", lines=True, double_precision=10).encode()
            self._write_async(text + (b"\n" if not out.empty else b""))
            return
        body = out.to_json(orient="records", double_precision=10)[1:-1]
        if body:
            self._write_async((b"" if self.first else b",\n") + body.encode())
            self.first = False

    def close(self, summary: dict) -> None:
        try:
            if self.kind == "json":
                rest = jsonsafe.dumps({k: v for k, v in summary.items() if k != "results"})[1:]
                self._write_async(b"\n]" + (b", " + rest.encode() if rest != "}" else b"}"))
            self._drain()
            self.f.close()
            if self.tmp is not None:
                os.replace(self.tmp, self.target)
        except OSError as exc:  # e.g. a folder of that name appeared meanwhile, or the disk is full
            self.abort()
            raise self._error(exc) from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            self._drain()
        except (OSError, DataError):
            pass
        try:
            self.f.close()
        except OSError:
            pass
        if self.tmp is not None:
            Path(self.tmp).unlink(missing_ok=True)


def remove_stale_temp_files(target: Path) -> None:
    """Temporary files of earlier writes of `target` whose writer was killed (kill -9): their process is gone."""
    from .store import writer_gone

    for tmp in target.parent.glob(f".{glob.escape(target.name[:100])}.*.tmp"):
        pid = tmp.name[len(target.name[:100]) + 2:].split(".", 1)[0]
        if pid.isdigit() and writer_gone(int(pid), tmp):
            tmp.unlink(missing_ok=True)
