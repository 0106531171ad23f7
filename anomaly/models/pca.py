"""Windowed PCA (subsequence Mahalanobis distance), in the spirit of TSB-AD's Sub-PCA; no gradient descent.

Every `window` consecutive rows (about one period of the series) form a vector. On the training rows it is
fitted in closed form: the mean window and the principal components of the windows. A window's score is its
Mahalanobis distance: the squared projection on each of the top `components` directions divided by that
direction's variance, plus the squared residual outside them divided by the mean variance left there. A
window unlike every training window (a spike, a level shift, a changed shape or frequency) is far in the
directions where normal windows hardly vary, however small it is in absolute terms.

Windows start every `stride` rows: a sixteenth of the window (each row is still seen by 16 windows, VUS-PR as
with stride 1 on the suites, where wider strides lost on UCR: docs/decisions/0001-windowed-pca-default.md), more
for wide windows of many columns, so that scoring costs at most about ROW_BUDGET multiply-adds per row whatever
the width. A row's error is split over the features in proportion to their share of the distance, so the
strongest features are named.

One-row spikes stay one row. A window's distance is shared by all its rows, so a spike lifted every row within
a window of it (a few spikes flagged hundreds of rows). Each window's most anomalous rows (up to SPLIT_ROWS)
are found by their reconstruction-based contribution (how much the distance drops when a row is
replaced by its best guess from the others: g' P_ii^-1 g, g = (P c)_i, P the regularised precision; Alcala &
Qin 2009). When those rows alone explain the window (each beyond `spike_rbc`, and what is left no more than
`spike_rest`, both set from out-of-fold training windows by `calibrate_split`), their contributions go to them
alone and only the rest is shared. Windows of a lasting anomaly keep their distance when a few rows are
removed, so they are shared as before (VUS-PR as before on the four suites:
docs/decisions/0005-one-row-spikes.md).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..metrics import sliding_window
from ..scoring import single_thread

DEFAULT_WINDOW = "auto"  # one period: the window that lets a window's shape be compared
# A constant training series keeps its window: the variance floor makes any departure from the constant far
# (neural models go to window 1 there), and the window's neighbourhood is what a labelled range rewards
# (measured on MSL: docs/decisions/0001-windowed-pca-default.md).
FLAT_WINDOW = 0
# The overlapping windows already average a row's score; more smoothing blurs
# (docs/decisions/0001-windowed-pca-default.md).
DEFAULT_SMOOTH = 1
# Beyond this many values per window the covariance (width^2) grows large for little gain: the window shrinks.
MAX_WIDTH = 1024
FIT_WINDOWS = 20_000  # windows the components are fitted on (evenly spaced over the training rows)
NARROW = 512  # values per window below which fitting runs on one thread
ROW_BUDGET = 4096  # multiply-adds per scored row (two width x components products per window, over stride)
# A window's most anomalous rows carry their own part when it exceeds SPLIT_MARGIN x the largest top-row part
# of any out-of-fold training window (fully from twice that) and the rest of the window is within their
# REST_PERCENTILE distance (partly up to 1.25x it).
SPLIT_MARGIN = 2.0
REST_PERCENTILE = 99.0
SPLIT_ROWS = 3  # a window may hold up to this many spikes (random spikes land in one window together)


@dataclass
class Config:
    n_features: int
    window: int = 32
    stride: int | None = None  # rows between window starts; default window // 16, more for wide windows
    variance: float = 0.999  # the top components explain this share of the training windows' variance...
    max_components: int = 64  # ...up to this many
    ridge: float = 0.1  # variance floor, as a fraction of the mean component variance (flat directions)
    components: int | None = None  # set by the fit
    spike_rbc: float | None = None  # set by calibrate_split; None: no window is split (versions saved before)
    spike_rest: float | None = None

    def __post_init__(self):
        if self.stride is None:
            cost = 2 * self.n_features * self.window * self.max_components  # per window
            self.stride = max(1, self.window // 16, -(-cost // ROW_BUDGET))
        self.stride = max(1, min(int(self.stride), self.window))


def auto_window(X: np.ndarray) -> int:
    """One period of the first column (TSB-AD's `find_length_rank`: 125 rows without a clear period), bounded
    so the window fits the training rows and MAX_WIDTH values."""
    X = np.asarray(X)
    window = sliding_window(X[:, 0]) if len(X) else 32
    return int(max(2, min(window, len(X) // 4, MAX_WIDTH // max(1, X.shape[1]))))


class Model(nn.Module):
    uniform_rows = True  # errors() gives one row per window: every row of it gets the same error

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.span = self.scored = config.window
        self.stride = config.stride
        width, k = config.n_features * config.window, config.components or 0
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("basis", torch.zeros(width, k))  # top principal directions, one per column
        self.register_buffer("inv_variance", torch.zeros(k))
        self.register_buffer("inv_residual", torch.zeros(()))
        self._blocks: tuple | None = None  # (P's diagonal, inverse of P's feature block at each position)

    def fit_closed_form(self, x: torch.Tensor) -> dict:
        """Fit on the (rows, features) training tensor; returns the training history."""
        with self._threads():
            (count, total, gram), = self._moments(x, [0, len(x) - self.config.window + 1])
            return self._fit(count, total, gram, x[:self.config.window].reshape(-1))

    def _threads(self):
        """One thread for narrow windows: a second one only added hand-offs (twice the CPU per fit on 5,000 x 2
        rows, and a fleet's sequential loop ran at half speed)."""
        return single_thread() if self.config.n_features * self.config.window < NARROW else contextlib.nullcontext()

    def fit_folds(self, x: torch.Tensor, blocks: list[tuple[int, int]]) -> list[Model]:
        """One copy per block of rows (start, stop), fitted on the windows that do not touch it (out-of-fold
        calibration). The windows' sums are taken once, per segment between block edges, and each copy subtracts
        its block's: five folds cost one pass over the data, not five."""
        w, n = self.config.window, len(x) - self.config.window + 1
        edges = sorted({0, n, *(min(n, max(0, e)) for a, b in blocks for e in (a - w + 1, b))})
        models = []
        with self._threads():
            parts = self._moments(x, edges)
            whole = [sum(p[i] for p in parts) for i in range(3)]
            for a, b in blocks:
                left = [whole[i] - sum(p[i] for e, p in zip(edges, parts) if a - w + 1 <= e < b) for i in range(3)]
                fold = Model(copy.deepcopy(self.config))
                fold._fit(*left, x[:w].reshape(-1))
                models.append(fold.to(x.device).eval())
        return models

    def _moments(self, x: torch.Tensor, edges: list[int]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(count, sum, sum of outer products) of the windows starting in each [edges[i], edges[i+1]), shifted by
        the first window (numerics); long files are subsampled evenly to about FIT_WINDOWS windows."""
        w, width = self.config.window, self.config.n_features * self.config.window
        step = max(1, -(-(len(x) - w + 1) // FIT_WINDOWS))
        windows, shift = x.unfold(0, w, 1).transpose(1, 2), x[:w].reshape(-1)
        out = []
        for a, b in zip(edges[:-1], edges[1:]):
            count, total = 0, torch.zeros(width, dtype=torch.float64, device=x.device)
            gram = torch.zeros(width, width, dtype=torch.float64, device=x.device)
            for c in range(a + (-a) % step, b, step * 4096):  # float32 products in chunks, float64 sums
                chunk = windows[c:min(b, c + step * 4096):step].reshape(-1, width) - shift
                count += len(chunk)
                total += chunk.sum(0, dtype=torch.float64)
                gram += (chunk.T @ chunk).double()
            out.append((count, total, gram))
        return out

    def _fit(self, count: int, total: torch.Tensor, gram: torch.Tensor, shift: torch.Tensor) -> dict:
        width = self.config.n_features * self.config.window
        count = max(int(count), 1)
        centre = total / count
        covariance = (gram - count * torch.outer(centre, centre)) / max(1, count - 1)
        symmetric = (covariance + covariance.T) / 2
        if width < NARROW:  # torch's, on the caller's threads (numpy's BLAS threads spin on after each call)
            variance, vectors = torch.linalg.eigh(symmetric)
        else:  # numpy's LAPACK: several times faster than torch's float64 eigh here (decision record 0012)
            variance, vectors = (torch.from_numpy(a) for a in np.linalg.eigh(symmetric.cpu().numpy()))
        variance = variance.flip(0).clamp_min(0).to(gram.device)
        vectors = vectors.flip(1).contiguous().to(gram.device)
        total_variance = float(variance.sum())
        floor = self.config.ridge * total_variance / width + 1e-12
        explained = torch.cumsum(variance, 0) / max(total_variance, 1e-300)
        k = int(torch.searchsorted(explained, torch.tensor(self.config.variance, dtype=explained.dtype))) + 1
        k = max(1, min(k, self.config.max_components, width - 1)) if width > 1 else 1
        self.config.components = k
        self._blocks = None
        self.mean = (centre + shift.double()).float()
        self.basis = vectors[:, :k].float().contiguous()
        self.inv_variance = (1.0 / (variance[:k] + floor)).float()
        rest = float(variance[k:].mean()) if width > k else 0.0
        self.inv_residual = torch.tensor(1.0 / max(rest, floor), dtype=torch.float32, device=self.mean.device)
        # the mean training distance, from the spectrum: trace(regularised covariance^-1 @ covariance)
        mean_distance = float((variance[:k] * self.inv_variance.double()).sum() + variance[k:].sum() / max(rest, floor))
        return {"loss": [mean_distance], "val_loss": [None], "best_epoch": 1, "stopped_early": False,
                "epochs_run": 1, "closed_form": True, "components": k, "explained_variance": float(explained[k - 1])}

    def _distance(self, centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Mahalanobis distance per window in float64, each value's share of it (the shares sum to the
        distance), P c)."""
        projection = centred @ self.basis
        # covariance^-1 applied to the window, inside the top space and in the residual outside it, in one
        # product: c / residual_variance + B ((1 / variance - 1 / residual_variance) * projection)
        pulled = centred * self.inv_residual + (projection * (self.inv_variance - self.inv_residual)) @ self.basis.T
        # Value i's share is centred_i * pulled_i (they sum to the distance). The residual's own squares
        # (residual_i^2) spread a spike over every value loaded on the residual directions: a +6 spike in one of
        # two correlated sensors was split about 45/45 between them, and the wrong one was named.
        share = centred * pulled  # clamped per feature by the caller (negative shares offset positive ones)
        # the residual's energy |c|^2 - |projection|^2 is a difference: summed in float64
        p2 = projection.double().square()
        residual = (centred.square().sum(1, dtype=torch.float64) - p2.sum(1)).clamp_min(0)
        distance = (p2 * self.inv_variance.double()).sum(1) + residual * self.inv_residual.double()
        return distance, share, pulled

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self._distance(x.reshape(len(x), -1) - self.mean)[0].mean().to(x.dtype)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1, features): the window's distance split over the features by their share; the same for every
        row of the window (`uniform_rows`). `split_errors` gives the same total with a spike's part on its row."""
        shared, _, spikes = self.split_errors(x)
        return (shared + spikes.sum(1))[:, None, :]

    def split_errors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(shared (batch, features): the part of each window's distance shared by all its rows; rows (batch,
        SPLIT_ROWS): the positions in the window of its most anomalous rows; spikes (batch, SPLIT_ROWS, features):
        the part each of them carries alone, zero unless such rows alone explain the window). Per feature, in
        units whose mean over the features is the distance (as `errors`)."""
        b, w, f = x.shape
        distance, share, pulled = self._distance(x.reshape(b, -1) - self.mean)
        per_feature = share.reshape(b, w, f).sum(1).clamp_min(0)
        weights = per_feature / per_feature.sum(1, keepdim=True).clamp_min(1e-30)
        if self.config.spike_rbc is None:
            rows = torch.zeros(b, 1, dtype=torch.long, device=x.device)
            return distance.to(x.dtype)[:, None] * weights * f, rows, torch.zeros_like(weights)[:, None]
        rows, contribution, by_feature, dominance = self._top_rows(pulled.reshape(b, w, f))
        # How surely those rows alone explain the window, ramped rather than cut so that rounding (a file read in
        # blocks, another precision) cannot flip a split: each row's contribution from 1x to 2x spike_rbc and
        # from 1.5x to 2x the per-value contribution of the first row not split; the rest of the window from
        # 1.25x to 1x spike_rest.
        part = contribution * (contribution / self.config.spike_rbc - 1).clamp(0, 1) * ((dominance - 1.5) / 0.5).clamp(0, 1)
        rest = distance - part.sum(1)
        explained = ((1.25 * self.config.spike_rest - rest) / (0.25 * self.config.spike_rest)).clamp(0, 1)
        part = part * explained[:, None]
        spike_weights = by_feature / by_feature.sum(2, keepdim=True).clamp_min(1e-30)
        # in float64: next to a spike the shared part is a small difference of two large numbers
        shared = (distance - part.sum(1)).clamp_min(0).to(x.dtype)
        return shared[:, None] * weights * f, rows, part.to(x.dtype)[:, :, None] * spike_weights * f

    def _top_rows(self, pulled: torch.Tensor, every: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                           torch.Tensor]:
        """Each window's SPLIT_ROWS rows with the largest contributions (per-value (P c)_i^2 / P_ii summed over a
        row's features), as (positions, each row's contribution as a block g' P_rr^-1 g (rows far apart: about
        what removing them all removes), its per-feature part, how many times the next row's per-value
        contribution it is)."""
        diagonal, block_inverse = self._precision_blocks()
        b, w, f = pulled.shape
        k = min(SPLIT_ROWS, w - 1)
        if k < 1:  # a window of one row: the row is the window, nothing to split
            zeros = torch.zeros(b, 1, dtype=torch.float64, device=pulled.device)
            return torch.zeros(b, 1, dtype=torch.long, device=pulled.device), zeros, pulled.new_zeros(b, 1, f), zeros
        top = (pulled.square() * (1 / diagonal)).sum(2).topk(k + 1, dim=1)
        rows = top.indices[:, :k]
        dominance = top.values[:, :k].double() / top.values[:, k:].double().clamp_min(1e-30)
        parts = torch.zeros(b, k, f, dtype=torch.float64, device=pulled.device)
        # Only windows whose top row stands out can be split (the others get a zero weight): most windows of
        # normal data skip the blocks' products (`every`: all windows, for calibration).
        maybe = torch.arange(b, device=pulled.device) if every else torch.nonzero(dominance[:, 0] > 1.5).squeeze(1)
        if len(maybe):
            picked = rows[maybe]
            g = pulled[maybe].gather(1, picked[:, :, None].expand(len(maybe), k, f)).double()  # (m, k, f)
            parts[maybe] = g * torch.einsum("bkfg,bkg->bkf", block_inverse[picked], g)
        return rows, parts.sum(2).clamp_min(0), parts.clamp_min(0).to(pulled.dtype), dominance

    def _precision_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """P's diagonal (window, features) and the inverse of P's (features x features) block at each position,
        P = I / residual_variance + B diag(1 / variance - 1 / residual_variance) B' (derived, not saved)."""
        if self._blocks is None or self._blocks[0].device != self.basis.device:
            w, f = self.config.window, self.config.n_features
            lift = (self.inv_variance - self.inv_residual).double()
            basis = self.basis.double().reshape(w, f, -1)
            block = torch.einsum("wfk,k,wgk->wfg", basis, lift, basis) + self.inv_residual.double() * torch.eye(
                f, dtype=torch.float64, device=basis.device)
            diagonal = torch.diagonal(block, dim1=1, dim2=2)
            self._blocks = (diagonal.float().contiguous(), torch.linalg.inv(block).contiguous())
        return self._blocks

    def calibrate_split(self, folds: list[Model], pieces: list[torch.Tensor]) -> None:
        """Set when a window is split onto its rows (`spike_rbc`, `spike_rest`), from the windows of each piece of
        the training rows scored by the copy fitted without them (out of fold), on this model and the copies.
        A constant series (every contribution 0) splits nothing."""
        w, contributions, distances = self.config.window, [], []
        with torch.inference_mode():
            for fold, x in zip(folds, pieces):
                if len(x) < w:
                    continue
                windows = x.unfold(0, w, 1)[::max(1, self.config.stride)].transpose(1, 2)
                for c in range(0, len(windows), 4096):
                    chunk = windows[c:c + 4096]
                    distance, _, pulled = fold._distance(chunk.reshape(len(chunk), -1) - fold.mean)
                    contributions.append(fold._top_rows(pulled.reshape(len(chunk), w, -1), every=True)[1][:, 0])
                    distances.append(distance)
        if not contributions or float(torch.cat(contributions).max()) <= 0:
            return
        rbc = SPLIT_MARGIN * float(torch.cat(contributions).max())
        rest = float(np.percentile(torch.cat(distances).cpu().numpy(), REST_PERCENTILE))
        for model in (self, *folds):
            model.config.spike_rbc, model.config.spike_rest = rbc, rest
