"""Threshold methods. Each is one function `(scores, labels=None, **params) -> float`, registered in METHODS.

`scores` are per-row anomaly scores of rows believed normal (training or validation rows), or of labelled
rows for the methods that need labels (`needs_labels`). A row is anomalous when its score is above the
threshold.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import DataError


def percentile(scores: np.ndarray, labels=None, *, percentile: float = 95.0, **_) -> float:
    """The given percentile of the normal scores: about (100 - percentile)% of normal rows are flagged."""
    if not 0 < percentile < 100:
        raise DataError(f"--percentile must be between 0 and 100, got {percentile}")
    return float(np.percentile(scores, percentile))


def meanstd(scores: np.ndarray, labels=None, *, k: float = 3.0, **_) -> float:
    """Mean plus k standard deviations of the normal scores."""
    return float(scores.mean() + k * scores.std())


def iqr(scores: np.ndarray, labels=None, *, k: float = 1.5, **_) -> float:
    """Tukey's fence: Q3 + k * (Q3 - Q1). With the default k = 3 for meanstd, iqr keeps the classic 1.5."""
    q1, q3 = np.percentile(scores, [25, 75])
    return float(q3 + k * (q3 - q1))


def pot(scores: np.ndarray, labels=None, *, risk: float = 1e-3, level: float = 0.98, **_) -> float:
    """Peaks over threshold (extreme value theory, as in SPOT, Siffer et al. KDD 2017): fit a generalized
    Pareto distribution to the excesses over the `level` quantile and return the score exceeded by normal
    rows with probability `risk`. Needs no contamination guess, and extrapolates beyond the largest score seen."""
    from scipy import stats

    if not 0 < risk < 1:
        raise DataError(f"--risk must be between 0 and 1, got {risk}")
    if not 0 < level < 1:
        raise DataError(f"POT level must be between 0 and 1, got {level}")
    scores = np.sort(np.asarray(scores, np.float64))
    n = len(scores)
    # At least 10 excesses (fewer rows than 500 would leave too few for a fit at level 0.98).
    n_exc = min(n - 1, max(10, int(np.ceil((1 - level) * n))))
    if n_exc < 5:
        return float(scores[-1])
    t = scores[n - n_exc - 1]
    excess = scores[scores > t] - t
    if len(excess) < 5 or np.ptp(excess) == 0:
        return float(scores[-1])
    if risk * n >= len(excess):  # the target quantile lies below the initial threshold: read it off directly
        return float(np.quantile(scores, 1 - risk))
    shape, scale = _gpd_fit(excess, stats)
    ratio = risk * n / len(excess)
    if abs(shape) < 1e-8:
        return float(t - scale * np.log(ratio))
    return float(t + scale / shape * (ratio ** -shape - 1))


def _gpd_fit(excess: np.ndarray, stats) -> tuple[float, float]:
    """Maximum-likelihood GPD (shape, scale) with the location fixed at 0; the method of moments when the
    likelihood fit fails or lands on an implausible shape (a very short or degenerate tail)."""
    mean, var = excess.mean(), excess.var()
    mom_shape = 0.5 * (1 - mean ** 2 / var)
    mom = (mom_shape, 0.5 * mean * (mean ** 2 / var + 1))
    try:
        shape, _, scale = stats.genpareto.fit(excess, floc=0)
    except (ValueError, RuntimeError, FloatingPointError):
        return mom
    if not (np.isfinite(shape) and np.isfinite(scale) and scale > 0 and -0.5 <= shape < 1):
        return mom
    return float(shape), float(scale)


def dynamic(scores: np.ndarray, labels=None, *, z_min: float = 2.5, z_max: float = 12.0, prune: float = 0.13,
            **_) -> float:
    """Telemanom's non-parametric dynamic threshold (Hundman et al., KDD 2018; Orion's `find_anomalies`):
    among epsilon = mean + z * std (z from `z_min` to `z_max` in steps of 0.5), take the one whose removal of
    the scores above it most reduces their mean and spread, relative to how many rows and runs it flags
    (runs count squared, favouring a few clear sequences). Then prune: runs whose peak is within `prune`
    (13%) of the next weaker peak, down to the strongest normal score, are normal after all. Returns a single
    threshold: epsilon, raised above the strongest pruned peak. Meant for the scores of the data being
    examined (with `--threshold-window`, the preceding rows); on clean calibration rows it flags few or none."""
    e = np.asarray(scores, np.float64)
    mu, sd = e.mean(), e.std()
    if not (sd > 0 and mu > 0):
        return float(e.max())
    best, eps = -np.inf, float(e.max())
    for z in np.arange(z_min, z_max + 1e-9, 0.5):
        t = mu + z * sd
        over = e > t
        n_over = int(over.sum())
        if n_over == 0:
            break
        below = e[~over]
        n_runs = int(np.count_nonzero(np.diff(np.r_[0, over.view(np.int8)]) == 1))
        gain = ((mu - below.mean()) / mu + (sd - below.std()) / sd) / (n_over + n_runs ** 2)
        if gain > best:
            best, eps = gain, float(t)
    over = e > eps
    if not over.any():
        return eps
    edges = np.flatnonzero(np.diff(np.r_[0, over.view(np.int8), 0]))
    peaks = np.sort(np.maximum.reduceat(np.r_[e, -np.inf], edges)[::2])[::-1]
    ladder = np.r_[peaks, e[~over].max() if (~over).any() else 0.0]
    drop = (ladder[:-1] - ladder[1:]) / np.where(ladder[:-1] > 0, ladder[:-1], 1)
    kept = int(np.flatnonzero(drop > prune).max()) + 1 if (drop > prune).any() else 0
    if kept < len(peaks):  # the strongest pruned run's peak must stay below the threshold
        eps = max(eps, float(np.nextafter(peaks[kept], np.inf)))
    return eps


def best_f1(scores: np.ndarray, labels=None, **_) -> float:
    """The threshold that maximises F1 on labelled rows (between the best-separated scores)."""
    from ..metrics import best_f1 as _best

    return _best(labels, scores)[1]


def midpoint(scores: np.ndarray, labels=None, **_) -> float:
    """Halfway between the typical (median) score of normal rows and that of anomalous rows."""
    labels = np.asarray(labels).astype(bool)
    if labels.all():
        raise DataError("threshold method 'midpoint' needs labelled normal rows too")
    return float((np.median(scores[~labels]) + np.median(scores[labels])) / 2)


METHODS: dict[str, Callable[..., float]] = {
    "percentile": percentile,
    "meanstd": meanstd,
    "iqr": iqr,
    "pot": pot,
    "dynamic": dynamic,
    "best-f1": best_f1,
    "midpoint": midpoint,
}
NEEDS_LABELS: set[str] = {"best-f1", "midpoint"}


def load_labels(path: str, n_rows: int, column: str | None = None) -> np.ndarray:
    """0/1 labels, one per data row, from a file: its label column (`label`, or `column`), or its only column.
    Must have exactly `n_rows` rows."""
    from .. import data

    p = data.check_file(path)
    fmt = data.sniff(p)
    names = list(fmt.names)
    col = data.find_label_column(names, column) or (names[0] if len(names) == 1 else None)
    if col is None:
        raise DataError(f"{p}: no label column (name it 'label' or give a single-column file)")
    frame = data._read_full(p, fmt, [col])
    import pandas as pd
    lab = pd.to_numeric(frame[col], errors="coerce").to_numpy()
    if np.isnan(lab).any():
        raise DataError(f"{p}: label column {col!r} has non-numeric or empty values")
    if len(lab) != n_rows:
        raise DataError(f"{p} has {len(lab)} label rows but the data has {n_rows} rows; they must match row for row")
    return (lab > 0).astype(np.int8)


def compute(method: str, scores: np.ndarray, labels: np.ndarray | None = None, **params) -> dict:
    """Threshold plus the statistics of the score distribution it came from, ready for threshold.json."""
    if method not in METHODS:
        raise DataError(f"unknown threshold method {method!r}; choose one of {', '.join(METHODS)}")
    valid = np.isfinite(scores)
    scores = np.asarray(scores, np.float64)[valid]
    if labels is not None:
        labels = np.asarray(labels)[valid]
    if method in NEEDS_LABELS and (labels is None or not labels.any()):
        raise DataError(f"threshold method {method!r} needs labelled data with at least one anomaly "
                        "(--labels FILE or --label-column)")
    if len(scores) == 0:
        raise DataError("no scored rows to set a threshold from (is the data shorter than the window?)")
    value = METHODS[method](scores, labels, **params)
    normal = scores if labels is None else scores[np.asarray(labels) == 0]
    return {"threshold": value, "method": method, "params": params, "stats": describe(scores),
            "expected_rate": expected_rate(normal, value)}


def expected_rate(normal_scores: np.ndarray, threshold: float) -> float:
    """The fraction of normal rows the threshold flags: how many flags new normal data should get."""
    return float((normal_scores > threshold).mean()) if len(normal_scores) else 0.0


def describe(scores: np.ndarray) -> dict:
    p = np.percentile(scores, [50, 90, 95, 99])
    return {"count": int(len(scores)), "mean": float(scores.mean()), "std": float(scores.std()),
            "min": float(scores.min()), "max": float(scores.max()),
            "p50": float(p[0]), "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3])}
