"""Classic baselines scored on the same windows as a detector, for `anomaly evaluate`.

Each baseline follows the scikit-learn / PyOD convention: `fit(X_train)`, `decision_function(X)` (one score per
row, higher = more anomalous). Rows are scaled with a StandardScaler fitted on the training rows, cut into
windows of `window` consecutive rows (flattened), and a window's score is shared by its rows: a row's score is
the mean over the windows that cover it, as the detector's reconstruction error is.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler


def windows(Z: np.ndarray, window: int) -> np.ndarray:
    """(rows - window + 1, window * features) flattened sliding windows (a view, no copy)."""
    w = np.lib.stride_tricks.sliding_window_view(Z, window, axis=0)  # (n, F, window)
    return w.transpose(0, 2, 1).reshape(len(w), -1)


def spread_to_rows(window_scores: np.ndarray, n_rows: int, window: int) -> np.ndarray:
    """Row score = mean of the scores of the windows covering the row."""
    if window == 1:
        return window_scores.astype(np.float64)
    sums = np.convolve(window_scores, np.ones(window))[:n_rows]
    counts = np.convolve(np.ones(len(window_scores)), np.ones(window))[:n_rows]
    return sums / counts


class _Windowed:
    max_train_windows = 20000  # the fits are O(n) or worse; a sample of windows describes "normal" well enough

    def __init__(self, window: int = 1, seed: int = 0):
        self.window, self.seed = int(window), seed

    def fit(self, X: np.ndarray) -> "_Windowed":
        self.scaler_ = StandardScaler().fit(X)
        W = windows(self._scale(X), self.window)
        if len(W) > self.max_train_windows:
            keep = np.random.default_rng(self.seed).choice(len(W), self.max_train_windows, replace=False)
            W = W[np.sort(keep)]
        self._fit(np.ascontiguousarray(W))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        if len(X) < self.window:
            return np.full(len(X), np.nan)
        W = windows(self._scale(X), self.window)
        scores = np.concatenate([self._score(np.ascontiguousarray(W[i:i + 65536])) for i in range(0, len(W), 65536)])
        return spread_to_rows(scores, len(X), self.window)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return np.nan_to_num(self.scaler_.transform(np.asarray(X, np.float64)))


class IsolationForestBaseline(_Windowed):
    """scikit-learn IsolationForest (100 trees, 256 samples per tree); score = -score_samples."""

    def _fit(self, W):
        self.model_ = IsolationForest(n_estimators=100, random_state=self.seed, n_jobs=1).fit(W)

    def _score(self, W):
        return -self.model_.score_samples(W)


class PCABaseline(_Windowed):
    """PCA reconstruction error: keep the leading components that explain 90% of the variance (at most 64,
    found by randomized SVD so wide windows stay fast), score = mean squared error of a window's reconstruction."""

    variance = 0.9
    max_components = 64

    def _fit(self, W):
        self.mean_ = W.mean(0)
        k = min(self.max_components, *W.shape) - 1
        if k < 1:
            self.components_ = np.zeros((0, W.shape[1]))
            return
        pca = PCA(n_components=k, svd_solver="randomized", random_state=self.seed).fit(W)
        total = W.var(0, ddof=1).sum()
        share = np.cumsum(pca.explained_variance_) / total if total > 0 else np.ones(k)
        keep = int(min(k, np.searchsorted(share, self.variance) + 1))
        self.components_ = pca.components_[:keep]

    def _score(self, W):
        centred = W - self.mean_
        rec = centred @ self.components_.T @ self.components_
        return ((centred - rec) ** 2).mean(1)


class ZScoreBaseline:
    """Absolute z-score against the training rows' mean and standard deviation, averaged over features."""

    def __init__(self, window: int = 1, seed: int = 0):
        self.window = window  # unused: a per-row statistic

    def fit(self, X: np.ndarray) -> "ZScoreBaseline":
        self.mean_ = X.mean(0)
        std = X.std(0)
        self.std_ = np.where(std > 0, std, 1.0)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.abs((np.asarray(X, np.float64) - self.mean_) / self.std_).mean(1)


BASELINES = {"iforest": IsolationForestBaseline, "pca": PCABaseline, "zscore": ZScoreBaseline}
