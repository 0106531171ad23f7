"""Reading users' CSV/TXT files: one loader for training, detection, evaluation and the server.

Delimiter (comma, tab, semicolon, whitespace), header row and BOM are sniffed from the first lines; `.gz` is
read transparently. Numeric columns are features, read as float64 (a value beyond float32's range is a huge value,
never a missing one); other columns (timestamps, IDs, text) are carried along untouched. A `label` column is never
a feature. Training and detection read files through the same block reader (`csvread.iter_blocks`), so a file one
of them accepts the other accepts too, within the same limits (`anomaly.limits`).
"""

from __future__ import annotations

from ..prefetch import Prefetch
from .csvread import BLOCK_BYTES, SNIFF_BYTES, Block, CsvFormat, LineTexts, iter_blocks
from .sniffing import check_file, sniff
from .table import (
    LABEL_NAMES,
    MISSING_POLICIES,
    NON_FEATURE_NAMES,
    PROBE_BYTES,
    PROBE_ROWS,
    MissingFiller,
    Table,
    _read_full,  # noqa: F401  (the threshold labels read one column whole through it)
    choose_features,
    find_label_column,
    guess_time_column,
    handle_missing,
    match_features,
    numeric_columns,
    parse_times,
    read_table,
    read_text_frame,
    time_column,
)

__all__ = ["BLOCK_BYTES", "LABEL_NAMES", "MISSING_POLICIES", "NON_FEATURE_NAMES", "PROBE_BYTES", "PROBE_ROWS",
           "SNIFF_BYTES", "Block", "CsvFormat", "LineTexts", "MissingFiller", "Prefetch", "Table", "check_file",
           "choose_features", "find_label_column", "guess_time_column", "handle_missing", "iter_blocks",
           "match_features", "numeric_columns", "parse_times", "read_table", "read_text_frame", "sniff",
           "time_column"]
