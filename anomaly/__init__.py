"""Time-series anomaly detection on your own CSV/TXT data, built on PyTorch.

Heavy modules (torch, scikit-learn) are imported only where needed; `import anomaly` stays cheap.
`anomaly.Detector` (the scikit-learn estimator) is imported on first use.
"""

from __future__ import annotations

from ._version import __version__


def __getattr__(name: str):
    if name == "Detector":
        from .detector.estimator import Detector

        return Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Detector", "__version__"]
