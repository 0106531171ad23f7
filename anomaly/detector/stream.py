"""`StreamScorer`: a detector's scores of consecutive chunks of raw rows, each row scored once it is final."""

from __future__ import annotations

import numpy as np

from ..scoring import SCORE_BATCH, RowScorer, row_scores
from ..smoothing import SpikeSmoother


class StreamScorer:
    """Scores consecutive chunks of raw rows; each `push` returns (errors, scores) of the rows now final.

    `detector` is a fitted `DetectorCore` (not imported here: the core imports this module)."""

    def __init__(self, detector, batch_size: int = SCORE_BATCH):
        self.detector = detector
        self.rows = RowScorer(detector.model_, len(detector.feature_names_), batch_size, detector.precision)
        self.smoother = SpikeSmoother(detector.smooth_, detector.spike_floor_)

    def push(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(X) == 0:
            return np.empty((0, len(self.detector.feature_names_)), np.float32), np.empty(0, np.float32)
        errors = self.smoother.push(self.rows.push(self.detector.transform(X)))
        return errors, row_scores(errors)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        errors = self.smoother.push(self.rows.finish())
        tail = self.smoother.finish()
        if len(tail):
            errors = np.concatenate([errors, tail])
        return errors, row_scores(errors)
