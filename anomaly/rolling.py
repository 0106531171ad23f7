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
        span = pd.Timedelta(str(value).strip())
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
