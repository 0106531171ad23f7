"""Threshold methods. Each is one function `(scores, labels=None, **params) -> float`, registered in METHODS.

`scores` are per-row anomaly scores of rows believed normal (training or validation rows), or of labelled
rows for the methods that need labels (`needs_labels`). A row is anomalous when its score is above the
threshold.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import DataError


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


METHODS: dict[str, Callable[..., float]] = {
    "percentile": percentile,
    "meanstd": meanstd,
    "iqr": iqr,
}
NEEDS_LABELS: set[str] = set()


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
    return {"threshold": value, "method": method, "params": params, "stats": describe(scores)}


def describe(scores: np.ndarray) -> dict:
    p = np.percentile(scores, [50, 90, 95, 99])
    return {"count": int(len(scores)), "mean": float(scores.mean()), "std": float(scores.std()),
            "min": float(scores.min()), "max": float(scores.max()),
            "p50": float(p[0]), "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3])}
