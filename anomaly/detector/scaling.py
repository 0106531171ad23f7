"""Scaling the raw rows: the scikit-learn scaler used in training, and `AffineScaler`, the per-feature affine
form of it that detection applies (stored in model_config.json, so detection needs neither scikit-learn nor
unpickling)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError

SCALERS = ("standard", "minmax", "robust")
SCALED_BOUND = 1e6  # standard units: far beyond any normal value, yet its squared error stays finite in float32


def make_scaler(name: str):
    """A scikit-learn scaler (imported only when training: its import is slow,
    docs/decisions/0012-detection-fast-paths.md)."""
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    if name not in SCALERS:
        raise DataError(f"unknown scaler {name!r}; choose one of {', '.join(SCALERS)}")
    return {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}[name]()


class AffineScaler:
    """Every supported scaler is per-feature affine, z = x * mul + add. model_config.json stores mul and add, so
    detection needs neither scikit-learn nor unpickling scaler.pkl (which is kept for users and classic paths).

    Scaling runs in float64 and scaled values are clipped to +-SCALED_BOUND standard units before the model's
    float32: a value beyond float32's range (or inf) is a huge but finite input, so it gets the largest error of
    the file instead of becoming inf, NaN or a "missing" value."""

    def __init__(self, mul, add):
        self.mul = np.asarray(mul, np.float64)
        self.add = np.asarray(add, np.float64)

    @classmethod
    def from_sklearn(cls, scaler, n_features: int) -> "AffineScaler":
        # From the fitted parameters where they are known: transform(1) - transform(0) cancels to 0 for a column
        # of ~1e30 (its mean dwarfs the 1), which silently gave that column no weight at all.
        scale = getattr(scaler, "scale_", None)
        if scale is not None and hasattr(scaler, "min_"):  # MinMaxScaler: x * scale_ + min_
            return cls(scale, scaler.min_)
        if scale is not None:  # StandardScaler (mean_), RobustScaler (center_): (x - center) / scale
            center = getattr(scaler, "mean_", getattr(scaler, "center_", None))
            center = np.zeros(n_features) if center is None else np.asarray(center, np.float64)
            return cls(1.0 / np.asarray(scale, np.float64), -center / np.asarray(scale, np.float64))
        zero = scaler.transform(np.zeros((1, n_features), np.float64))[0]
        one = scaler.transform(np.ones((1, n_features), np.float64))[0]
        return cls(one - zero, zero)

    def transform(self, X: np.ndarray) -> np.ndarray:
        # C order first: a frame's numbers come out column-major, and scaling them in that order took many times
        # longer, the largest cost of detection after parsing (docs/decisions/0012-detection-fast-paths.md)
        X = np.ascontiguousarray(X, np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            Z = X * self.mul + self.add
        np.clip(Z, -SCALED_BOUND, SCALED_BOUND, out=Z)  # NaN stays NaN: only a missing value is missing
        return Z.astype(np.float32)

    def to_dict(self) -> dict:
        return {"mul": self.mul.tolist(), "add": self.add.tolist()}


def _checked_scaling(affine: AffineScaler, X: np.ndarray, names: list[str]) -> np.ndarray:
    """The scaled training rows, or a clear refusal when a column cannot be scaled: values so large that their
    variance overflows (the column would silently get weight 0), or so small (denormal) that they all scale to
    the same float32 (the column would carry nothing)."""
    broken = ~np.isfinite(affine.mul) | (affine.mul == 0) | ~np.isfinite(affine.add)
    if broken.any():
        cols = [names[i] for i in np.flatnonzero(broken)]
        top = float(np.abs(X[:, broken]).max())
        raise DataError(f"column(s) {', '.join(cols)} hold values too large to scale (up to {top:.3g}); "
                        "divide them down before training")
    Z = affine.transform(X)
    lost = (np.ptp(X, axis=0) > 0) & (np.ptp(Z, axis=0) == 0)
    if lost.any():
        cols = [names[i] for i in np.flatnonzero(lost)]
        top = float(np.abs(X[:, lost]).max())
        raise DataError(f"column(s) {', '.join(cols)} vary too little to learn from (values up to {top:.3g}, "
                        "below floating-point precision); multiply them up before training")
    return Z
