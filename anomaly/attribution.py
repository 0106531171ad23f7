"""Which features drove a row's error, and the range each feature was expected in: small numpy helpers shared by
detection's summary, the incidents, the live stream and training (which stores the expected ranges).
"""

from __future__ import annotations

import math

import numpy as np

TOP_FEATURES = 3
EXPECTED_PERCENTILES = (1, 99)  # a training column's expected range: its 1st to 99th percentile


def contributions(row_err: np.ndarray) -> np.ndarray:
    """Each feature's share of a row's error (rows sum to 1)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return row_err / row_err.sum(axis=1, keepdims=True)


def top_features(err: np.ndarray, names: list[str], k: int = TOP_FEATURES) -> list[dict]:
    """The features with the largest share of one row's error."""
    return top_features_rows(err[None, :], names, k)[0]


def top_features_rows(errs: np.ndarray, names: list[str], k: int = TOP_FEATURES) -> list[list[dict]]:
    """`top_features` for many rows at once (vectorised: detection can flag tens of thousands of rows)."""
    if len(errs) == 0:
        return []
    share = np.nan_to_num(contributions(errs), nan=0.0)
    order = np.argsort(-share, axis=1)[:, :k]
    picked = np.round(np.take_along_axis(share, order, axis=1).astype(np.float64), 4)
    return [[{"feature": names[j], "share": float(v)} for j, v in zip(o, sh) if v > 0]
            for o, sh in zip(order.tolist(), picked.tolist())]


# --- expected ranges -----------------------------------------------------------------------------------------


def expected_ranges(X: np.ndarray, features: list[str]) -> dict[str, list[float]]:
    """{feature: [low, high]}: each raw training column's 1st and 99th percentile (stored with the version)."""
    if not len(X):
        return {}
    lo, hi = np.percentile(np.asarray(X, np.float64), EXPECTED_PERCENTILES, axis=0)
    return {f: [_g(a), _g(b)] for f, a, b in zip(features, lo, hi)}


def _g(x: float, digits: int = 6) -> float | None:
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None
