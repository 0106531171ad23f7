"""`DetectorCore`: scaler + model + threshold: fitting, scoring, saving and loading.

This is what detection, the live stream and the servers load (`anomaly.loader`); it never imports
scikit-learn (a noticeable share of start-up: docs/decisions/0012-detection-fast-paths.md) unless it trains.
The public estimator, `anomaly.Detector` (`anomaly.detector.estimator`), adds scikit-learn's conventions on top:
`get_params`/`clone`/`Pipeline`, DataFrame input matched by column name, `score_samples` with higher = more normal.

    core.decision_function(X)  # anomaly score per row, higher = more anomalous (PyOD's convention)
    core.predict(X)            # 1 = anomaly, 0 = normal
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import time
import warnings
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch

from .. import defaults, models, period, thresholds, training
from ..attribution import expected_ranges
from ..device import check_precision, device_name, resolve_device
from ..errors import ArtifactError, DataError
from ..jsonsafe import numpy_default
from ..loadchecks import check_scaling, check_weights
from ..scoring import SCORE_BATCH, row_errors, row_scores
from ..smoothing import smooth_errors, smooth_rows, spike_floor
from ..store import (
    ArtifactPaths,
    atomic_write_bytes,
    check_complete,
    now_iso,
    read_json,
    remove_stale_files,
    validate_artifacts,
)
from ..thresholds import flag  # noqa: F401  (anomaly.detector.flag: where callers found it first)
from .artifacts import SET_KEY, _check_set, _sha256, _write_bytes, library_versions
from .scaling import SCALED_BOUND, SCALERS, AffineScaler, _checked_scaling, make_scaler  # noqa: F401
from .stream import StreamScorer

CONFIG_FORMAT = 1
TRAINED_ON = ("device", "device_name", "precision", "train_seconds")  # model card: where and how long it trained
PERIOD_ROWS = 20_000  # the dominant period is estimated from at most this many of the last training rows


class DetectorCore:
    """Every constructor argument is stored as given (scikit-learn's contract, so `clone` works on the
    estimator); what `fit` derives from them ends in an underscore."""

    def __init__(
        self,
        model_type: str = defaults.MODEL_TYPE,
        window: int | str | None = defaults.WINDOW,
        scaler: str = defaults.SCALER,
        threshold_method: str = defaults.THRESHOLD_METHOD,
        threshold_params: dict | None = None,
        epochs: int = defaults.EPOCHS,
        batch_size: int = defaults.BATCH_SIZE,
        learning_rate: float = defaults.LEARNING_RATE,
        validation_split: float = defaults.VALIDATION_SPLIT,
        patience: int = defaults.PATIENCE,
        seed: int = defaults.SEED,
        smooth: int | None = None,
        device: str = "auto",
        precision: str = "fp32",
        encoding_dim: int | None = None,
        hidden: list[int] | None = None,
        layers: int | None = None,
        heads: int | None = None,
        dropout: float | None = None,
        error: str | None = None,
        samples: int | None = None,
    ):
        self.model_type = model_type
        self.window = window
        self.scaler = scaler
        self.threshold_method = threshold_method
        self.threshold_params = threshold_params  # None = {"percentile": 95}
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.validation_split, self.patience, self.seed = validation_split, patience, seed
        self.smooth = smooth  # rows in the centred score smoothing; None = 2 * window - 1
        self.device, self.precision = device, precision  # where the model trains and scores (`anomaly.device`)
        # the network's hyperparameters; each model type takes the ones that apply to it (`models.make_config`)
        self.encoding_dim, self.hidden, self.layers, self.heads = encoding_dim, hidden, layers, heads
        self.dropout, self.error, self.samples = dropout, error, samples

    @property
    def model_params(self) -> dict:
        return {name: getattr(self, name) for name in models.MODEL_PARAMS if getattr(self, name) is not None}

    # --- fitting ---------------------------------------------------------------------------------------

    def fit(self, X: np.ndarray, feature_names: list[str] | None = None, labels: np.ndarray | None = None,
            progress: training.ProgressFn | None = None, should_stop: Callable[[], bool] | None = None) -> DetectorCore:
        started = time.perf_counter()
        X = np.asarray(X, np.float64)  # float64: a column of 1e30 must not overflow the scaler's variance
        if X.ndim != 2 or not np.isfinite(X).all():
            raise DataError("training data must be a finite 2-D array (rows, features)")
        _check_training_args(self)
        self.device_ = resolve_device(self.device)
        check_precision(self.precision, self.device_)
        self.feature_names_ = list(feature_names or [f"x{i}" for i in range(X.shape[1])])
        self.feature_medians_ = np.median(X, axis=0) if len(X) else np.zeros(X.shape[1])
        self.period_rows_ = period.dominant_period(X[-PERIOD_ROWS:]) if len(X) > 8 else None
        module = models.get(self.model_type)
        window = models.default_window(self.model_type) if self.window is None else self.window
        self.window_auto_ = window == "auto"  # estimate one dominant period from the training rows
        auto = getattr(module, "auto_window", period.auto_window)
        self.window_ = auto(X) if self.window_auto_ else int(window)
        # A flat metric has no shape to learn: each row on its own, so a departure flags its own rows only
        # (a model type may keep its window there: FLAT_WINDOW = 0).
        self.flat_ = bool(len(X)) and bool((np.ptp(X, axis=0) == 0).all())
        flat_window = getattr(module, "FLAT_WINDOW", 1)
        if self.flat_ and flat_window:
            self.window_ = flat_window
        training.seed_everything(self.seed)
        self.model_config_ = models.make_config(self.model_type, X.shape[1], self.window_, self.model_params)
        # built on the CPU, then moved: the same seed gives the same initial weights on every device
        self.model_ = models.get(self.model_type).Model(self.model_config_).to(self.device_)
        if len(X) < self.model_.span + 1:
            raise DataError(f"need at least {self.model_.span + 1} rows to train with window {self.window_}; got {len(X)}")
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an overflow is reported below, by column
            self.scaler_ = make_scaler(self.scaler).fit(X)
            self.affine_ = AffineScaler.from_sklearn(self.scaler_, X.shape[1])
        Z = _checked_scaling(self.affine_, X, self.feature_names_)
        Z_train, Z_val = training.split_rows(Z, self.validation_split, self.model_.span + 1)
        self.history_ = training.fit(self.model_, Z_train, Z_val, epochs=self.epochs, batch_size=self.batch_size,
                                     learning_rate=self.learning_rate, patience=self.patience, seed=self.seed,
                                     progress=progress, should_stop=should_stop, precision=self.precision)
        default_smooth = getattr(module, "DEFAULT_SMOOTH", None) or smooth_rows(self.window_)
        self.smooth_ = default_smooth if self.smooth is None else int(self.smooth)
        if self.smooth_ < 1:
            raise DataError(f"smooth must be at least 1 row (1 = no smoothing), got {self.smooth_}")
        if self.flat_:
            self.smooth_ = 1
        raw, self.calibration_method_ = self._calibration_errors(Z, fitting=True)
        self.spike_floor_ = spike_floor(raw) if self.smooth_ > 1 else None
        self.decision_scores_ = self._calibration_scores(raw)
        # The threshold comes from every training row, fitted and held out alike. Smoothed scores change
        # slowly, so the held-out tail alone (10% of the rows) held only a handful of independent values and
        # put the threshold wherever that stretch happened to sit: new normal rows were flagged several times
        # as often as promised. Early stopping keeps fitted rows' errors close to held-out ones
        # (docs/decisions/0002-out-of-fold-calibration.md).
        n_val = 0 if Z_val is None else len(Z_val)
        if self.calibration_method_ != "in-sample":  # every row was scored by a model fitted without it
            n_val = len(Z)
        self.threshold_source_ = "training"
        self.calibration_ = {"rows": int(np.isfinite(self.decision_scores_).sum()), "held_out_rows": n_val,
                             "fitted_rows": len(Z) - n_val, "errors": self.calibration_method_}
        params = {"percentile": defaults.PERCENTILE} if self.threshold_params is None else self.threshold_params
        self.set_threshold(self.threshold_method, self.decision_scores_, labels, **params)
        if self.flat_:  # identical rows differ only by float rounding: any departure from the constant is anomalous
            top = float(np.nanmax(self.decision_scores_))
            self.threshold_ = self.threshold_info_["threshold"] = float(np.nextafter(top, np.inf))
            self.threshold_info_["expected_rate"] = 0.0
            self.threshold_info_["note"] = ("constant training data: window 1, no smoothing, threshold just above "
                                            "the highest training score (any departure is flagged)")
        self.train_stats_ = thresholds.describe(self.decision_scores_[np.isfinite(self.decision_scores_)])
        self.expected_ranges_ = expected_ranges(X, self.feature_names_)  # incidents say what values were normal
        self.train_seconds_ = round(time.perf_counter() - started, 3)
        return self

    def set_threshold(self, method: str, scores: np.ndarray, labels: np.ndarray | None = None, **params) -> dict:
        self.threshold_info_ = thresholds.compute(method, scores, labels, **params)
        self.threshold_info_["source"] = getattr(self, "threshold_source_", "training")
        if hasattr(self, "calibration_"):
            self.threshold_info_["calibration"] = self.calibration_
        self.threshold_ = self.threshold_info_["threshold"]
        self.threshold_method, self.threshold_params = method, params
        return self.threshold_info_

    def _calibration_errors(self, Z: np.ndarray, precision: str = "fp32", fitting: bool = False) -> tuple[np.ndarray, str]:
        """Per-row errors of scaled training rows `Z` that a threshold is calibrated on, and how they were had:
        out of fold for a closed-form model (each block scored by a copy fitted without it), else in-sample.
        `fitting`: the model's own calibration (pca's spike split) is set from them too; a fitted model keeps it."""
        raw = training.out_of_fold_errors(self.model_, Z, calibrate=fitting)
        if raw is None:
            return row_errors(self.model_, Z, precision=precision), "in-sample"
        return raw, "out-of-fold (5 blocks)"

    def _calibration_scores(self, raw: np.ndarray) -> np.ndarray:
        return row_scores(smooth_errors(raw, self.smooth_, self.spike_floor_))

    def calibration_scores(self, X: np.ndarray) -> np.ndarray:
        """The scores a threshold for the training rows `X` is calibrated on, as `fit` computes them (scored in
        this detector's precision). A loaded version has no `decision_scores_`; this recomputes them (e.g. to
        compare threshold methods)."""
        return self._calibration_scores(self._calibration_errors(self.transform(X), self.precision)[0])

    # --- scoring ---------------------------------------------------------------------------------------

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.affine_.transform(X)

    def row_errors(self, X: np.ndarray) -> np.ndarray:
        """Per-row, per-feature error (rows, features); rows without a score are NaN."""
        return self._errors(self.transform(X))

    def _errors(self, Z: np.ndarray) -> np.ndarray:
        return smooth_errors(row_errors(self.model_, Z, precision=self.precision), self.smooth_, self.spike_floor_)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score per row: higher = more anomalous (NaN: a row no sample scores)."""
        return row_scores(self.row_errors(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 = anomaly, 0 = normal."""
        return flag(self.decision_function(X), self.threshold_)

    def feature_levels(self) -> np.ndarray:
        """Each feature's typical training value in its own units: the training median (versions saved before
        it was stored: the value the scaler maps to its centre)."""
        medians = getattr(self, "feature_medians_", None)
        if medians is not None:
            return np.asarray(medians, np.float64)
        centre = 0.5 if self.scaler == "minmax" else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num((centre - self.affine_.add) / self.affine_.mul)

    def period(self) -> int:
        """The training rows' dominant period in rows (the model's span when none was found or stored)."""
        return int(getattr(self, "period_rows_", None) or self.model_.span)

    def stream(self, batch_size: int = SCORE_BATCH) -> "StreamScorer":
        return StreamScorer(self, batch_size)

    # --- persistence -----------------------------------------------------------------------------------

    def config_dict(self, metadata: dict | None = None) -> dict:
        return {
            "format": CONFIG_FORMAT,
            "model_type": self.model_type,
            "model": asdict(self.model_config_),
            "features": self.feature_names_,
            "n_features": len(self.feature_names_),
            "window": self.window_,
            "smooth": self.smooth_,
            **({"spike_floor": self.spike_floor_} if self.spike_floor_ is not None else {}),
            **({"window_auto": True} if getattr(self, "window_auto_", False) else {}),
            "span": self.model_.span,
            "scaler": self.scaler,
            "scaler_affine": self.affine_.to_dict(),
            "feature_medians": self.feature_levels().tolist(),
            **({"period_rows": self.period_rows_} if getattr(self, "period_rows_", None) else {}),
            "training": {"epochs": self.epochs, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                         "validation_split": self.validation_split, "patience": self.patience, "seed": self.seed},
            "history": getattr(self, "history_", {}),
            "train_scores": getattr(self, "train_stats_", {}),
            **({"expected_ranges": self.expected_ranges_} if getattr(self, "expected_ranges_", None) else {}),
            **self.trained_on(),
            "created": now_iso(),
            "library_versions": library_versions(),
            **(metadata or {}),
        }

    def trained_on(self) -> dict:
        """The model card's device, precision and training seconds; a loaded version keeps what it recorded."""
        if hasattr(self, "train_seconds_"):
            return {"device": str(self.device_), "device_name": device_name(self.device_),
                    "precision": self.precision, "train_seconds": self.train_seconds_}
        return {k: self.config_[k] for k in TRAINED_ON if k in getattr(self, "config_", {})}

    def save(self, paths: ArtifactPaths, metadata: dict | None = None, atomic: bool = True) -> None:
        """Write the four artifact files, each atomically (written aside, flushed to disk, renamed into place).
        `atomic=False` writes them plainly, for a caller that makes them durable itself: `ModelStore.save`
        writes into a private temporary folder, fsyncs every file and renames the folder into place (each file
        fsynced twice and renamed once for nothing slowed a fleet of small series down:
        docs/decisions/0012-detection-fast-paths.md)."""
        buf = io.BytesIO()
        # weights from the CPU: the file loads on any device (map_location moves them where they are needed)
        torch.save({k: v.detach().cpu() for k, v in self.model_.state_dict().items()}, buf)
        files = {"model": buf.getvalue(),
                 "threshold": json.dumps(self.threshold_info_, indent=2, default=numpy_default).encode()}
        if hasattr(self, "scaler_"):
            import joblib

            buf = io.BytesIO()
            joblib.dump(self.scaler_, buf)
            files["scaler"] = buf.getvalue()
        else:  # a loaded detector: copy the original pickle rather than unpickling it
            files["scaler"] = self.source_paths_.scaler.read_bytes()
        config = self.config_dict(metadata)
        if not atomic:
            for kind, data in files.items():
                _write_bytes(getattr(paths, kind), data)
            _write_bytes(paths.config, json.dumps(config, indent=2, default=numpy_default).encode())
            return
        # Explicit files are replaced one by one, so a kill between two leaves a mixed set: the config, written
        # last, names the checksum of each file it belongs with, and a set that does not match is refused on load.
        config[SET_KEY] = {kind: _sha256(data) for kind, data in files.items()}
        for folder in {p.parent for _, p in paths.items()}:
            remove_stale_files(folder)  # what an earlier, killed save left beside these files
        for kind, data in files.items():
            atomic_write_bytes(getattr(paths, kind), data)
        atomic_write_bytes(paths.config, json.dumps(config, indent=2, default=numpy_default).encode())

    @classmethod
    def load(cls, paths: ArtifactPaths, label: str = "", device: str = "auto", precision: str = "fp32") -> DetectorCore:
        """Load a saved version onto `device`, to score in `precision`. The scaler is a pickle: only load
        artifacts you trust (the server confines this)."""
        label = label or str(paths.model.parent)
        target = resolve_device(device)
        check_precision(precision, target)
        check_complete(paths, label)
        config = read_json(paths.config)
        threshold = read_json(paths.threshold)
        validate_artifacts(config, threshold, label, require_affine=not paths.allow_pickle)
        _check_set(paths, config, label)
        try:
            det = cls(model_type=config["model_type"], window=config["window"], scaler=config["scaler"],
                      threshold_method=threshold["method"], threshold_params=threshold.get("params", {}),
                      device=device, precision=precision, **config["training"])
            det.model_config_ = models.get(config["model_type"]).Config(**config["model"])
            det.model_ = models.get(config["model_type"]).Model(det.model_config_).to(target)
            det.device_ = target
            with warnings.catch_warnings():  # a garbage file makes torch warn before it fails: one error line
                warnings.simplefilter("ignore")
                state = torch.load(paths.model, map_location=target, weights_only=True)
            det.model_.load_state_dict(state)
            _check_shape(det, config)
            check_weights(state)
            if "scaler_affine" in config:
                det.affine_ = AffineScaler(config["scaler_affine"]["mul"], config["scaler_affine"]["add"])
            else:  # classic files the user named (never a store version): only the pickle knows the scaling
                import joblib
                det.scaler_ = joblib.load(paths.scaler)
                det.affine_ = AffineScaler.from_sklearn(det.scaler_, len(config["features"]))
            det.feature_names_ = list(config["features"])
            det.period_rows_ = int(config["period_rows"]) if config.get("period_rows") else None
            if det.period_rows_ is not None and not 1 <= det.period_rows_ <= PERIOD_ROWS:
                raise ValueError(f"period_rows {det.period_rows_} is out of range")
            medians = config.get("feature_medians")
            if medians is not None:
                det.feature_medians_ = np.asarray(medians, np.float64)
                if det.feature_medians_.shape != (len(det.feature_names_),):
                    raise ValueError(f"feature_medians has {det.feature_medians_.size} values for "
                                     f"{len(det.feature_names_)} features")
            det.window_ = int(config["window"])
            det.threshold_ = float(threshold["threshold"])
            if det.affine_.mul.shape != (len(det.feature_names_),):
                raise ValueError(f"the scaling is for {det.affine_.mul.size} features, not {len(det.feature_names_)}")
            check_scaling(det.affine_.mul, det.affine_.add, det.feature_names_,
                          (config.get("data") or {}).get("feature_ranges"))
        except (KeyError, TypeError, RuntimeError, EOFError, ValueError, OSError, AttributeError, IndexError,
                ImportError, pickle.UnpicklingError, struct.error) as exc:
            # torch and pickle errors run over several lines; the user gets one
            # (only the first sentence: torch's advice to load untrusted files with weights_only=False is not for users)
            detail = " ".join(f"{type(exc).__name__}: {exc}".split()).split(". ")[0][:200]
            raise ArtifactError(f"model {label} is corrupt or incomplete: {detail}"[:500]) from None
        det.model_.eval()
        det.window_auto_ = bool(config.get("window_auto", False))
        det.smooth_ = int(config.get("smooth", 1))  # versions saved before smoothing existed score unsmoothed
        floor = config.get("spike_floor")  # versions saved before it smooth spikes like everything else
        det.spike_floor_ = None if floor is None else float(np.max(floor))
        det.threshold_info_ = threshold
        det.history_ = config.get("history", {})
        det.train_stats_ = config.get("train_scores", {})
        det.expected_ranges_ = config.get("expected_ranges")  # versions saved before: drivers without a range
        det.config_ = config
        det.source_paths_ = paths
        return det


def _check_shape(det: DetectorCore, config: dict) -> None:
    """The built model must be the one the config describes (a hand-edited window or span would misalign rows)."""
    mc = det.model_config_
    if mc.n_features != len(config["features"]) or mc.window != config["window"]:
        raise ValueError(f"the model is for {mc.n_features} features and window {mc.window}, the config says "
                         f"{len(config['features'])} and {config['window']}")
    if det.model_.span != config.get("span", det.model_.span):
        raise ValueError(f"span {config['span']} does not match the model's span {det.model_.span}")


def _check_training_args(det: DetectorCore) -> None:
    """The same bounds as the service's `TrainSpec` (one definition); messages name the parameter."""
    from ..specs import TrainSpec, parse

    names = ("model_type", "window", "smooth", "epochs", "batch_size", "learning_rate", "validation_split",
             "patience", "seed", "scaler", "threshold_method", "precision", *models.MODEL_PARAMS)
    parse(TrainSpec, strict=False, **{n: getattr(det, n) for n in names if getattr(det, n) is not None})
