"""What turns a network into a detector: `DetectorCore` and `StreamScorer` (`core`), the scaling (`scaling`) and
the scikit-learn estimator `Detector` (`estimator`), imported with scikit-learn on first use.

`from anomaly.detector import DetectorCore` costs torch but not scikit-learn; `anomaly.detector.Detector` and
`anomaly.Detector` are the same class.
"""

from __future__ import annotations

from ..thresholds import flag
from .artifacts import library_versions
from .core import CONFIG_FORMAT, PERIOD_ROWS, TRAINED_ON, DetectorCore
from .scaling import SCALED_BOUND, SCALERS, AffineScaler, make_scaler
from .stream import StreamScorer


def __getattr__(name: str):
    """`anomaly.detector.Detector` is the scikit-learn estimator, imported (with scikit-learn) on first use."""
    if name == "Detector":
        from .estimator import Detector

        return Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["CONFIG_FORMAT", "PERIOD_ROWS", "SCALED_BOUND", "SCALERS", "TRAINED_ON", "AffineScaler", "Detector",
           "DetectorCore", "StreamScorer", "flag", "library_versions", "make_scaler"]
