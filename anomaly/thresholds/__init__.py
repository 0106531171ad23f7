"""Everything about "is this row anomalous": the threshold methods (`methods`), thresholds that follow the data
(`rolling`) and the policy that applies them (`policy`: `flag`, `Thresholder`, `threshold_params`).

`from anomaly import thresholds; thresholds.compute(...)` reads the methods through this face; `rolling` is
imported only by those who use it (`from anomaly.thresholds.rolling import RollingThreshold`).
"""

from __future__ import annotations

from .methods import (
    METHODS,
    NEEDS_LABELS,
    best_f1,
    compute,
    describe,
    dynamic,
    expected_rate,
    iqr,
    load_labels,
    meanstd,
    midpoint,
    percentile,
    pot,
)
from .policy import Thresholder, flag, threshold_params

__all__ = ["METHODS", "NEEDS_LABELS", "Thresholder", "best_f1", "compute", "describe", "dynamic", "expected_rate",
           "flag", "iqr", "load_labels", "meanstd", "midpoint", "percentile", "pot", "threshold_params"]
