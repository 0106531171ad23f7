"""`--threshold-window`: a threshold that follows drifting data.

The threshold at each row is the version's threshold method (percentile, meanstd, iqr, pot, dynamic) applied to
the scores of all the preceding N rows (or a time span such as `7d`), flagged ones included. Leaving the
flagged rows out would make a percentile threshold fall for ever (the 95th percentile of the scores below a
threshold is below it) and never follow rising data; leaving out only the strong ones blocked it too when the
level moved fast. The price: an incident that fills a good part of the window raises the threshold while it
lasts (one-row spikes barely move a percentile of hundreds of rows), so choose a window well longer than the
incidents to catch. Until N rows (or the span) have been seen, the stored threshold holds. One pass, memory bounded by the window; the threshold is recomputed every
`step` rows on a grid anchored at the first row, so chunked and whole-file detection give identical results.
"""

from __future__ import annotations

import re

import numpy as np

from . import thresholds
from .errors import DataError

STEPS_PER_WINDOW = 20  # the threshold moves every N/20 rows: smooth enough, and 20x cheaper than every row
TIME_STEP_ROWS = 64  # with a time span the window's row count is unknown: recompute every 64 rows
MIN_ROWS = 50  # fewer scores than this say too little about the distribution


def parse_window(value) -> int | np.timedelta64 | None:
    """`None`/empty: off; a whole number: rows; else a time span understood by pandas (`7d`, `12h`, `30min`)."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().isdigit()):
        rows = int(value)
        if rows < MIN_ROWS:
            raise DataError(f"threshold_window must be at least {MIN_ROWS} rows, got {rows}")
        return rows
    import pandas as pd
    try:
        # pandas deprecates the unit "d"; "7d" is how people write a week, so it means "7D"
        span = pd.Timedelta(re.sub(r"(?<=\d)\s*d(?![a-z])", "D", str(value).strip()))
    except (ValueError, TypeError):
        raise DataError(f"threshold_window takes a number of rows or a time span such as 7d or 12h, got {value!r}") from None
    if span <= pd.Timedelta(0):
        raise DataError(f"threshold_window must be a positive time span, got {value!r}")
    return span.to_timedelta64()


class RollingThreshold:
    """Per-row thresholds for consecutive chunks of scores: `push(scores, times) -> thresholds`."""

    def __init__(self, window, method: str, params: dict, start: float, label: str | None = None):
        self.window, self.label = window, label or str(window)
        self.by_time = not isinstance(window, int)
        self.method, self.params = method, dict(params)
        if method in thresholds.NEEDS_LABELS:
            raise DataError(f"threshold method {method!r} needs labels; a rolling threshold needs a label-free "
                            "method (percentile, meanstd, iqr, pot, dynamic)")
        self.fn = thresholds.METHODS[method]
        self.step = TIME_STEP_ROWS if self.by_time else max(1, window // STEPS_PER_WINDOW)
        self.current = float(start)
        self.row = 0
        self.scores = np.empty(0, np.float64)
        self.times = np.empty(0, "datetime64[ns]")
        self.seen_since: np.datetime64 | None = None  # the first row's time (time spans)

    def push(self, scores: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        if self.by_time and times is None:
            raise DataError("a time-span threshold_window needs a time column (name it with --time-column)")
        out = np.empty(len(scores), np.float64)
        i = 0
        while i < len(scores):
            j = min(len(scores), i + self.step - self.row % self.step)  # up to the next grid point
            out[i:j] = self.current
            chunk = np.asarray(scores[i:j], np.float64)
            keep = np.isfinite(chunk)
            self.scores = np.concatenate([self.scores, chunk[keep]])
            if self.by_time:
                t = times[i:j]
                self.times = np.concatenate([self.times, t[keep]])
                if self.seen_since is None and len(t):
                    self.seen_since = t[0]
            self.row += j - i
            if self.row % self.step == 0:
                self._update(times[j - 1] if self.by_time else None)
            i = j
        return out

    def _update(self, now) -> None:
        if self.by_time:
            if now is None or np.isnat(now):
                return
            recent = self.times > now - self.window
            self.scores, self.times = self.scores[recent], self.times[recent]
            covered = self.seen_since is not None and now - self.seen_since >= self.window
        else:
            self.scores = self.scores[-self.window:]
            covered = self.row >= self.window
        if covered and len(self.scores) >= MIN_ROWS:
            self.current = float(self.fn(self.scores, None, **self.params))

    def describe(self) -> dict:
        window = self.label if self.by_time else int(self.window)
        return {"window": window, "method": self.method, "params": self.params, "step_rows": self.step,
                "last_threshold": self.current}


class LevelFollower:
    """The stored threshold, moved onto the level and spread of the rows scored so far when those are higher.

    The training scores' median (p50), spread (p90 - p50) and threshold are known; the same two numbers of the
    rows scored so far place the threshold as far above this file's median, in units of its spread, as it sat
    above the training median: `max(stored, median + (stored - p50) * max(1, spread / training spread))`.
    A file that scores higher all over (a drifted level, a noisier sensor, another operating mode) would
    otherwise be flagged nearly everywhere; this way its peaks are flagged, with a warning, while data like the
    training data (median and spread near training's) keeps the stored threshold and its documented rate.
    Both numbers are robust: incidents in fewer than 10% of the rows seen barely move them. They are recomputed
    on a grid of row counts anchored at the first row (from `MIN_ROWS` on, then every 10% more rows), over a
    sample thinned deterministically by row index, so chunked and whole-file detection agree and memory stays
    bounded. Measured on the labelled suites in BENCHMARKS.md."""

    MIN_ROWS = 200  # scored rows before the median says anything
    MIN_STEP = 100  # then every 10% more rows: ~30 updates over 10,000 rows, ~80 over 1,000,000
    SAMPLE_CAP = 16384  # kept scores at most: every 2^k-th row beyond

    def __init__(self, threshold: float, train_median: float, train_p90: float | None = None):
        self.base, self.train_median = float(threshold), float(train_median)
        spread = None if train_p90 is None else float(train_p90) - self.train_median
        self.train_spread = spread if spread is not None and spread > 0 else None  # None: follow the level only
        self.current = self.base
        self.row, self.next_update = 0, self.MIN_ROWS
        self.finite = 0
        self.stride = 1
        self.kept: list[np.ndarray] = []
        self.kept_rows: list[np.ndarray] = []
        self.median = self.spread = None
        self.raised_from: int | None = None  # first row whose threshold was raised
        self.highest = self.base
        self.highest_median = -np.inf

    def push(self, scores: np.ndarray) -> np.ndarray:
        out = np.empty(len(scores), np.float64)
        i = 0
        while i < len(scores):
            j = min(len(scores), i + self.next_update - self.row)
            out[i:j] = self.current
            chunk = np.asarray(scores[i:j], np.float64)
            rows = self.row + np.arange(len(chunk))
            keep = np.isfinite(chunk)
            self.finite += int(keep.sum())
            keep &= rows % self.stride == 0
            self.kept.append(chunk[keep])
            self.kept_rows.append(rows[keep])
            self.row += j - i
            if self.row == self.next_update:
                self._update()
                self.next_update = self.row + max(self.MIN_STEP, self.row // 10)
            i = j
        return out

    def _update(self) -> None:
        kept, rows = np.concatenate(self.kept), np.concatenate(self.kept_rows)
        while len(kept) > self.SAMPLE_CAP:
            self.stride *= 2
            thin = rows % self.stride == 0
            kept, rows = kept[thin], rows[thin]
        self.kept, self.kept_rows = [kept], [rows]
        if self.finite < self.MIN_ROWS or not len(kept):
            return
        median, p90 = np.percentile(kept, [50, 90])
        self.median, self.spread = float(median), float(p90 - median)
        scale = 1.0 if self.train_spread is None else max(1.0, self.spread / self.train_spread)
        self.current = max(self.base, self.median + (self.base - self.train_median) * scale)
        if self.current > self.base and self.raised_from is None:
            self.raised_from = self.row
        self.highest = max(self.highest, self.current)
        self.highest_median = max(self.highest_median, self.median)

    def warning(self) -> str | None:
        """Plain words when the file's typical score went past the stored threshold: without following its
        level, most rows would have been flagged."""
        if self.highest_median <= self.base:
            return None
        return (f"this file scores higher than the training data all over (median score {self.highest_median:.4g} "
                f"against {self.train_median:.4g} in training, above the stored threshold {self.base:.4g}): the data "
                "may have drifted or the model may not fit it. The threshold followed the file's level "
                "(follow_level), so only its peaks are flagged; retrain on recent normal data, or turn "
                "follow_level off to flag against the stored threshold.")

    def describe(self) -> dict | None:
        """What following the level did (None when it never raised the threshold)."""
        if self.raised_from is None:
            return None
        return {"training_median": self.train_median, "file_median": self.median, "file_spread": self.spread,
                "training_spread": self.train_spread, "raised_from_row": self.raised_from,
                "last_threshold": self.current, "highest_threshold": self.highest}
