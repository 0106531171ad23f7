"""`anomaly.estimator.Detector`, the name the scikit-learn estimator had before it moved to
`anomaly.detector.estimator`; kept so that older imports and references keep working."""

from __future__ import annotations

from .detector.estimator import Detector

__all__ = ["Detector"]
