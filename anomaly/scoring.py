"""Turning a model's per-sample errors into exactly one error per input row, in bounded memory.

A model sees samples of `span` consecutive rows and gives an error for the last `scored` of them. Every row's
error is the mean over all samples that scored it (overlapping windows are averaged). A model with a `stride`
is sampled every `stride` rows from the first row, plus one sample ending at the last row (so every row is
scored, and chunked scoring equals whole-file scoring). Rows no sample scores
(the first `span - scored` rows of a series, e.g. a forecaster's missing history) get NaN: no score, never an
anomaly. Rows arrive in chunks; a row is emitted once no later sample can score it.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager

import numpy as np
import torch

from .device import autocast, model_device

SCORE_BATCH = 8192  # samples per forward pass when scoring
SMALL_MODEL_PARAMETERS = 50_000


@contextmanager
def single_thread():
    """Run torch on one thread: small models lose more to thread hand-offs than they gain, and it leaves the
    other core free (detection parses the next block meanwhile)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def gather(x: torch.Tensor, starts: torch.Tensor, span: int) -> torch.Tensor:
    """Samples (len(starts), span, features) cut from a (rows, features) tensor by slicing, not copying loops."""
    if span == 1:
        return x[starts].unsqueeze(1)
    return x[starts.unsqueeze(1) + torch.arange(span, device=x.device)]


def window_range(x: torch.Tensor, start: int, stop: int, span: int) -> torch.Tensor:
    """Samples starting at rows start..stop-1, shape (stop-start, span, features), as a view when possible."""
    if span == 1:
        return x[start:stop].unsqueeze(1)
    return x.unfold(0, span, 1)[start:stop].transpose(1, 2)


class RowScorer:
    """Streaming per-row errors: `push(chunk)` returns the rows that are final so far, `finish()` the rest."""

    def __init__(self, model: torch.nn.Module, n_features: int, batch_size: int = SCORE_BATCH, precision: str = "fp32"):
        self.model = model
        self.span, self.scored = model.span, model.scored
        self.stride = int(getattr(model, "stride", 1))
        self.model_uniform = bool(getattr(model, "uniform_rows", False)) and self.scored > 1
        # a uniform model may put part of a sample's error on one of its rows (pca: a one-row spike)
        self.split = self.model_uniform and hasattr(model, "split_errors")
        self.first_row = 0  # index in the series of self.rows[0] (samples start at multiples of the stride)
        self.tail: np.ndarray | None = None  # the last `span` rows seen (strided models: finish()'s last sample)
        self.batch_size = max(1, batch_size)
        self.device, self.precision = model_device(model), precision  # data goes where the model is
        # small models run on one thread (hand-offs cost more than they save); big ones use them all
        self.small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
        self.rows = np.empty((0, n_features), np.float32)  # rows carried over for the next samples
        self.sums = np.empty((0, n_features), np.float32)
        self.counts = np.empty(0, np.int64)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        if self.span == 1:  # one row per sample: every row is final at once, nothing to average
            return self._row_by_row(chunk)
        rows = np.concatenate([self.rows, chunk.astype(np.float32, copy=False)])
        sums = np.concatenate([self.sums, np.zeros((len(chunk), rows.shape[1]), np.float32)])
        counts = np.concatenate([self.counts, np.zeros(len(chunk), np.int64)])
        n_samples = len(rows) - self.span + 1
        if n_samples > 0:
            self._accumulate(rows, sums, counts, n_samples)
        # Rows before the first unprocessed sample's first scored row are final.
        done = max(0, n_samples)
        self.rows, self.sums, self.counts = rows[done:], sums[done:], counts[done:]
        self.first_row += done
        if self.stride > 1:
            self.tail = rows[-self.span:].copy()
        return _mean(sums[:done], counts[:done])

    def finish(self) -> np.ndarray:
        tail = self.tail
        if tail is not None and len(tail) == self.span and (self.counts == 0).any():
            # rows after the last strided sample: one more sample, ending at the last row
            with torch.inference_mode(), self._threads(), autocast(self.device, self.precision):
                x = torch.from_numpy(np.ascontiguousarray(tail)).to(self.device)[None]
                if self.split:
                    shared, rows, spikes = (t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()
                                            for t in self.model.split_errors(x))
                    err = np.repeat(shared, self.span, axis=0)
                    np.add.at(err, rows[0], spikes[0])
                else:
                    err = self.model.errors(x).float().cpu().numpy()[0]
            n = len(self.sums)
            self.sums += err[-n:]
            self.counts += 1
        out = _mean(self.sums, self.counts)
        self.rows, self.sums, self.counts, self.tail = self.rows[:0], self.sums[:0], self.counts[:0], None
        return out

    def _threads(self):
        return single_thread() if self.small else contextlib.nullcontext()

    def _row_by_row(self, chunk: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).to(self.device)  # once per block
        out = np.empty(chunk.shape, np.float32)
        with torch.inference_mode(), self._threads(), autocast(self.device, self.precision):
            for s in range(0, len(x), self.batch_size):
                err = self.model.errors(x[s:s + self.batch_size].unsqueeze(1))[:, 0]
                out[s:s + self.batch_size] = err.float().cpu().numpy()  # back to the host once per batch
        return out

    def _accumulate(self, rows: np.ndarray, sums: np.ndarray, counts: np.ndarray, n_samples: int) -> None:
        x = torch.from_numpy(rows).to(self.device)  # the whole block goes to the device once
        offset = self.span - self.scored  # position of the first scored row inside a sample
        first = (-self.first_row) % self.stride  # the first sample start in this block on the series' grid
        starts = np.arange(first, n_samples, self.stride)
        windows = x.unfold(0, self.span, 1)  # a view: (samples, features, span)
        spread = _Spread(len(sums), sums.shape[1]) if self.model_uniform else None
        with torch.inference_mode(), self._threads(), autocast(self.device, self.precision):
            for i in range(0, len(starts), self.batch_size):
                batch = starts[i:i + self.batch_size]
                if self.stride == 1:
                    samples = window_range(x, int(batch[0]), int(batch[-1]) + 1, self.span)
                else:
                    samples = windows[torch.from_numpy(batch).to(x.device)].transpose(1, 2)
                if self.split:  # shared by the sample's rows, plus parts on single rows (no extra count)
                    shared, rows, spikes = self.model.split_errors(samples)
                    spread.add(batch + offset, self.scored, shared.float().cpu().numpy())
                    spikes = spikes.float().cpu().numpy()
                    hit = (spikes > 0).any(2)
                    if hit.any():
                        first = np.broadcast_to((batch + offset)[:, None], hit.shape)
                        spread.add_at(first[hit] + rows.cpu().numpy()[hit], spikes[hit])
                    continue
                # (b, scored, F), or (b, 1, F) for a model whose error is the same on every scored row
                err = self.model.errors(samples).float().cpu().numpy()  # back to the host once per batch
                if spread is not None:
                    spread.add(batch + offset, self.scored, err[:, 0])
                    continue
                for k in range(self.scored):  # the starts are distinct, so plain fancy-index adds are exact
                    sums[batch + offset + k] += err[:, k]
                    counts[batch + offset + k] += 1
        if spread is not None:
            spread.into(sums, counts)


HUGE_ERROR = 1e6  # errors above this (a reading of 1e300) leave float64 rounding in a running sum of later rows


class _Spread:
    """Adds one error per sample to each of its `scored` rows through difference arrays: O(samples + rows)
    instead of O(samples x scored) (a pca window of 51 rows x 20 features is 1,000 values per sample)."""

    def __init__(self, rows: int, features: int):
        self.sums = np.zeros((rows + 1, features), np.float64)  # float64: cumulative sums must not drift
        self.counts = np.zeros(rows + 1, np.int64)
        self.point: np.ndarray | None = None  # errors added to single rows (`add_at`)

    def add(self, first_rows: np.ndarray, length: int, err: np.ndarray) -> None:
        self.counts[first_rows] += 1
        self.counts[first_rows + length] -= 1
        huge = np.abs(err).max(axis=1) > HUGE_ERROR if len(err) else np.zeros(0, bool)
        if huge.any():  # rare (an inf reading): added row by row, not through the running sums (see add_at)
            for first, e in zip(first_rows[huge], err[huge]):
                self.add_at(np.arange(first, first + length), np.broadcast_to(e, (length, len(e))))
            first_rows, err = first_rows[~huge], err[~huge]
        # one sample per start: each index list is distinct, so fancy-index adds are exact
        self.sums[first_rows] += err
        self.sums[first_rows + length] -= err

    def add_at(self, rows: np.ndarray, err: np.ndarray) -> None:
        """Adds errors to single rows (repeated rows add up), without counting a sample; kept out of the running
        sums, where a huge spike (an inf reading) would leave rounding in every later row."""
        if self.point is None:
            self.point = np.zeros_like(self.sums)
        np.add.at(self.point, rows, err)

    def into(self, sums: np.ndarray, counts: np.ndarray) -> None:
        total = np.cumsum(self.sums, axis=0)[:-1]
        if self.point is not None:
            total += self.point[:-1]
        sums += total.astype(np.float32)
        counts += np.cumsum(self.counts)[:-1]


def _mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None].astype(np.float32)


def row_errors(model: torch.nn.Module, X: np.ndarray, batch_size: int = SCORE_BATCH,
               precision: str = "fp32") -> np.ndarray:
    """Per-row, per-feature errors of a whole in-memory matrix: shape (rows, features), NaN where unscored."""
    scorer = RowScorer(model, X.shape[1], batch_size, precision)
    head = scorer.push(X)
    return np.concatenate([head, scorer.finish()])


def row_scores(errors: np.ndarray) -> np.ndarray:
    """One score per row: the mean error over features (NaN stays NaN)."""
    return errors.mean(axis=1)


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
