"""Reading users' CSV/TXT files: one loader for training, detection, evaluation and the server.

Delimiter (comma, tab, semicolon, whitespace), header row and BOM are sniffed from the first bytes; `.gz` is
read transparently. Numeric columns are features, read as float64 (a value beyond float32's range is a huge value,
never a missing one); other columns (timestamps, IDs, text) are carried along untouched. A `label` column is never
a feature. Training and detection read files through the same block reader (`iter_blocks`), so a file one of them
accepts the other accepts too.
"""

from __future__ import annotations

import csv
import gzip
import io
import operator
import os
import stat
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .errors import DataError, NotFound

MISSING_POLICIES = ("interpolate", "drop", "error")
LABEL_NAMES = ("label", "is_anomaly_label", "anomaly_label")
# Numeric columns with these names are row identifiers or clocks, not measurements.
NON_FEATURE_NAMES = {"id", "index", "idx", "row", "timestamp", "time", "date", "datetime", "epoch", "unnamed: 0"}
SNIFF_BYTES = 64 * 1024
# Bytes of text per block that detection reads, scores and writes at a time (training reads through the same
# reader). Small enough that each block's arrays are reused from the heap: with 32 MiB blocks (~176,000 rows of 20
# columns) every block touched fresh pages, and page faults cost more than parsing (1M rows: 297k faults, 2.1 s
# of system time; 4 MiB: 115k, 0.6 s; peak RSS 1.14 -> 0.46 GiB). Smaller still, per-block overheads win.
BLOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class CsvFormat:
    """How to parse a file: everything pandas needs, decided once from the file's first bytes."""

    delimiter: str  # "," "\t" ";" or "whitespace"
    has_header: bool
    names: tuple[str, ...]  # column names (synthesised as col_0.. when there is no header)
    compression: str | None  # "gzip" or None
    bom: bool
    header_line: bytes | None = None  # the header row as it is in the file (no BOM, no line ending)

    @property
    def sep(self) -> str:
        return r"\s+" if self.delimiter == "whitespace" else self.delimiter

    @property
    def out_delimiter(self) -> str:
        return " " if self.delimiter == "whitespace" else self.delimiter


@dataclass
class Table:
    """A loaded file: the full frame (for output), the feature matrix and what was done to get it."""

    frame: pd.DataFrame
    features: list[str]
    X: np.ndarray  # (rows, features) float64, missing (NaN) values already handled; inf is kept
    labels: np.ndarray | None = None
    time_column: str | None = None
    row_mask: np.ndarray | None = None  # rows kept when missing="drop" (None = all rows)
    report: dict = field(default_factory=dict)


def _open_text_head(path: Path) -> tuple[bytes, str | None]:
    with open(path, "rb") as raw:
        magic = raw.read(2)
    compression = "gzip" if magic == b"\x1f\x8b" else None
    opener = gzip.open if compression else open
    try:
        with opener(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read compressed file ({exc})") from None
    return head, compression


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
    """Decide delimiter, header and encoding from the first 64 KiB."""
    p = check_file(path)
    head, compression = _open_text_head(p)
    bom = head.startswith(b"\xef\xbb\xbf")
    if bom:
        head = head[3:]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte char cut at the sniff boundary
            raise DataError(f"{p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
        text = head[: exc.start].decode("utf-8")
    if "\r" in text and "\n" not in text and text.rstrip("\r").count("\r"):
        # pandas would read such a file whole and the block reader not at all: one contract, refuse it for both
        raise DataError(f"{p} uses CR-only line endings (classic Mac); save it with LF or CRLF line endings")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(text) == len(head.decode("utf-8", "ignore")) and len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut at the sniff boundary
    if not lines:
        raise DataError(f"{p} holds no data (only blank lines)")
    sample = "\n".join(lines[:50])
    delimiter = None
    for cand in (",", "\t", ";"):
        counts = {ln.count(cand) for ln in lines[:50]}
        if len(counts) == 1 and counts != {0}:
            delimiter = cand
            break
    if delimiter == "\t" and any(_spaces_inside_numbers(ln) for ln in lines[1:50]):
        delimiter = "whitespace"  # columns aligned with a mix of spaces and tabs: "1  10\t 100"
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",\t;").delimiter
        except csv.Error:
            delimiter = "whitespace"
        if delimiter not in (",", "\t", ";") or all(delimiter not in ln for ln in lines[:50]):
            delimiter = "whitespace"
        # One delimiter on every line but in varying numbers is a malformed CSV (pandas says which line),
        # not a one-column whitespace file.
        present = [c for c in (",", "\t", ";") if all(c in ln for ln in lines[:50])]
        if delimiter == "whitespace" and len(present) == 1:
            delimiter = present[0]
    split = (lambda ln: ln.split()) if delimiter == "whitespace" else (lambda ln: next(csv.reader([ln], delimiter=delimiter)))
    first = split(lines[0])
    has_header = not all(_is_number(t) for t in first)
    if has_header:
        names = tuple(_unique_names([t.strip() for t in first]))
    else:
        names = tuple(f"col_{i}" for i in range(len(first)))
    if has_header and len(lines) == 1:
        raise DataError(f"{p} has a header row but no data rows")
    header_line = head.split(b"\n", 1)[0].rstrip(b"\r") if has_header else None
    return CsvFormat(delimiter, has_header, names, compression, bom, header_line)


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


def _read_kwargs(fmt: CsvFormat) -> dict:
    return dict(
        sep=fmt.sep,
        header=None,
        names=list(fmt.names),
        skiprows=1 if fmt.has_header else 0,
        engine="c",
        encoding="utf-8-sig" if fmt.bom else "utf-8",
        skip_blank_lines=True,
        low_memory=False,
    )


def _parse(source, fmt: CsvFormat, dtype: dict | None, compression=None, usecols=None, nrows=None) -> pd.DataFrame:
    try:
        return pd.read_csv(source, compression=compression, dtype=dtype, usecols=usecols, nrows=nrows, **_read_kwargs(fmt))
    except pd.errors.EmptyDataError:
        raise DataError(f"{getattr(source, 'name', source)} holds no data rows") from None
    except UnicodeDecodeError:
        raise DataError(f"{getattr(source, 'name', source)} is not UTF-8 text") from None
    except ValueError as exc:  # ParserError, or a row whose fields do not match the header's names
        msg = " ".join(str(exc).split())
        raise DataError(f"malformed CSV in {getattr(source, 'name', source)}: {msg}") from None
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt .gz
        raise DataError(f"{getattr(source, 'name', source)}: cannot read compressed file ({exc})") from None


def find_label_column(names: list[str], label_column: str | None) -> str | None:
    if label_column:
        if label_column not in names:
            raise DataError(f"label column {label_column!r} not found; columns are {', '.join(names)}")
        return label_column
    return next((n for n in names if n.strip().lower() in LABEL_NAMES), None)


def numeric_columns(path: str | os.PathLike, fmt: CsvFormat) -> tuple[list[str], list[str]]:
    """(numeric, other) column names, judged from the first rows."""
    probe = _parse(Path(path), fmt, None, compression=fmt.compression, nrows=2000)
    numeric = [c for c in probe.columns if pd.api.types.is_numeric_dtype(probe[c]) or probe[c].isna().all()
               or _numbers_with_stray_words(probe[c])]
    return numeric, [c for c in probe.columns if c not in numeric]


def _numbers_with_stray_words(column: pd.Series) -> bool:
    """Numbers with a stray word or two (`error`, `--`): still a numeric column; the words become missing values."""
    values = column.dropna()
    words = int(pd.to_numeric(values, errors="coerce").isna().sum())
    return len(values) >= 20 and words <= max(1, len(values) // 100)


def choose_features(fmt: CsvFormat, numeric: list[str], columns: list[str] | None, label: str | None) -> list[str]:
    names = list(fmt.names)
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"column(s) {', '.join(missing)} not found; columns are {', '.join(names)}")
        if label in columns:
            raise DataError(f"{label!r} is the label column and cannot be a feature")
        bad = [c for c in columns if c not in numeric]
        if bad:
            raise DataError(f"column(s) {', '.join(bad)} are not numeric")
        return list(columns)
    feats = [c for c in numeric if c != label and c.strip().lower() not in NON_FEATURE_NAMES]
    if not feats:
        raise DataError(f"no numeric column to use as a feature; columns are {', '.join(names)}")
    return feats


def time_column(names: list[str], features: list[str], given: str | None = None) -> str | None:
    """The column that says when each row happened: `given` (checked), else one named like a time."""
    if given:
        if given not in names:
            raise DataError(f"time column {given!r} not found; columns are {', '.join(names)}")
        if given in features:
            raise DataError(f"{given!r} is a feature of the model and cannot be the time column")
        return given
    return guess_time_column(pd.DataFrame(columns=names), features)


def parse_times(values) -> np.ndarray:
    """A time column's values as datetime64[ns] (NaT where unreadable); numbers are Unix seconds."""
    values = pd.Series(values)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and len(values):
        return pd.to_datetime(numeric, unit="s", errors="coerce").to_numpy("datetime64[ns]")
    with warnings.catch_warnings():  # "could not infer format": it falls back to parsing each value
        warnings.simplefilter("ignore", UserWarning)
        return pd.to_datetime(values, errors="coerce", format="mixed").to_numpy("datetime64[ns]")


def guess_time_column(frame: pd.DataFrame, features: list[str]) -> str | None:
    for c in frame.columns:
        if c not in features and str(c).strip().lower() in ("timestamp", "time", "date", "datetime"):
            return c
    return None


def handle_missing(X: np.ndarray, features: list[str], policy: str, where: str = "",
                   first_row: int = 0) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Apply the missing-value policy to a float matrix. Returns (X, kept-row mask or None, report).
    Only NaN (an empty or unparsable cell) is missing: +-inf and huge values are data, the strongest anomalies."""
    if policy not in MISSING_POLICIES:
        raise DataError(f"unknown missing-value policy {policy!r}; choose one of {', '.join(MISSING_POLICIES)}")
    bad = np.isnan(X)
    n_bad = int(bad.sum())
    report = {"missing_values": n_bad, "missing_policy": policy}
    if n_bad == 0:
        return X, None, report
    per_col = bad.sum(axis=0)
    detail = ", ".join(f"{features[i]}: {int(n)}" for i, n in enumerate(per_col) if n)
    report["missing_by_column"] = {features[i]: int(n) for i, n in enumerate(per_col) if n}
    if policy == "error":
        first = first_row + int(np.flatnonzero(bad.any(axis=1))[0])  # row number in the file, not the block
        raise DataError(f"{where}missing values ({detail}; first at row {first}); "
                        "use --missing interpolate or --missing drop")
    if policy == "drop":
        keep = ~bad.any(axis=1)
        report["rows_dropped"] = int((~keep).sum())
        return X[keep], keep, report
    # inf - inf would make a gap next to an infinite value NaN: interpolate from the largest finite value instead
    big = np.finfo(X.dtype).max
    frame = pd.DataFrame(np.clip(X, -big, big))
    filled = frame.interpolate(method="linear", limit_direction="both", axis=0).to_numpy(X.dtype, copy=True)
    infinite = np.isinf(X)
    filled[infinite] = X[infinite]
    if np.isnan(filled).any():  # a column with no value at all
        empty = [features[i] for i in np.flatnonzero(np.isnan(filled).all(axis=0))]
        raise DataError(f"{where}column(s) {', '.join(empty)} hold no numeric value at all")
    report["values_filled"] = n_bad
    return filled, None, report


def read_table(
    path: str | os.PathLike,
    columns: list[str] | None = None,
    label_column: str | None = None,
    missing: str = "interpolate",
    features: list[str] | None = None,
    drop_constant: bool = True,
) -> Table:
    """Load a whole file. `features` (detection) demands exactly those columns; otherwise they are chosen."""
    p = check_file(path)
    fmt = sniff(p)
    label = find_label_column(list(fmt.names), label_column)
    numeric, _ = numeric_columns(p, fmt)
    if features is not None:
        feats = match_features(fmt, numeric, features, label)
    else:
        feats = choose_features(fmt, numeric, columns, label)
    frame = _read_full(p, fmt, feats + ([label] if label else []))
    X = frame[feats].to_numpy(dtype=np.float64, copy=True)
    report: dict = {"rows": int(len(frame)), "columns": list(fmt.names), "delimiter": fmt.delimiter,
                    "header": fmt.has_header, "ignored_columns": [c for c in fmt.names if c not in feats and c != label]}
    if len(frame) == 0:
        raise DataError(f"{p} has a header row but no data rows")
    if features is None and not columns:
        X, feats, dropped = _drop_unusable(X, feats, drop_constant)
        report.update(dropped)
    X, mask, miss = handle_missing(X, feats, missing, where=f"{p}: ")
    report.update(miss)
    labels = None
    if label:
        lab = pd.to_numeric(frame[label], errors="coerce").to_numpy()
        if np.isnan(lab).any():
            raise DataError(f"label column {label!r} has non-numeric or empty values")
        labels = (lab > 0).astype(np.int8)
        if mask is not None:
            labels = labels[mask]
    return Table(frame=frame, features=feats, X=X, labels=labels, time_column=guess_time_column(frame, feats),
                 row_mask=mask, report=report)


def _read_full(p: Path, fmt: CsvFormat, numeric_cols: list[str]) -> pd.DataFrame:
    """The whole file, through the block reader detection uses (so both accept and refuse the same files).
    `numeric_cols` are numbers (a stray word becomes missing); other columns are kept as read."""
    frames = [block.frame for block in iter_blocks(p, fmt, numeric_cols)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=np.float64 if c in numeric_cols else object) for c in fmt.names})
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _drop_unusable(X: np.ndarray, feats: list[str], drop_constant: bool) -> tuple[np.ndarray, list[str], dict]:
    finite = np.where(np.isfinite(X), X, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        empty = np.isnan(finite).all(axis=0)
        spread = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
        indicator = ~empty & np.all(np.isnan(finite) | (finite == 0) | (finite == 1), axis=0)
    constant = ~empty & (spread == 0)
    report = {"empty_columns": [feats[i] for i in np.flatnonzero(empty)],
              "constant_columns": [feats[i] for i in np.flatnonzero(constant)]}
    # 0/1 columns next to measurements are states (one-hot commands, flags, modes), not what goes wrong: a state
    # change is not an anomaly in itself, and their errors drowned the measurements (SMAP/MSL VUS-PR 0.33/0.30
    # with them, 0.58/0.61 without; BENCHMARKS.md). Naming columns with --columns keeps them.
    if (indicator & ~constant).any() and (~empty & ~indicator).any():
        report["indicator_columns"] = [feats[i] for i in np.flatnonzero(indicator & ~constant)]
        empty = empty | indicator
        constant = constant & ~indicator
    drop = empty | (constant if drop_constant else False)
    if drop.all() and constant.any():
        # Only flat metrics: keep them. The model learns the constant and any departure from it is anomalous
        # (refusing would leave a flat metric, which can still break, without a detector).
        drop = empty
        report["constant_columns_kept"] = True
    if drop.all():
        raise DataError("every numeric column is empty or constant; nothing to learn from "
                        f"(empty: {report['empty_columns']}, constant: {report['constant_columns']})")
    if drop.any():
        keep = np.flatnonzero(~drop)
        return X[:, keep], [feats[i] for i in keep], report
    return X, feats, report


def match_features(fmt: CsvFormat, numeric: list[str], expected: list[str], label: str | None = None) -> list[str]:
    """Map a model's feature names onto this file's columns: by name, or by position for headerless files."""
    names = list(fmt.names)
    if all(c in names for c in expected):
        bad = [c for c in expected if c not in numeric]
        if bad:
            raise DataError(f"column(s) {', '.join(bad)} are not numeric in this file")
        return list(expected)
    usable = [c for c in numeric if c != label and c.strip().lower() not in NON_FEATURE_NAMES]
    if not fmt.has_header and len(usable) == len(expected):
        return usable
    missing = [c for c in expected if c not in names]
    raise DataError(f"the model expects {len(expected)} feature column(s) [{', '.join(expected)}] but the file has "
                    f"[{', '.join(names)}] (missing: {', '.join(missing)})")


# --- Chunked reading for detection on large files -------------------------------------------------------


@dataclass
class Block:
    """A run of whole data lines: the raw bytes (for pass-through output) and the parsed frame."""

    start: int  # index of the first row in the file (0-based, data rows only)
    raw_lines: list[bytes]  # each line without its terminator
    frame: pd.DataFrame
    texts: dict | None = None  # text columns read apart from the frame (`LineTexts`)

    def text(self, column: str):
        """A text column's values as strings (NaN where empty), indexable row by row."""
        if self.texts is not None and column in self.texts:
            return self.texts[column]
        return self.frame[column].astype(str).to_numpy()


def iter_blocks(path: str | os.PathLike, fmt: CsvFormat, numeric_cols: list[str], block_bytes: int = BLOCK_BYTES,
                all_columns: bool = True, text_cols: list[str] = (),
                lazy_text_cols: list[str] = ()) -> Iterator[Block]:
    """Yield consecutive blocks of data rows; memory stays bounded whatever the file size. Without
    `all_columns` the frame holds only `numeric_cols` (turning text columns into objects costs time).
    `lazy_text_cols` are read from a block's lines only for the rows asked for (`Block.text`, `LineTexts`).
    This is the one reader of data rows: training (`read_table`) and detection both go through it."""
    p = Path(path)
    opener = gzip.open if fmt.compression else open
    dtype = {c: np.float32 for c in numeric_cols}
    row = 0
    with opener(p, "rb") as f:
        if fmt.bom:
            _read_chunk(f, 3, p)
        if fmt.has_header:
            _read_chunk(f, -1, p, line=True)
        carry = b""
        while True:
            chunk = _read_chunk(f, block_bytes, p)
            data = carry + chunk
            if not chunk:
                carry, body = b"", data
            else:
                body, carry = _split_at_record_end(data)
                if not body and len(carry) > 4 * block_bytes + SNIFF_BYTES:  # an unbalanced quote runs on and on
                    raise DataError(f"malformed CSV in {p}: a quoted field opened after row {row} is never closed")
            if body and not body.isspace():
                lines = body.split(b"\n")
                if lines and lines[-1] == b"":
                    lines.pop()
                crlf = bool(lines) and lines[0].endswith(b"\r")
                if crlf:
                    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
                raw = lines
                if not all(lines):  # pandas skips blank (and whitespace-only) lines; so do we
                    lines = [ln for ln in lines if ln.strip()]
                if lines:
                    texts = None
                    # pandas skips blank lines and handles CRLF itself, so the block is parsed as it is
                    frame = _parse_block(body, fmt, dtype, p, None if all_columns else
                                         list(dict.fromkeys([*numeric_cols, *text_cols])), text_cols)
                    if len(frame) != len(lines) and b'"' in body:
                        lines = _quoted_records(raw)  # a quoted field spans lines: one record, several lines
                        if crlf and lazy_text_cols:  # its records lost their inner CR: parse the columns now
                            parsed = _parse_block(body, fmt, {}, p, list(lazy_text_cols), list(lazy_text_cols))
                            texts = {c: parsed[c].astype(str).to_numpy() for c in lazy_text_cols}
                    if len(frame) != len(lines):
                        raise DataError(f"malformed CSV in {p}: line structure around row {row} could not be read")
                    yield Block(row, lines, frame, texts or {c: LineTexts(lines, p, fmt, c) for c in lazy_text_cols})
                    row += len(lines)
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
        if len(fields) != len(self.fmt.names):
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


def _read_chunk(f, size: int, p: Path, line: bool = False) -> bytes:
    try:
        return f.readline() if line else f.read(size)
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt .gz
        raise DataError(f"{p}: cannot read compressed file ({exc})") from None


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


class Prefetch:
    """Produce `items` in a background thread, `depth` ahead, from the moment it is made (detection starts
    reading while torch is imported): pandas parses the next block (without the GIL) while the caller scores
    and writes the current one. `close()` stops the thread."""

    def __init__(self, items: Iterator, depth: int = 1):
        import queue
        import threading

        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.done = object()
        self.items = items
        threading.Thread(target=self._produce, daemon=True, name="prefetch").start()

    def _produce(self) -> None:
        import queue

        def put(entry) -> bool:
            while not self.stop.is_set():
                try:
                    self.queue.put(entry, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in self.items:
                if not put((item, None)):
                    return
            put((self.done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((self.done, exc))

    def __iter__(self) -> Iterator:
        while True:
            item, exc = self.queue.get()
            if item is self.done:
                if exc is not None:
                    raise exc
                return
            yield item

    def close(self) -> None:
        self.stop.set()


def _parse_block(body: bytes, fmt: CsvFormat, dtype: dict, p: Path, usecols: list[str] | None = None,
                 text_cols: list[str] = ()) -> pd.DataFrame:
    # Parsed as float64 and narrowed by the caller: pandas' C parser is ~1.7x slower when asked for float32
    # (and slower again with low_memory=False), measured on 32 MiB blocks of 20 float columns.
    kwargs = _read_kwargs(fmt) | {"skiprows": 0, "encoding": "utf-8", "usecols": usecols, "low_memory": True,
                                  "dtype": {c: str for c in text_cols if c not in dtype} or None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            try:
                frame = pd.read_csv(io.BytesIO(body), **kwargs)
            except pd.errors.ParserError:
                if usecols is None:
                    raise
                # pandas refuses `usecols` when a block's first line is short (a truncated last line): read all
                # columns, as a whole-file read would, and keep the wanted ones (the short line's rest is missing)
                frame = pd.read_csv(io.BytesIO(body), **(kwargs | {"usecols": None}))[usecols]
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text") from None
    except ValueError as exc:  # ParserError, or a row whose fields do not match the header's names
        raise DataError(f"malformed CSV in {p}: {' '.join(str(exc).split())}") from None
    for c in dtype:
        if not pd.api.types.is_numeric_dtype(frame[c]):  # a stray word: unparsable values become missing
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame
