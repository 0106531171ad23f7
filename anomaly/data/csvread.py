"""The one reader of data rows: a CSV/TXT file (plain or gzip) as consecutive blocks of whole lines, each parsed
by pandas. Training (`data.read_table`), detection (`pipeline`), evaluation, fleets and the server's uploads all
read through here, so a file one of them accepts the others accept too, and the limits of `anomaly.limits`
hold for all of them: a line, a header and a decompressed stream are bounded while they are read.

A row never shifts its columns: pandas is given the header's names plus two guard columns (`EXTRA`) and no
index; a value in a guard column is a row with more fields than the header, refused with its line number.
Empty fields past the header's (a trailing delimiter, as spreadsheet and ERP exports write) are dropped.
"""

from __future__ import annotations

import io
import operator
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .. import limits
from ..errors import DataError
from .rawfile import SNIFF_BYTES, _read_chunk, compression_of, line_too_long, open_bytes, read_head  # noqa: F401

# Bytes of text per block that detection reads, scores and writes at a time (training reads through the same
# reader). Small enough that each block's arrays are reused from the heap: with much larger blocks every block
# touched fresh pages, and page faults cost more than parsing. Smaller still, per-block overheads win
# (docs/decisions/0006-4-mib-blocks.md).
BLOCK_BYTES = 4 << 20
# Guard columns after the header's names: pandas fills them from a row's surplus fields instead of turning
# leading fields into an index (which shifted every column). NUL cannot be in a name read from a text header.
EXTRA = ("\x00extra_1", "\x00extra_2")
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CsvFormat:
    """How to parse a file: everything pandas needs, decided once from the file's first lines (`data.sniff`)."""

    delimiter: str  # "," "\t" ";" or "whitespace"
    has_header: bool
    names: tuple[str, ...]  # column names (synthesised as col_0.. when there is no header)
    compression: str | None  # "gzip" or None
    bom: bool
    header_line: bytes | None = None  # the header row as it is in the file (no BOM, no line ending)
    trailing: bool = False  # every row ends in a delimiter: an empty last field, dropped

    @property
    def sep(self) -> str:
        return r"\s+" if self.delimiter == "whitespace" else self.delimiter

    @property
    def out_delimiter(self) -> str:
        return " " if self.delimiter == "whitespace" else self.delimiter


def read_kwargs(fmt: CsvFormat) -> dict:
    return dict(
        sep=fmt.sep,
        header=None,
        names=[*fmt.names, *EXTRA],
        index_col=False,
        skiprows=0,
        engine="c",
        encoding="utf-8",
        skip_blank_lines=True,
        low_memory=True,
    )


# --- Blocks of whole lines --------------------------------------------------------------------------------


@dataclass
class Block:
    """A run of whole data lines: the raw bytes (for pass-through output) and the parsed frame."""

    start: int  # index of the first row in the file (0-based, data rows only)
    raw_lines: list[bytes]  # each line without its terminator
    frame: pd.DataFrame
    texts: dict | None = None  # text columns read apart from the frame (`LineTexts`)
    headers_skipped: int = 0  # lines equal to the header (concatenated files, multi-member gzip): left out

    def text(self, column: str):
        """A text column's values as strings (NaN where empty), indexable row by row."""
        if self.texts is not None and column in self.texts:
            return self.texts[column]
        return self.frame[column].astype(str).to_numpy()


def _skip_preamble(f, fmt: CsvFormat, p: Path) -> int:
    """Read past the BOM, blank lines and the header; returns the number of lines read."""
    if fmt.bom:
        _read_chunk(f, 3, p)
    if not fmt.has_header:
        return 0
    n = 0
    while True:
        line = _read_chunk(f, limits.MAX_LINE_BYTES + 1, p, line=True)
        n += 1
        if len(line) > limits.MAX_LINE_BYTES:
            raise line_too_long(p, n)
        if not line or line.strip():
            return n


def _drop_repeated_headers(lines: list[bytes], header: bytes) -> list[bytes]:
    """The lines without those that repeat the header (a second file's header, with or without its BOM)."""
    return [ln for ln in lines if ln != header and not (ln.startswith(BOM) and ln[3:] == header)]


def _check_line_lengths(body: bytes, p: Path, first_line: int) -> None:
    """Refuse a line longer than limits.MAX_LINE_BYTES. Such a line holds a whole aligned window of half that
    size without a line break: a few `find`s per block, not a look at every line."""
    limit = limits.MAX_LINE_BYTES
    if len(body) <= limit:
        return
    step = limit // 2
    for start in range(0, len(body), step):
        if body.find(b"\n", start, start + step) < 0:
            begin = body.rfind(b"\n", 0, start) + 1
            end = body.find(b"\n", start + step)
            if (len(body) if end < 0 else end) - begin > limit:
                raise line_too_long(p, first_line + body.count(b"\n", 0, begin))


def iter_blocks(path: str | os.PathLike, fmt: CsvFormat, numeric_cols: list[str], block_bytes: int = BLOCK_BYTES,
                all_columns: bool = True, text_cols: list[str] = (),
                lazy_text_cols: list[str] = ()) -> Iterator[Block]:
    """Yield consecutive blocks of data rows; memory stays bounded whatever the file size. Without
    `all_columns` the frame holds only `numeric_cols` (turning text columns into objects costs time).
    `lazy_text_cols` are read from a block's lines only for the rows asked for (`Block.text`, `LineTexts`).
    This is the one reader of data rows: training (`read_table`) and detection both go through it."""
    p = Path(path)
    dtype = {c: np.float32 for c in numeric_cols}
    usecols = None if all_columns else list(dict.fromkeys([*numeric_cols, *text_cols]))
    header = fmt.header_line
    row = 0
    with open_bytes(p, fmt.compression) as f:
        line_no = _skip_preamble(f, fmt, p)  # lines read so far
        carry = b""
        while True:
            chunk = _read_chunk(f, block_bytes, p)
            data = carry + chunk
            if not chunk:
                carry, body = b"", data
            else:
                body, carry = _split_at_record_end(data)
                if len(carry) > limits.MAX_LINE_BYTES and b"\n" not in carry:
                    raise line_too_long(p, line_no + body.count(b"\n") + 1)
                if not body and len(carry) > 4 * block_bytes + SNIFF_BYTES:  # an unbalanced quote runs on and on
                    raise DataError(f"malformed CSV in {p}: a quoted field opened on line {line_no + 1} is never "
                                    "closed")
            first_line = line_no + 1
            if body and not body.isspace():
                _check_line_lengths(body, p, first_line)
                lines = body.split(b"\n")
                if lines and lines[-1] == b"":
                    lines.pop()
                line_no += len(lines)
                crlf = bool(lines) and lines[0].endswith(b"\r")
                if crlf:
                    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
                skipped = 0
                if header is not None and header in body:
                    kept = _drop_repeated_headers(lines, header)
                    skipped, lines = len(lines) - len(kept), kept
                    if skipped:  # parsed without them; line numbers in errors are of the lines left
                        body = b"\n".join(lines) + b"\n" if lines else b""
                raw = lines
                if not all(lines):  # pandas skips blank (and whitespace-only) lines; so do we
                    lines = [ln for ln in lines if ln.strip()]
                if lines:
                    texts = None
                    # pandas skips blank lines and handles CRLF itself, so the block is parsed as it is
                    frame = _parse_block(body, fmt, dtype, p, usecols, text_cols, first_line)
                    if len(frame) != len(lines) and b'"' in body:
                        lines = _quoted_records(raw)  # a quoted field spans lines: one record, several lines
                        if crlf and lazy_text_cols:  # its records lost their inner CR: parse the columns now
                            parsed = _parse_block(body, fmt, {}, p, list(lazy_text_cols), list(lazy_text_cols))
                            texts = {c: parsed[c].astype(str).to_numpy() for c in lazy_text_cols}
                    if len(frame) != len(lines):
                        raise DataError(f"malformed CSV in {p}: line structure around line {first_line} could not "
                                        "be read")
                    yield Block(row, lines, frame, texts or {c: LineTexts(lines, p, fmt, c) for c in lazy_text_cols},
                                skipped)
                    row += len(lines)
            else:
                line_no += body.count(b"\n")
            if not chunk:
                break


_NA_WORDS = frozenset(pd._libs.parsers.STR_NA_VALUES)  # read as missing by pandas: left to its parser

class LineTexts:
    """A text column (the time column) of a block, read from its raw lines only for the rows asked for: the
    summary names the times of a few rows per block, and parsing the whole column cost more than the numbers.
    Each line is parsed by the same parser as a whole block (a line is a whole record), so the values match."""

    MANY = 64  # single rows asked for before the whole column is parsed at once
    # one single-row parse costs about as much as parsing ~4,000 lines of the column at once (pandas' fixed cost)
    LINES_PER_PARSE = 4096

    def __init__(self, lines: list[bytes], path: Path, fmt: CsvFormat, column: str):
        self.lines, self.path, self.fmt, self.column = lines, path, fmt, column
        self.values: np.ndarray | None = None
        self.asked = 0
        self.many = min(self.MANY, len(lines) // self.LINES_PER_PARSE)  # small blocks: the whole column at once
        plain = fmt.delimiter != "whitespace" and column in fmt.names
        self.delim = fmt.delimiter.encode() if plain else None
        self.at = list(fmt.names).index(column) if plain else -1

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i):
        if self.values is None:
            line = self.lines[operator.index(i)]
            value = self._plain_field(line)
            if value is not None:
                return value
            if self.asked < self.many:
                self.asked += 1
                return self._parse([line])[0]
        return self.__array__()[i]

    def _plain_field(self, line: bytes) -> str | None:
        """The field cut straight from a line with no quotes, where that is what pandas reads too (not empty,
        not one of pandas' missing-value words); None: leave it to the parser."""
        if self.delim is None or b'"' in line:
            return None
        fields = line.rstrip(b"\r\n").split(self.delim)
        if len(fields) < len(self.fmt.names) or any(fields[len(self.fmt.names):]):  # short, or surplus values
            return None
        try:
            value = fields[self.at].decode()
        except UnicodeDecodeError:
            return None
        return value if value and value not in _NA_WORDS else None

    def __iter__(self):
        return iter(self.__array__())

    def __array__(self, dtype=None, copy=None):
        if self.values is None:
            self.values = self._parse(self.lines)
        return self.values if dtype is None else self.values.astype(dtype)

    def _parse(self, lines: list[bytes]) -> np.ndarray:
        frame = _parse_block(b"\n".join(lines) + b"\n", self.fmt, {}, self.path, [self.column], [self.column])
        return frame[self.column].astype(str).to_numpy()


def _split_at_record_end(data: bytes) -> tuple[bytes, bytes]:
    """(whole records, the rest): cut after the last newline that is not inside a quoted field."""
    cut = data.rfind(b"\n") + 1
    quotes = data.count(b'"', 0, cut)  # counted once, then stepped back line by line: linear, not quadratic
    while cut and quotes % 2:
        prev = data.rfind(b"\n", 0, cut - 1) + 1
        quotes -= data.count(b'"', prev, cut)
        cut = prev
    return data[:cut], data[cut:]


def _quoted_records(lines: list[bytes]) -> list[bytes]:
    """Lines joined into records where a quoted field holds line breaks (an odd number of quotes so far)."""
    records, current = [], None
    for ln in lines:
        current = ln if current is None else current + b"\n" + ln
        if current.count(b'"') % 2 == 0:
            if current.strip():
                records.append(current)
            current = None
    if current is not None and current.strip():
        records.append(current)
    return records


def _parse_block(body: bytes, fmt: CsvFormat, dtype: dict, p: Path, usecols: list[str] | None = None,
                 text_cols: list[str] = (), first_line: int = 1) -> pd.DataFrame:
    """One block's rows. Read whole, the guard columns (`EXTRA`) catch a row with more values than the header;
    read for some columns only (pandas then drops surplus fields without a word, and refuses names past the
    fields it finds), a count of the delimiters says whether the block must be read whole to check."""
    # Parsed as float64 and narrowed by the caller: pandas' C parser is slower when asked for float32.
    kwargs = read_kwargs(fmt) | {"dtype": {c: str for c in text_cols if c not in dtype} or None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            warnings.simplefilter("ignore", pd.errors.ParserWarning)  # a first row too long: the guards say so
            frame = None
            if usecols is not None and fmt.delimiter != "whitespace":
                try:
                    frame = pd.read_csv(io.BytesIO(body), **(kwargs | {"names": list(fmt.names), "usecols": usecols}))
                except pd.errors.ParserError:
                    pass  # pandas refuses `usecols` when a block's first line is short (a truncated last line)
            if frame is None or _surplus_possible(body, fmt, len(frame)):
                whole = pd.read_csv(io.BytesIO(body), **kwargs)
                over = whole[EXTRA[0]].notna().to_numpy() | whole[EXTRA[1]].notna().to_numpy()
                if over.any():
                    raise _too_many_fields(p, fmt, _line_of(body, int(np.argmax(over)), first_line))
                if frame is None:
                    frame = whole[usecols] if usecols is not None else whole.drop(columns=list(EXTRA))
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text") from None
    except ValueError as exc:  # ParserError, or a row whose fields do not match the header's names
        msg = " ".join(str(exc).split())
        surplus = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", msg)
        if surplus:
            raise _too_many_fields(p, fmt, first_line + int(surplus[1]) - 1, int(surplus[2])) from None
        raise DataError(f"malformed CSV in {p}: {msg}") from None
    for c in dtype:
        if not pd.api.types.is_numeric_dtype(frame[c]):  # a stray word: unparsable values become missing
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _surplus_possible(body: bytes, fmt: CsvFormat, rows: int) -> bool:
    """Whether a row of the block may have more fields than the header: its delimiters are not exactly one
    fewer than the columns on every row (plus the trailing one). Quoted delimiters and short rows read whole too."""
    found = np.count_nonzero(np.frombuffer(body, np.uint8) == ord(fmt.delimiter))
    return found != rows * (len(fmt.names) - 1 + fmt.trailing)


def _too_many_fields(p: Path, fmt: CsvFormat, line: int, fields: int | None = None) -> DataError:
    what = "more fields than" if fields is None else f"{fields} fields, more than"
    return DataError(f"malformed CSV in {p}: line {line} has {what} the header's {len(fmt.names)} columns "
                     f"({', '.join(fmt.names[:5])}{', ...' if len(fmt.names) > 5 else ''}); every row must "
                     "have one value per column")


def _line_of(body: bytes, record: int, first_line: int) -> int:
    """The file line of a block's `record`-th non-blank line (for error messages only)."""
    seen = -1
    for i, line in enumerate(body.split(b"\n")):
        if line.strip():
            seen += 1
            if seen == record:
                return first_line + i
    return first_line
