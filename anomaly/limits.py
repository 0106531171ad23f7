"""What one input file may cost, in one place. Every limit is checked while the file is read (a line as it
arrives, a header before its names are split, a compressed stream as it inflates), never after the whole
thing is in memory: no single file, upload or line can take the reader's memory or time past these.
Training, detection, evaluation, fleets and the server's uploads all read through the same reader."""

from __future__ import annotations

# One line of a data file (a record whose quoted field spans lines counts as one line). Pandas needs many
# times a line's size to split it, so this bounds the parser's memory per line; 10,000 columns of 20-digit
# numbers take 210 KB.
MAX_LINE_BYTES = 1 << 20
# Columns of a file (the header's names, or the first row's fields without a header).
MAX_COLUMNS = 10_000
# A gzip file may inflate to this many times its own size, and to GZIP_MIN_BYTES whatever its size. Text of
# numbers compresses a few times over; a ratio far beyond that is a decompression bomb. A genuine file over it
# can be decompressed first (gunzip): plain files have no such limit, their size is what the disk holds.
GZIP_MAX_RATIO = 100
GZIP_MIN_BYTES = 64 << 20
# A training column with more missing values than this share is left out (named in the report): filling
# most of a column by interpolation trains the model on straight lines it made up. Detection warns instead.
MAX_MISSING_SHARE = 0.5


def gzip_allowance(compressed_bytes: int) -> int:
    """How many decompressed bytes a gzip file of `compressed_bytes` may give."""
    return max(GZIP_MIN_BYTES, GZIP_MAX_RATIO * compressed_bytes)


def describe(n_bytes: int) -> str:
    """1048576 -> '1 MiB', for error messages."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes} bytes"
