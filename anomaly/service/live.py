"""Live scoring: points scored one by one as they arrive (the HTTP live stream)."""

from __future__ import annotations

import numpy as np

from ..attribution import top_features
from ..errors import DataError
from ..loader import artifact_paths, load_detector
from ..store import ArtifactPaths, ModelStore
from ..thresholds import Thresholder, flag, rolling


def newest_row_errors(model, windows):
    """The error of the newest row of each window: with spikes split onto their rows (pca), the shared part plus
    the spike part when a spike is that row, so a spike is flagged when it arrives and not again after it."""
    if not hasattr(model, "split_errors"):
        return model.errors(windows)[:, -1]
    shared, rows, spikes = model.split_errors(windows)
    return shared + (spikes * (rows == windows.shape[1] - 1)[:, :, None]).sum(1)


class LiveScorer:
    """Scores points one by one as they arrive (the HTTP live stream), keeping the last `span` rows.

    A point's score is the error of the newest row of the newest window ending at it, so it is known the
    moment the point arrives. Batch detection instead averages a row's error over every window that covers
    it, so for window models (window > 1) live and batch scores of the same row can differ slightly.
    Points before a full window of history get `reconstruction_error: None` and are never anomalies.
    """

    def __init__(self, version: str | None = None, store: ModelStore | None = None,
                 paths: ArtifactPaths | None = None, threshold_window: int | str | None = None,
                 device: str = "auto"):
        if paths is None:
            paths, self.version = artifact_paths(version, store)
        else:
            self.version = str(paths.model.parent)
        self.detector = load_detector(paths, self.version, device)
        self.features = list(self.detector.feature_names_)
        self.span = int(self.detector.model_.span)
        self.threshold = float(self.detector.threshold_)
        self.history = np.empty((0, len(self.features)), np.float32)  # scaled rows, at most span - 1
        # Batch detection smooths over a centred span; live, the rows after a point are not there yet, so a
        # point gets what batch detection gives the last row of a file: the mean over itself and the rows before.
        from ..smoothing import CenteredMean, LiveSpikeSmoother
        self.smoother = LiveSpikeSmoother(CenteredMean(self.detector.smooth_).back + 1, self.detector.spike_floor_)
        window = rolling.parse_window(threshold_window)
        if window is not None and not isinstance(window, int):
            raise DataError("the live stream takes threshold_window as a number of points, not a time span")
        self.threshold_window = window
        self.thresholder = Thresholder(self.detector, window, None if window is None else str(window))
        # as in batch detection, a threshold window also re-centres each feature on its recent level
        self.baseline = None if window is None else rolling.DriftBaseline(window, self.detector.feature_levels(),
                                                                           self.detector.period())
        self.count = 0

    def _matrix(self, points: list) -> np.ndarray:
        rows = []
        for i, p in enumerate(points):
            if isinstance(p, dict):
                missing = [f for f in self.features if f not in p]
                if missing:
                    raise DataError(f"point {i} lacks feature(s) {', '.join(missing)}; the model uses "
                                    f"{', '.join(self.features)}")
                p = [p[f] for f in self.features]
            elif len(p) != len(self.features):
                raise DataError(f"point {i} has {len(p)} values; the model uses {len(self.features)} "
                                f"({', '.join(self.features)})")
            try:
                rows.append([float(v) for v in p])
            except (TypeError, ValueError):
                raise DataError(f"point {i} has a non-numeric value") from None
        X = np.asarray(rows, np.float64).reshape(len(rows), len(self.features))
        if np.isnan(X).any():  # a huge value or inf is scored (the strongest anomaly); a missing one cannot be
            raise DataError("points must be numbers (no NaN or empty values)")
        return X

    def push(self, points: list) -> list[dict]:
        """Score new points (lists of values in feature order, or dicts keyed by feature name)."""
        import torch

        from ..scoring import gather

        X = self._matrix(points)
        Z = self.detector.transform(X if self.baseline is None else self.baseline.push(X))
        rows = np.concatenate([self.history, Z])
        ends = np.arange(len(self.history), len(rows))  # positions of the new points in `rows`
        ends = ends[ends >= self.span - 1]
        errors = np.full((len(Z), len(self.features)), np.nan)
        if len(ends):
            device = self.detector.device_
            starts = torch.from_numpy(ends - self.span + 1).to(device)
            with torch.inference_mode():
                err = newest_row_errors(self.detector.model_, gather(torch.from_numpy(rows).to(device), starts, self.span))
            errors[ends - len(self.history)] = err.float().cpu().numpy()  # float32: MPS has no float64
        errors = self.smoother.push(errors.astype(np.float32))
        with np.errstate(invalid="ignore"):
            scores = errors.mean(axis=1)
        threshold = self.thresholder(scores, None)
        flags = flag(scores, threshold)
        self.history = rows[max(0, len(rows) - (self.span - 1)):] if self.span > 1 else rows[:0]
        out = []
        for i in range(len(Z)):
            scored = bool(np.isfinite(scores[i]))
            out.append({"index": self.count + i, "reconstruction_error": float(scores[i]) if scored else None,
                        "is_anomaly": bool(flags[i]),
                        **({"threshold": float(threshold[i])} if self.thresholder.moving else {}),
                        "top_features": top_features(errors[i], self.features) if scored else []})
        self.count += len(Z)
        return out

