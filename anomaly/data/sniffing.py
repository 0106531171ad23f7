"""How a data file is written, from its first lines: delimiter (comma, tab, semicolon or whitespace), header row,
BOM, gzip, and a delimiter at the end of every row. A header that cannot name the rows below it (written with
another delimiter, or with a quote never closed) is refused here, before anything else is read."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

from .. import limits
from ..errors import DataError, NotFound
from .csvread import CsvFormat, read_head

DELIMITERS = (",", "\t", ";")


def check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise NotFound(f"file not found: {p}") from None
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a loop of links, no permission
        raise DataError(f"cannot read {str(p)[:300]}: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{p} is a directory, not a data file")
    if st.st_size == 0 and stat.S_ISREG(st.st_mode):
        raise DataError(f"{p} is empty")
    return p


def _is_number(token: str) -> bool:
    token = token.strip().strip('"')
    if token == "":
        return True
    try:
        float(token)
        return True
    except ValueError:
        return False


def _spaces_inside_numbers(line: str) -> bool:
    """True when a tab-separated field holds several numbers: the spaces separate columns too."""
    return all(_is_number(t) for t in line.split()) and any(len(f.split()) > 1 for f in line.split("\t"))


def sniff(path: str | os.PathLike) -> CsvFormat:
    """Decide delimiter, header and encoding from the first lines (at least 64 KiB, and the header whole)."""
    p = check_file(path)
    head, compression, whole = read_head(p)
    bom = head.startswith(b"\xef\xbb\xbf")
    if bom:
        head = head[3:]
    if not whole and b"\n" in head:
        head = head[: head.rfind(b"\n") + 1]  # the last line may be cut where reading stopped
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte char cut at the sniff boundary
            raise DataError(f"{p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
        text = head[: exc.start].decode("utf-8")
    if "\r" in text and "\n" not in text and text.rstrip("\r").count("\r"):
        # pandas would read such a file whole and the block reader not at all: one contract, refuse it for both
        raise DataError(f"{p} uses CR-only line endings (classic Mac); save it with LF or CRLF line endings")
    numbered = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    lines = [ln for _, ln in numbered]
    if not lines:
        raise DataError(f"{p} holds no data (only blank lines)")
    delimiter = _delimiter(lines[:50])
    split = (lambda ln: ln.split()) if delimiter == "whitespace" else (lambda ln: next(csv.reader([ln], delimiter=delimiter)))
    first = split(lines[0])
    if len(first) > limits.MAX_COLUMNS:
        raise DataError(f"{p} has {len(first)} columns, more than {limits.MAX_COLUMNS}, the limit for a data file")
    has_header = not all(_is_number(t) for t in first)
    header_line = trailing = None
    if has_header:
        _check_header(p, numbered[0], lines[1:50], delimiter)
        rows = [split(ln) for ln in lines[1:50]]
        # A delimiter at the end of every row (spreadsheet and ERP exports): an empty last field, not a column.
        if first[-1].strip() == "" and len(first) > 1 and rows and all(len(r) == len(first) and not r[-1].strip() for r in rows):
            first = first[:-1]  # the header ends in one too
            trailing = True
        elif rows and all(len(r) == len(first) + 1 and not r[-1].strip() for r in rows):
            trailing = True
        names = tuple(_unique_names([t.strip() for t in first]))
        header_line = lines[0].encode().rstrip(b"\r")
    else:
        names = tuple(f"col_{i}" for i in range(len(first)))
        trailing = delimiter != "whitespace" and len(first) > 1 and not first[-1].strip() and all(
            not split(ln)[-1].strip() for ln in lines[1:50])
        if trailing:
            names = names[:-1]
    if has_header and len(lines) == 1:
        raise DataError(f"{p} has a header row but no data rows")
    return CsvFormat(delimiter, has_header, names, compression, bom, header_line, bool(trailing))


def _delimiter(lines: list[str]) -> str:
    """The delimiter of these lines: one of DELIMITERS found the same number of times on each, else csv.Sniffer's
    guess, else whitespace."""
    for cand in DELIMITERS:
        counts = {ln.count(cand) for ln in lines}
        if len(counts) == 1 and counts != {0}:
            if cand == "\t" and any(_spaces_inside_numbers(ln) for ln in lines[1:]):
                return "whitespace"  # columns aligned with a mix of spaces and tabs: "1  10\t 100"
            return cand
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines), delimiters=",\t;").delimiter
    except csv.Error:
        delimiter = "whitespace"
    if delimiter not in DELIMITERS or all(delimiter not in ln for ln in lines):
        delimiter = "whitespace"
    # One delimiter on every line but in varying numbers is a malformed CSV (the reader says which line),
    # not a one-column whitespace file.
    present = [c for c in DELIMITERS if all(c in ln for ln in lines)]
    if delimiter == "whitespace" and len(present) == 1:
        delimiter = present[0]
    return delimiter


def _check_header(p: Path, numbered_header: tuple[int, str], rows: list[str], delimiter: str) -> None:
    """A header that cannot be the names of the rows below it: written with another delimiter than the data, or
    with a quote that is never closed (either made one name of the whole line, and the rows then shifted)."""
    line_no, header = numbered_header
    for used in DELIMITERS:
        for data_delim in DELIMITERS:
            if used != data_delim and used in header and data_delim not in header and rows and all(
                    data_delim in r and used not in r for r in rows):
                raise DataError(f"{p}: the header (line {line_no}) separates its names with {used!r} but the data "
                                f"rows use {data_delim!r}; save the file with one delimiter")
    if delimiter != "whitespace" and header.count('"') % 2:
        raise DataError(f"{p}: the header (line {line_no}) has a quote (\") that is never closed; fix the quoting "
                        "of the column names")


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, n in enumerate(names):
        n = n or f"col_{i}"
        if n in seen:
            seen[n] += 1
            n = f"{n}.{seen[n]}"
        else:
            seen[n] = 0
        out.append(n)
    return out
