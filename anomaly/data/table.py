"""The table of a data file: its feature, label and time columns, read whole for training (`read_table`), and
its missing values (`handle_missing`, `MissingFiller` for detection block by block)."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import limits
from ..errors import DataError
from .csvread import CsvFormat, iter_blocks
from .sniffing import check_file, sniff

MISSING_POLICIES = ("interpolate", "drop", "error")
LABEL_NAMES = ("label", "is_anomaly_label", "anomaly_label")
# Numeric columns with these names are row identifiers or clocks, not measurements.
NON_FEATURE_NAMES = {"id", "index", "idx", "row", "timestamp", "time", "date", "datetime", "epoch", "unnamed: 0"}
PROBE_BYTES = 1 << 20  # the first rows that decide which columns are numeric (at most PROBE_ROWS of them)
PROBE_ROWS = 2000
log = logging.getLogger("anomaly.data")


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


def find_label_column(names: list[str], label_column: str | None) -> str | None:
    if label_column:
        if label_column not in names:
            raise DataError(f"label column {label_column!r} not found; columns are {', '.join(names)}")
        return label_column
    return next((n for n in names if n.strip().lower() in LABEL_NAMES), None)


def numeric_columns(path: str | os.PathLike, fmt: CsvFormat) -> tuple[list[str], list[str]]:
    """(numeric, other) column names, judged from the first rows (at most PROBE_BYTES of them)."""
    blocks = iter_blocks(Path(path), fmt, [], block_bytes=PROBE_BYTES)
    try:
        first = next(blocks, None)
    finally:
        blocks.close()
    if first is None:
        raise DataError(f"{path} holds no data rows")
    probe = first.frame.head(PROBE_ROWS)
    numeric = [c for c in probe.columns if pd.api.types.is_numeric_dtype(probe[c]) or probe[c].isna().all()
               or _numbers_with_stray_words(probe[c])]
    return numeric, [c for c in probe.columns if c not in numeric]


def read_text_frame(path: str | os.PathLike, fmt: CsvFormat) -> pd.DataFrame:
    """The whole file with every column as text (NaN where empty), through the one block reader."""
    names = list(fmt.names)
    frames = [block.frame for block in iter_blocks(Path(path), fmt, [], text_cols=names)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in names})
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


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
    counts: dict = {}
    frame = _read_full(p, fmt, feats + ([label] if label else []), counts)
    X = frame[feats].to_numpy(dtype=np.float64, copy=True)
    report: dict = {"rows": int(len(frame)), "columns": list(fmt.names), "delimiter": fmt.delimiter,
                    "header": fmt.has_header, "ignored_columns": [c for c in fmt.names if c not in feats and c != label]}
    if fmt.trailing:
        report["trailing_delimiter"] = True  # the empty field after the last one was dropped
    if counts.get("repeated_headers"):
        report["repeated_header_lines"] = counts["repeated_headers"]
    if len(frame) == 0:
        raise DataError(f"{p} has a header row but no data rows")
    if features is None and not columns:
        X, feats, dropped = _drop_unusable(X, feats, drop_constant)
        report.update(dropped)
    if features is None:
        X, feats = _drop_mostly_empty(X, feats, report, p, named=bool(columns))
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


def _read_full(p: Path, fmt: CsvFormat, numeric_cols: list[str], counts: dict | None = None) -> pd.DataFrame:
    """The whole file, through the block reader detection uses (so both accept and refuse the same files).
    `numeric_cols` are numbers (a stray word becomes missing); other columns are kept as read. `counts` gets
    the number of repeated header lines left out."""
    frames, skipped = [], 0
    for block in iter_blocks(p, fmt, numeric_cols):
        frames.append(block.frame)
        skipped += block.headers_skipped
    if counts is not None:
        counts["repeated_headers"] = skipped
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
    # change is not an anomaly in itself, and their errors drowned the measurements on SMAP and MSL
    # (docs/decisions/0011-state-columns-left-out.md). Naming columns with --columns keeps them.
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


def _drop_mostly_empty(X: np.ndarray, feats: list[str], report: dict, p: Path,
                       named: bool) -> tuple[np.ndarray, list[str]]:
    """Training columns with more than limits.MAX_MISSING_SHARE missing values: left out by name (in the
    report), refused when the user named them (--columns) or when no column is left."""
    share = np.isnan(X).mean(axis=0) if len(X) else np.zeros(X.shape[1])
    over = share > limits.MAX_MISSING_SHARE
    if not over.any():
        return X, feats
    sparse = {feats[i]: round(float(share[i]), 4) for i in np.flatnonzero(over)}
    detail = ", ".join(f"{name} ({100 * s:.1f}% missing)" for name, s in sparse.items())
    limit = f"{100 * limits.MAX_MISSING_SHARE:g}%"
    if named:
        raise DataError(f"{p}: column(s) {detail} are more than {limit} empty; filling them in would train on "
                        "made-up values: leave them out of --columns or fill the gaps first")
    if over.all():
        raise DataError(f"{p}: every feature column is more than {limit} empty ({detail}); nothing to learn from")
    report["mostly_empty_columns"] = sparse
    log.info("%s: left out column(s) more than %s empty: %s", p, limit, detail)
    keep = np.flatnonzero(~over)
    return X[:, keep], [feats[i] for i in keep]


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


class MissingFiller:
    """Per-block missing-value handling that gives the same values as filling the whole file at once: rows
    whose gap is still open at the end of a block wait for the next block (interpolation needs the value
    after the gap); the last row handed on anchors the next interpolation."""

    def __init__(self, features: list[str], policy: str, report: dict):
        self.features, self.policy, self.report = features, policy, report
        self.per_column = np.zeros(len(features), np.int64)  # missing values of each column
        self.anchor: np.ndarray | None = None  # last row handed on (finite)
        self.held = np.empty((0, len(features)), np.float64)  # raw rows waiting for a gap to close

    def push(self, X: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows ready for scoring, this block's kept-row mask)."""
        bad = np.isnan(X)  # only an empty or unparsable cell is missing; inf is the strongest anomaly
        if bad.any():
            if self.policy == "error":
                handle_missing(X, self.features, "error", where=f"rows {start}..{start + len(X) - 1}: ",
                                    first_row=start)
            self.report["missing_values"] += int(bad.sum())
            self.per_column += bad.sum(axis=0)
            if self.policy == "drop":
                keep = ~bad.any(axis=1)
                self.report["rows_dropped"] += int((~keep).sum())
                return X[keep], keep
            handle_missing(X[:0], self.features, self.policy)  # rejects an unknown policy
            self.report["values_filled"] += int(bad.sum())
        mask = np.ones(len(X), bool)
        rows = np.concatenate([self.held, X]) if len(self.held) else X
        finite = ~np.isnan(rows)
        if finite.all():
            self.held = rows[:0]
            self.anchor = rows[-1] if len(rows) else self.anchor
            return rows, mask
        # Rows up to each column's last value can be filled now; the ones after wait for the next block.
        last = np.where(finite.any(axis=0), len(rows) - 1 - np.argmax(finite[::-1], axis=0), -1)
        cut = int(last.min()) + 1
        if cut == 0:
            self.held = rows
            return rows[:0], mask
        ready = self._fill(rows)[:cut]
        self.held, self.anchor = rows[cut:], ready[-1]
        return ready, mask

    def warnings(self, rows: int) -> list[str]:
        """Columns mostly missing in this file (over limits.MAX_MISSING_SHARE, where training leaves a column
        out): their filled-in values say little, and neither do their scores."""
        from ..limits import MAX_MISSING_SHARE

        share = self.per_column / max(rows, 1)
        return [f"column {self.features[i]} is {100 * share[i]:.1f}% missing in this file (more than "
                f"{100 * MAX_MISSING_SHARE:g}%); its values were {'filled in' if self.policy == 'interpolate' else 'dropped'}"
                ", so the scores say little about it" for i in np.flatnonzero(share > MAX_MISSING_SHARE)]

    def finish(self) -> np.ndarray:
        """The rows still waiting at the end of the file: their gaps are filled from the last value."""
        if not len(self.held):
            return self.held
        rows, self.held = self._fill(self.held), self.held[:0]
        return rows

    def _fill(self, rows: np.ndarray) -> np.ndarray:
        if self.anchor is None:
            return handle_missing(rows, self.features, "interpolate")[0]
        return handle_missing(np.vstack([self.anchor, rows]), self.features, "interpolate")[0][1:]
