"""`--window auto`: a window of one dominant period, estimated from the autocorrelation of the training rows.

The autocorrelation of every non-constant column (standardised) is averaged; the period is the lag of its
highest peak after it first drops below zero (before that, lags only measure smoothness), taking the shortest
lag whose peak is nearly as high (so 2x and 3x the period lose to the period). Without a clear peak (trends,
noise) the fallback window is used. The result is bounded to [MIN_WINDOW, MAX_WINDOW] and to a tenth of the rows.
"""

from __future__ import annotations

import numpy as np

MIN_WINDOW = 4
MAX_WINDOW = 128  # longer windows make sequence models slow on CPU for little gain
FALLBACK_WINDOW = 32
MIN_PEAK = 0.1  # autocorrelation a peak needs to count as a period


def autocorrelation(X: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean autocorrelation over the non-constant columns at lags 0..max_lag (via the FFT)."""
    X = np.asarray(X, np.float64)
    X = X.reshape(len(X), -1)
    std = X.std(axis=0)
    Z = (X[:, std > 0] - X[:, std > 0].mean(axis=0)) / std[std > 0]
    if Z.shape[1] == 0:
        return np.zeros(max_lag + 1)
    n = len(Z)
    spectrum = np.fft.rfft(Z, n=2 * n, axis=0)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=0)[: max_lag + 1] / (n - np.arange(max_lag + 1))[:, None]
    return acf.mean(axis=1) / acf[0].mean()


def dominant_period(X: np.ndarray, max_lag: int | None = None) -> int | None:
    """The dominant period in rows, or None when the series has no clear one."""
    n = len(X)
    max_lag = min(max_lag or n // 3, n // 2)
    if max_lag < 2:
        return None
    acf = autocorrelation(X, max_lag)
    below = np.flatnonzero(acf < 0)
    if len(below) == 0:
        return None
    lags = np.arange(below[0] + 1, max_lag)
    peaks = lags[(acf[lags] >= acf[lags - 1]) & (acf[lags] >= acf[lags + 1]) & (acf[lags] >= MIN_PEAK)]
    if len(peaks) == 0:
        return None
    best = acf[peaks].max()
    return int(peaks[acf[peaks] >= 0.9 * best][0])


def auto_window(X: np.ndarray) -> int:
    """The window `--window auto` chooses for training rows `X`."""
    period = dominant_period(X, max_lag=4 * MAX_WINDOW)
    window = FALLBACK_WINDOW if period is None else period
    return int(max(MIN_WINDOW, min(window, MAX_WINDOW, max(1, len(X) // 10))))
