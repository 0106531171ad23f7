"""Smoothing per-row errors: a trailing mean (causal), a centred mean, and the spike smoother that keeps one-row
spikes visible while smoothing what lasts (`SpikeSmoother` for files, `LiveSpikeSmoother` for the live stream).
Each gives the same values in one pass, chunk by chunk or point by point; unscored rows (NaN) stay NaN.
"""

from __future__ import annotations

import numpy as np


class TrailingMean:
    """Causal smoothing of per-row errors: each row's error becomes the mean over itself and the `rows - 1` rows
    before it. Anomalies that last (incidents, level shifts) stand out from single noisy rows, and being causal
    it needs no look-ahead, so batch, chunked and live scoring give the same values. Unscored rows stay NaN."""

    def __init__(self, rows: int):
        self.rows = max(1, int(rows))
        self.carry: np.ndarray | None = None  # the last rows - 1 raw errors

    def push(self, errors: np.ndarray) -> np.ndarray:
        if self.rows == 1 or len(errors) == 0:
            return errors
        carry = self.carry if self.carry is not None else errors[:0]
        buf = np.concatenate([carry, errors]).astype(np.float64)
        ok = np.isfinite(buf)
        total = np.vstack([np.zeros((1, buf.shape[1])), np.cumsum(np.where(ok, buf, 0.0), axis=0)])
        count = np.vstack([np.zeros((1, buf.shape[1])), np.cumsum(ok, axis=0)])
        hi = np.arange(len(carry), len(buf)) + 1
        lo = np.maximum(hi - self.rows, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = ((total[hi] - total[lo]) / (count[hi] - count[lo])).astype(np.float32)
        out[~np.isfinite(errors)] = np.nan
        self.carry = np.asarray(buf[-(self.rows - 1):], np.float32)
        return out


class CenteredMean:
    """Smoothing of per-row errors over a centred span of `rows` rows (default 2 * window - 1: the rows whose
    windows overlap the row's own). A single noisy window then counts less than an anomaly that lasts, which
    raised mean VUS-PR on NAB, SMAP and MSL (docs/decisions/0010-neural-window-32-smoothed.md). Streaming: a
    row is final once the `rows // 2` rows after it have arrived; at the ends of a series the span is cut
    short. Unscored rows stay NaN."""

    def __init__(self, rows: int):
        self.rows = max(1, int(rows))
        self.back = (self.rows - 1) // 2
        self.ahead = self.rows - 1 - self.back
        self.buf: np.ndarray | None = None  # `done` rows of history, then rows not yet emitted
        self.done = 0

    def push(self, errors: np.ndarray, final: bool = False) -> np.ndarray:
        if self.rows == 1:
            return errors
        buf = errors if self.buf is None else np.concatenate([self.buf, errors])
        end = len(buf) if final else max(self.done, len(buf) - self.ahead)
        idx = np.arange(self.done, end)
        b = buf.astype(np.float64)
        ok = np.isfinite(b)
        total = np.vstack([np.zeros((1, b.shape[1])), np.cumsum(np.where(ok, b, 0.0), axis=0)])
        count = np.vstack([np.zeros((1, b.shape[1])), np.cumsum(ok, axis=0)])
        lo = np.maximum(idx - self.back, 0)
        hi = np.minimum(idx + self.ahead + 1, len(buf))
        with np.errstate(invalid="ignore", divide="ignore"):
            out = ((total[hi] - total[lo]) / (count[hi] - count[lo])).astype(np.float32)
        out[~np.isfinite(buf[self.done:end])] = np.nan
        keep = max(0, end - self.back)
        self.buf, self.done = buf[keep:], end - keep
        return out

    def finish(self) -> np.ndarray:
        if self.buf is None:
            return np.empty((0, 0), np.float32)
        return self.push(self.buf[:0], final=True)


def median3(before: np.ndarray, rows: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Element-wise median of three arrays; a NaN neighbour is ignored (the median of the other two's
    ordering with the row itself), so edge rows and rows next to unscored ones keep their own value."""
    lo, hi = np.fmin(before, rows), np.fmax(before, rows)
    return np.fmax(lo, np.fmin(hi, after))


class SpikeSmoother:
    """Score smoothing that keeps one-row spikes in place (`CenteredMean` alone spreads a spike over the
    whole span, so one bad reading became a 60-row incident).

    Each row's score (its mean error over features) is split into a sustained part, the median of the row and
    its two neighbours, and a spike part, whatever exceeds that median by more than `spike_floor` (the largest
    such excess among the training rows). The sustained part is smoothed over `rows` rows as before (lasting
    anomalies keep their lift, and VUS-PR with them); the spike part is added back at its own row only. The
    split is made on the row score, not per feature: on data with many sparse columns (MSL's command
    channels) a per-feature split lost far more VUS-PR than the row-level one
    (docs/decisions/0010-neural-window-32-smoothed.md).
    The per-feature errors returned are the smoothed ones, rescaled so that each row's mean is its score:
    features keep their shares of the error. Without a floor (row-wise models, versions saved before it) this
    is `CenteredMean`. Streaming: the median needs one row ahead, the mean `rows // 2`; NaN rows stay NaN.

    The smoothed sustained part never exceeds the largest sustained score within `rows // 4` rows (its
    envelope): a lasting incident lifts the rows around it by at most that reach instead of the whole span
    (the demo's incidents were flagged as segments several times their length), while inside an incident, where
    errors come and go, the mean still fills the gaps, at no real cost in VUS-PR on the four suites
    (docs/decisions/0010-neural-window-32-smoothed.md)."""

    def __init__(self, rows: int, spike_floor=None):
        self.mean = CenteredMean(rows)
        self.floor = None if spike_floor is None or self.mean.rows == 1 else float(np.max(spike_floor))
        self.reach = self.mean.rows // 4  # <= the mean's look-ahead, so streaming needs no extra rows
        self.sustained = np.empty(0)  # sustained scores of rows from `self.first` on (the envelope's input)
        self.first = 0
        self.emitted = 0
        self.before: float | None = None  # the score of the row before the held one
        self.held: np.ndarray | None = None  # the last raw row, waiting for the row after it
        self.spikes = np.empty(0)  # spike parts of rows the mean has not emitted yet

    def push(self, errors: np.ndarray, final: bool = False) -> np.ndarray:
        if self.floor is None:
            return self.mean.push(errors, final)
        raw = errors if self.held is None else np.concatenate([self.held, errors])
        if len(raw) == 0:
            return self._emit(self.mean.push(np.empty((0, raw.shape[1] + 1), np.float32), final))
        ready = len(raw) if final else len(raw) - 1
        score = _row_score(raw)
        before = np.r_[score[:1] if self.before is None else self.before, score[:-1]][:ready]
        after = np.r_[score[1:], score[-1:]][:ready]
        rows, own = raw[:ready], score[:ready]
        sustained = median3(before, own, after)
        unscored = ~np.isfinite(own)
        sustained[unscored] = np.nan
        spike = np.maximum(own - sustained - self.floor, 0)
        spike[unscored] = 0
        if ready:
            self.before = score[ready - 1:ready]
        self.held = raw[ready:]
        self.spikes = np.concatenate([self.spikes, spike])
        self.sustained = np.concatenate([self.sustained, sustained])
        return self._emit(self.mean.push(np.column_stack([rows, sustained]).astype(np.float32), final))

    def _emit(self, smoothed: np.ndarray) -> np.ndarray:
        """Per-feature smoothed errors scaled so that each row's mean is the smoothed sustained score (capped
        by its envelope) plus the row's own spike part."""
        n, h = len(smoothed), self.reach
        features, sustained = smoothed[:, :-1], smoothed[:, -1]
        spike, self.spikes = self.spikes[:n], self.spikes[n:]
        lo, hi = self.emitted - h, self.emitted + n + h  # the rows whose sustained scores reach these
        known = np.nan_to_num(self.sustained, nan=-np.inf)
        window = np.full(hi - lo, -np.inf)
        a, b = max(lo, self.first), min(hi, self.first + len(known))
        if b > a:
            window[a - lo:b - lo] = known[a - self.first:b - self.first]
        envelope = np.lib.stride_tricks.sliding_window_view(window, 2 * h + 1).max(axis=1) if n else window[:0]
        keep = max(0, self.emitted + n - h - self.first)
        self.sustained, self.first = self.sustained[keep:], self.first + keep
        self.emitted += n
        return _rescaled(features, sustained, envelope, spike)

    def finish(self) -> np.ndarray:
        if self.floor is None:
            return self.mean.finish()
        if self.held is None:
            return np.empty((0, 0), np.float32)
        return self.push(self.held[:0], final=True)


class LiveSpikeSmoother:
    """`SpikeSmoother` for points as they arrive (no rows ahead): the median of a row's score and the two
    before it, and a trailing mean over `rows` rows (what batch smoothing gives the last row of a file)."""

    def __init__(self, rows: int, spike_floor=None):
        self.mean = TrailingMean(rows)
        self.floor = None if spike_floor is None or rows <= 1 else float(np.max(spike_floor))
        self.last = np.empty(0)  # the scores of the two rows before the next one
        self.reach = (2 * rows - 1) // 4  # the batch envelope's reach, looking back only
        self.recent = np.empty(0)  # the last `reach` sustained scores

    def push(self, errors: np.ndarray) -> np.ndarray:
        if self.floor is None or len(errors) == 0:
            return self.mean.push(errors)
        own = _row_score(errors)
        scores = np.r_[self.last, own]
        k = len(self.last)
        pad = np.r_[scores[:1], scores[:1], scores]  # before the first row: the row itself
        sustained = median3(pad[k:-2], pad[k + 1:-1], pad[k + 2:])
        unscored = ~np.isfinite(own)
        sustained[unscored] = np.nan
        spike = np.maximum(own - sustained - self.floor, 0)
        spike[unscored] = 0
        self.last = scores[-2:]
        smoothed = self.mean.push(np.column_stack([errors, sustained]).astype(np.float32))
        features = smoothed[:, :-1]
        history = np.nan_to_num(np.r_[self.recent, sustained], nan=-np.inf)
        envelope = np.lib.stride_tricks.sliding_window_view(
            np.r_[np.full(max(0, self.reach - len(self.recent)), -np.inf), history], self.reach + 1).max(axis=1)
        self.recent = np.r_[self.recent, sustained][-self.reach:] if self.reach else np.empty(0)
        return _rescaled(features, smoothed[:, -1], envelope, spike)


def _rescaled(features: np.ndarray, sustained: np.ndarray, envelope: np.ndarray, spike: np.ndarray) -> np.ndarray:
    """Smoothed per-feature errors scaled so that each row's mean is its smoothed sustained score, capped by
    the envelope, plus its own spike part: features keep their shares, the row gets the split score."""
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(np.isnan(sustained), np.nan, np.minimum(sustained, envelope))
        plain = features.mean(axis=1)
        ratio = np.where(plain > 0, (level + spike) / plain, 1.0)
    return (features * ratio[:, None]).astype(np.float32)


def _row_score(errors: np.ndarray) -> np.ndarray:
    return errors.astype(np.float64).mean(axis=1) if errors.shape[1] else np.full(len(errors), np.nan)


def spike_floor(errors: np.ndarray) -> float:
    """The largest amount by which a training row's score exceeded the median of it and its neighbours: only
    excesses beyond anything normal data showed count as a spike."""
    score = _row_score(errors)
    before, after = np.r_[score[:1], score[:-1]], np.r_[score[1:], score[-1:]]
    excess = score - median3(before, score, after)
    finite = excess[np.isfinite(excess)]
    return float(max(finite.max(), 0.0)) if len(finite) else 0.0


def smooth_errors(errors: np.ndarray, rows: int, floor=None) -> np.ndarray:
    """`SpikeSmoother` over a whole in-memory matrix of per-row errors."""
    smoother = SpikeSmoother(rows, floor)
    head = smoother.push(errors)
    tail = smoother.finish()
    return np.concatenate([head, tail]) if len(tail) else head


def smooth_rows(window: int) -> int:
    """Default smoothing span for a window: 2 * window - 1 rows (1 = none for row-wise models)."""
    return 2 * int(window) - 1
