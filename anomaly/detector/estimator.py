"""`anomaly.Detector`: the detector as a scikit-learn estimator, with PyOD's conventions for anomaly scores.

    from anomaly import Detector
    det = Detector(window=1, epochs=50).fit(X_train)    # numpy array or DataFrame (non-numeric columns ignored)
    det.decision_function(X)   # anomaly score per row: higher = more anomalous (PyOD)
    det.predict(X)             # 1 = anomaly, 0 = normal (PyOD)
    det.score_samples(X)       # scikit-learn's convention: higher = more normal (= -decision_function)
    det.labels_, det.decision_scores_, det.threshold_    # on the training rows (PyOD)

It is a `BaseEstimator`: `get_params`, `set_params`, `sklearn.base.clone` and `Pipeline` work. A DataFrame's
columns are matched by name (`feature_names_in_`): reordered columns are put back in order, extra ones are
ignored, a missing one is refused. Scores of a row need its neighbours (windows and smoothing), so rows are
scored in the order given, as one series.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import DataError
from ..thresholds import flag
from .core import DetectorCore


class Detector(BaseEstimator, DetectorCore):
    """Scaler + PyTorch model + threshold (parameters as `anomaly.specs.TrainSpec`; see the module docstring)."""

    def fit(self, X: Any, y: Any = None, *, feature_names: list[str] | None = None, labels: Any = None,
            progress: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Detector:
        """Fit on mostly normal rows. `y` (or `labels`): optional 0/1 labels, used only by the label-based
        threshold methods (best-f1, midpoint). A list of column names as `y` is taken as `feature_names`
        (the call `fit(X, names)` predates the estimator)."""
        if isinstance(y, (list, tuple)) and y and all(isinstance(v, str) for v in y):
            feature_names, y = list(y), None
        matrix, names = _training_matrix(X)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # refitted on a plain array: names from an earlier fit no longer apply
        labels = y if labels is None else labels
        DetectorCore.fit(self, matrix, feature_names or names, None if labels is None else np.asarray(labels),
                         progress=progress, should_stop=should_stop)
        self.n_features_in_ = matrix.shape[1]
        self.labels_ = flag(self.decision_scores_, self.threshold_)
        return self

    def row_errors(self, X: Any) -> np.ndarray:
        return DetectorCore.row_errors(self, self._matrix(X))

    def score_samples(self, X: Any) -> np.ndarray:
        """scikit-learn's convention: higher = more normal (the negated `decision_function`)."""
        return -self.decision_function(X)

    def _matrix(self, X: Any) -> np.ndarray:
        """The rows as a float matrix in the fitted feature order."""
        import pandas as pd

        if isinstance(X, pd.DataFrame):
            known = getattr(self, "feature_names_in_", None)
            if known is None and hasattr(self, "config_"):  # loaded from disk: the store knows the names
                known = self.feature_names_
            if known is None:
                return _numeric(X).to_numpy(np.float64)
            missing = [str(c) for c in known if c not in X.columns]
            if missing:
                raise DataError(f"X lacks feature column(s) {', '.join(missing)}; the model uses "
                                f"{', '.join(map(str, known))}")
            return X[list(known)].to_numpy(np.float64)
        matrix = np.asarray(X, np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names_):
            raise DataError(f"X has shape {matrix.shape}; the model takes {len(self.feature_names_)} column(s) "
                            f"({', '.join(self.feature_names_)})")
        return matrix


def _training_matrix(X: Any) -> tuple[np.ndarray, list[str] | None]:
    """(float matrix, column names or None): a DataFrame's numeric columns, or an array as it is."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        numeric = _numeric(X)
        if numeric.shape[1] == 0:
            raise DataError("X has no numeric column")
        return numeric.to_numpy(np.float64), [str(c) for c in numeric.columns]
    return np.asarray(X, np.float64), None


def _numeric(frame) -> Any:
    """Numeric columns (booleans and datetimes are not features)."""
    return frame.select_dtypes(include="number", exclude=["bool", "timedelta"])
