"""The threshold policy: which options a method keeps, the per-row threshold of a detection, and the flag.

Pure threshold logic, below the detector and the service: the spec, detection, the live stream, plots and
evaluation all take these from here rather than from each other.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import DataError
from . import methods


def threshold_params(method: str, percentile: float | None = None, k: float | None = None, **options) -> dict:
    """The options that the threshold method takes (others are not stored with it)."""
    fn = methods.METHODS.get(method)
    if fn is None:
        raise DataError(f"unknown threshold method {method!r}; choose one of {', '.join(methods.METHODS)}")
    accepted = {p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY}
    given = {"percentile": percentile, "k": k, **options}
    params = {name: value for name, value in given.items() if name in accepted and value is not None}
    if "percentile" in params and not 0 < params["percentile"] < 100:  # say so before training, not after
        raise DataError(f"percentile must be between 0 and 100, got {params['percentile']}")
    return params


def flag(scores: np.ndarray, threshold: float) -> np.ndarray:
    """1 where the score is above the threshold; unscored rows (NaN) are never anomalies."""
    with np.errstate(invalid="ignore"):
        return (scores > threshold).astype(np.int8)


class Thresholder:
    """Per-row thresholds: a rolling one (`anomaly.thresholds.rolling`) when a threshold window is given, else the stored
    threshold, raised by the scored rows' level when `follow_level` (`rolling.LevelFollower`)."""

    def __init__(self, det, window, label: str | None = None, follow_level: bool = True):
        from .rolling import LevelFollower, RollingThreshold

        info = det.threshold_info_
        self.static = det.threshold_
        self.rolling = None if window is None else RollingThreshold(
            window, info.get("method", "percentile"), info.get("params") or {}, det.threshold_,
            label=label)
        stats = info.get("stats") or {}
        train_median = stats.get("p50")
        self.level = LevelFollower(det.threshold_, train_median, stats.get("p90")) if (
            follow_level and window is None and train_median is not None and np.isfinite(det.threshold_)) else None
        self.by_time = self.rolling is not None and self.rolling.by_time

    @property
    def moving(self) -> bool:
        return self.rolling is not None or self.level is not None

    def __call__(self, scores: np.ndarray, times: np.ndarray | None) -> np.ndarray | float:
        if self.rolling is not None:
            return self.rolling.push(scores, times)
        return self.static if self.level is None else self.level.push(scores)

    def report(self) -> dict:
        """Summary fields that say how the threshold moved, and a warning when following the level hid a drift."""
        if self.rolling is not None:
            return {"threshold_window": self.rolling.describe()}
        described = None if self.level is None else self.level.describe()
        return {} if described is None else {"threshold_level": described}

    def warnings(self) -> list[str]:
        warning = None if self.level is None else self.level.warning()
        return [warning] if warning else []
