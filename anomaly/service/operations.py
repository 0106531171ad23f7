"""The operations behind `anomaly.service`: train, detect, model info, list and delete models."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import data, defaults, thresholds
from ..errors import DataError
from ..loader import artifact_paths, load_detector
from ..specs import DetectSpec, TrainSpec, parse
from ..store import DEFAULT_ROOT, ArtifactPaths, ModelStore
from .live import LiveScorer
from .pipeline import iter_detect, summary_of

DEFAULT_MAX_RESULTS = defaults.MAX_RESULTS


# --- training ----------------------------------------------------------------------------------------------


def train(
    data_file: str,
    spec: TrainSpec | None = None,
    *,
    version: str | None = None,
    overwrite: bool = False,
    store: ModelStore | None = None,
    paths: ArtifactPaths | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **params: Any,
) -> dict:
    """Train a detector on `data_file` and save it as a new version (or to explicit `paths`).

    What is trained is a `TrainSpec`: pass one, or its fields as keyword arguments (over `spec` when both
    are given); an unknown name or a value out of bounds is refused before anything is read or trained.
    `labels_file` (one 0/1 label per data row) feeds the label-based threshold methods (best-f1, midpoint)."""
    spec = parse(TrainSpec, spec, **params)
    t_params = spec.threshold_params()
    store = store or ModelStore()
    if paths is None:
        store.check_root()  # a --model-dir that is a file fails now, not after the training
    elif not overwrite:  # explicit files: an existing model is replaced only when asked, as a version is
        existing = [str(p) for _, p in paths.items() if p.exists()]
        if existing:
            from ..errors import VersionExists
            raise VersionExists(f"{', '.join(existing)} already exist(s); pass --overwrite to replace the model")
    if version is not None and paths is None:
        from ..store import validate_version_name
        validate_version_name(version)
        if (store.root / version).exists() and not overwrite:
            from ..errors import VersionExists
            raise VersionExists(f"version {version!r} already exists in {store.root}; choose another or pass overwrite")
    table = data.read_table(data_file, columns=spec.columns, label_column=spec.label_column, missing=spec.missing,
                            drop_constant=not spec.keep_constant)
    if spec.labels_file:
        file_labels = thresholds.load_labels(spec.labels_file, len(table.frame))
        table.labels = file_labels if table.row_mask is None else file_labels[table.row_mask]
    if spec.threshold_method in thresholds.NEEDS_LABELS and table.labels is None:  # say so before training
        raise DataError(f"threshold_method {spec.threshold_method!r} needs labels: a label column in {data_file} "
                        "(label_column) or labels_file")
    _refuse_infinite(table, data_file)
    from ..detector import (
        DetectorCore,  # torch: imported after the cheap checks, so bad input fails fast
    )

    det = DetectorCore(**spec.options("model_type", "window", "scaler", "threshold_method", "epochs", "batch_size",
                                      "learning_rate", "validation_split", "patience", "seed", "smooth",
                                      "precision", *TrainSpec.MODEL_PARAMS),
                       threshold_params=t_params, device=spec.device or "auto")
    started = time.perf_counter()
    try:
        det.fit(table.X, table.features, labels=table.labels, progress=progress, should_stop=should_stop)
    except FloatingPointError as exc:
        raise DataError(str(exc)) from None
    seconds = time.perf_counter() - started
    from ..window_choice import explain

    times = data.parse_times(table.frame[table.time_column]) if table.time_column else None
    window_choice = explain(det.model_type, table.X, det.window_, bool(getattr(det, "window_auto_", False)), times)
    metadata = {"window_choice": window_choice, "data": {"file": str(Path(data_file).resolve()), "rows": int(len(table.X)),
                         "fingerprint": fingerprint(table.X), "report": table.report,
                         "feature_ranges": {f: [float(lo), float(hi)] for f, lo, hi in
                                            zip(table.features, table.X.min(0), table.X.max(0))}}}
    if paths is not None:
        det.save(paths, metadata)
        name, location = str(paths.model.parent), {k: str(v) for k, v in paths.items()}
    else:
        # plain writes: the store fsyncs each file in its private folder and renames the folder into place
        name = store.save(lambda p: det.save(p, metadata, atomic=False), version=version, overwrite=overwrite)
        location = {k: str(v) for k, v in ArtifactPaths.in_folder(store.root / name).items()}
    hist = det.history_
    extra = {}
    if spec.plot:
        from ..plotting import plot_threshold_choice
        extra["plot"] = str(plot_threshold_choice(spec.plot, det.decision_scores_, det.threshold_info_,
                                                  f"version {name}: calibration errors of {Path(data_file).name}"))
    return {
        **extra,
        "status": "success",
        "version": name,
        "paths": location,
        "model_type": det.model_type,
        "features": det.feature_names_,
        "window": det.window_,
        "window_choice": window_choice,
        "rows": int(len(table.X)),
        "threshold": det.threshold_,
        "threshold_method": det.threshold_method,
        "threshold_params": det.threshold_info_.get("params", t_params),
        "threshold_source": det.threshold_source_,
        "epochs_run": hist["epochs_run"],
        "best_epoch": hist["best_epoch"],
        "stopped_early": hist["stopped_early"],
        **({"closed_form": True, "components": hist.get("components")} if hist.get("closed_form") else {}),
        "final_loss": hist["loss"][-1],
        "final_val_loss": hist["val_loss"][-1],
        "train_seconds": round(seconds, 3),
        "device": str(det.device_),
        "precision": det.precision,
        "data_report": table.report,
    }


def _refuse_infinite(table: data.Table, data_file: str) -> None:
    """Detection scores inf as the strongest anomaly; normal training rows cannot hold one (no scale fits it)."""
    infinite = np.isinf(table.X)
    if infinite.any():
        col = table.features[int(np.flatnonzero(infinite.any(axis=0))[0])]
        row = int(np.flatnonzero(infinite.any(axis=1))[0])
        if table.row_mask is not None:
            row = int(np.flatnonzero(table.row_mask)[row])
        raise DataError(f"{data_file}: column {col} holds an infinite value (first at data row {row}); training "
                        "rows must be finite numbers (leave a cell empty to mark it missing)")


def fingerprint(X: np.ndarray) -> str:
    # float32 bytes, as before the reader moved to float64: fingerprints of the same file stay comparable
    with np.errstate(over="ignore"):
        X = np.asarray(X, np.float32)
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(X).tobytes() + str(X.shape).encode()).hexdigest()[:32]




def detect(file_path: str, spec: DetectSpec | None = None, *, version: str | None = None,
           store: ModelStore | None = None, paths: ArtifactPaths | None = None,
           progress: Callable[[dict], None] | None = None, **params: Any) -> dict:
    """Score every row of `file_path`; returns the summary dict. What is detected and reported is a
    `DetectSpec` (or its fields as keyword arguments); see `pipeline.iter_detect`. `progress` sees each block's
    progress event."""
    return summary_of(iter_detect(file_path, spec, version=version, store=store, paths=paths, anomaly_events=False,
                                  **params), progress)




# --- models ------------------------------------------------------------------------------------------------


def model_info(version: str | None = None, store: ModelStore | None = None, **explicit_paths) -> dict:
    paths, label = artifact_paths(version, store, **explicit_paths)
    det = load_detector(paths, label, device="cpu")  # only read: no need to wake a GPU
    config = det.config_
    return {
        "status": "success",
        "version": label,
        "model_type": det.model_type,
        "architecture": config.get("model"),
        "parameters": int(sum(p.numel() for p in det.model_.parameters())
                          + sum(b.numel() for b in det.model_.buffers())),
        "features": det.feature_names_,
        "n_features": len(det.feature_names_),
        "window": det.window_,
        "scaler": config.get("scaler"),
        "threshold": det.threshold_,
        "threshold_method": det.threshold_info_.get("method"),
        "threshold_params": det.threshold_info_.get("params"),
        "threshold_source": det.threshold_info_.get("source"),
        "threshold_stats": det.threshold_info_.get("stats"),
        "expected_ranges": config.get("expected_ranges"),  # each feature's 1st-99th training percentile
        "training": config.get("training"),
        "history": config.get("history"),
        **{k: config.get(k) for k in ("device", "device_name", "precision", "train_seconds")},  # where it trained
        "data": config.get("data"),
        "created": config.get("created"),
        "library_versions": config.get("library_versions"),
        "paths": {k: str(v) for k, v in paths.items()},
    }


def list_models(store: ModelStore | None = None) -> dict:
    store = store or ModelStore()
    return {"status": "success", "store": str(store.root), "latest": store.latest(), "models": store.list()}


def delete_model(version: str, store: ModelStore | None = None) -> dict:
    store = store or ModelStore()
    name = store.resolve(version)
    store.delete(name)
    return {"status": "success", "deleted": name, "latest": store.latest()}


__all__ = ["TrainSpec", "DetectSpec", "train", "detect", "iter_detect", "summary_of", "model_info", "list_models", "delete_model",
           "artifact_paths", "load_detector", "LiveScorer", "DEFAULT_ROOT"]
