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
