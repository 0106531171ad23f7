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

from ..errors import DataError
from . import methods

STEPS_PER_WINDOW = 20  # the threshold moves every N/20 rows: smooth enough, and 20x cheaper than every row
TIME_STEP_ROWS = 64  # with a time span the window's row count is unknown: recompute every 64 rows
MIN_ROWS = 50  # fewer scores than this say too little about the distribution


def rows_or_span(value, name: str, examples: str) -> int | np.timedelta64:
    """A whole number of rows, or a time span pandas understands (`7d`, `12h`, `10min`); the caller checks its
    range. Shared by `threshold_window` and the incident options."""
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().isdigit()):
        return int(value)
    import pandas as pd
    try:
        # pandas deprecates the unit "d"; "7d" is how people write a week, so it means "7D"
        span = pd.Timedelta(re.sub(r"(?<=\d)\s*d(?![a-z])", "D", str(value).strip()))
    except (ValueError, TypeError):
        raise DataError(f"{name} takes a number of rows or a time span such as {examples}, got {value!r}") from None
    return span.to_timedelta64()


def parse_window(value) -> int | np.timedelta64 | None:
    """`None`/empty: off; a whole number: rows; else a time span understood by pandas (`7d`, `12h`, `30min`)."""
    if value is None or value == "" or value == 0:
        return None
    window = rows_or_span(value, "threshold_window", "7d or 12h")
    if isinstance(window, int):
        if window < MIN_ROWS:
            raise DataError(f"threshold_window must be at least {MIN_ROWS} rows, got {window}")
        return window
    if not window > np.timedelta64(0, "ns"):
        raise DataError(f"threshold_window must be a positive time span, got {value!r}")
    return window


class RollingThreshold:
    """Per-row thresholds for consecutive chunks of scores: `push(scores, times) -> thresholds`."""

    def __init__(self, window, method: str, params: dict, start: float, label: str | None = None):
        self.window, self.label = window, label or str(window)
        self.by_time = not isinstance(window, int)
        self.method, self.params = method, dict(params)
        if method in methods.NEEDS_LABELS:
            raise DataError(f"threshold method {method!r} needs labels; a rolling threshold needs a label-free "
                            "method (percentile, meanstd, iqr, pot, dynamic)")
        self.fn = methods.METHODS[method]
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
    bounded. Why, and the measurements on the labelled suites: docs/decisions/0003-follow-the-file-level.md."""

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


SMALL_PUSH = 16  # rows per push below which levels are computed row by row
WARMUP_STEPS = 20  # while the first window fills, the level moves this many times at most


class DriftBaseline:
    """With a threshold window, each feature is also re-centred on its recent level before scoring.

    A slowly drifting metric moves away from every training window, so the model's distance grows with the
    drift and no threshold over past scores keeps up (the newest rows always score above the older ones).
    Instead each row is scored as `x - level + training median`, where `level` is the median of the previous
    `rows` rows moved on by the trend between their two halves (a median lags by half its window on a
    trend). Window and halves hold whole periods (`period`: the model's window, one period with
    `--window auto`), so a seasonal pattern does not move the level with its phase. While the first window
    fills, the level comes the same way from the whole periods seen so far, from two periods on; before that rows are
    scored as they are. Medians ignore a few spikes, so spikes and short incidents keep their full size; an
    incident lasting more than about half the window becomes the new level, which is what following the data
    means. Only preceding rows are used, so chunked, whole-file and live scoring give the same values."""

    def __init__(self, rows: int, reference: np.ndarray, period: int = 1):
        self.period = max(1, int(period))
        pair = 2 * self.period
        self.rows = max(pair, int(round(rows / pair)) * pair)
        self.reference = np.asarray(reference, np.float64)
        self.history = np.empty((0, len(self.reference)), np.float64)
        self.seen = 0  # rows pushed so far
        self.step = max(self.period, self.rows // WARMUP_STEPS // self.period * self.period)

    def push(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        if not len(X):
            return X
        rows = np.concatenate([self.history, X])
        offset = self.seen - len(self.history)  # series index of rows[0]
        level = np.vstack([self._level_at(rows, i, offset) for i in range(len(self.history), len(rows))]
                          if len(X) <= SMALL_PUSH else [self._levels(rows, len(self.history), offset)])
        self.history = rows[-self.rows:]
        self.seen += len(X)
        out = X - level + self.reference
        return np.where(np.isfinite(level), out, X)

    def _warm(self, rows: np.ndarray, i: int, offset: int) -> np.ndarray:
        """The level of series row `offset + i` while the first window fills: the median of the rows before the
        last step boundary (whole periods), or NaN before two periods."""
        known = (offset + i) // self.step * self.step
        if known < 2 * self.period:
            return np.full(rows.shape[1], np.nan)
        seen = rows[-offset:known - offset]
        h = known // (2 * self.period) * self.period  # the recent half, whole periods
        if h < self.period:
            return np.median(seen, axis=0)
        recent, earlier = np.median(seen[known - h:], axis=0), np.median(seen[:known - h], axis=0)
        return recent + (recent - earlier) * h / known  # the trend line through both, at the newest row

    def _level_at(self, rows: np.ndarray, i: int, offset: int) -> np.ndarray:
        n, half = self.rows, self.rows // 2
        if offset + i < n:
            return self._warm(rows, i, offset)
        return (np.median(rows[i - n:i], axis=0) + np.median(rows[i - half:i], axis=0)
                - np.median(rows[i - n:i - half], axis=0))

    def _levels(self, rows: np.ndarray, first: int, offset: int) -> np.ndarray:
        """`_level_at` for rows[first:] at once: rolling medians once the first window is full."""
        import pandas as pd

        n, half = self.rows, self.rows // 2
        index = offset + np.arange(first, len(rows))
        out = np.empty((len(rows) - first, rows.shape[1]))
        warm = index < n
        for k in np.flatnonzero(warm):  # at most one window of rows, once per file; the level changes per step
            if k and index[k] // self.step == index[k - 1] // self.step:
                out[k] = out[k - 1]
            else:
                out[k] = self._warm(rows, first + k, offset)
        if (~warm).any():
            frame = pd.DataFrame(rows).shift(1)  # the row itself never sets its own level
            whole = frame.rolling(n, min_periods=n).median().to_numpy()
            recent = frame.rolling(half, min_periods=half).median().to_numpy()
            earlier = frame.shift(half).rolling(n - half, min_periods=n - half).median().to_numpy()
            out[~warm] = (whole + recent - earlier)[first:][~warm]
        return out

    def describe(self) -> dict:
        return {"rows": self.rows, "period_rows": self.period,
                "method": "median of the preceding rows (whole periods), moved on by their trend"}
