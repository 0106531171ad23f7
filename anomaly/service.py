"""The one service layer: train, detect, model info, list and delete models.

The CLI, the MCP server, the HTTP API and `mcp_tool` all call these functions and get plain JSON-able
dicts back; none of them re-implements any of this. Failures raise `anomaly.errors.AnomalyError` with a
one-line message.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import data, defaults, thresholds
from .errors import AnomalyError, DataError
from .store import DEFAULT_ROOT, ArtifactPaths, ModelStore

DEFAULT_MAX_RESULTS = defaults.MAX_RESULTS
TOP_ANOMALIES = 10
TOP_FEATURES = 3


# --- locating artifacts ----------------------------------------------------------------------------------


def artifact_paths(version: str | None = None, store: ModelStore | None = None, model_path=None, config_path=None,
                   threshold_path=None, scaler_path=None) -> tuple[ArtifactPaths, str]:
    """Explicit classic-tool paths win; otherwise the named (or latest) version of the store."""
    if any((model_path, config_path, threshold_path, scaler_path)):
        paths = ArtifactPaths.explicit(model_path, config_path, threshold_path, scaler_path)
        return paths, str(paths.model.parent)
    store = store or ModelStore()
    name = store.resolve(version)
    return store.paths(name), name


_cache: dict = {}
_cache_lock = threading.Lock()


def load_detector(paths: ArtifactPaths, label: str = ""):
    """Load a saved detector, cached in memory; a changed or replaced version is reloaded."""
    from .detector import Detector
    from .store import check_complete

    check_complete(paths, label or str(paths.model.parent))
    key = tuple(str(p.resolve()) for _, p in paths.items())
    stamp = tuple(p.stat().st_mtime_ns for _, p in paths.items())
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
    det = Detector.load(paths, label)
    with _cache_lock:
        if len(_cache) >= 16:
            _cache.pop(next(iter(_cache)))
        _cache[key] = (stamp, det)
    return det


# --- training ----------------------------------------------------------------------------------------------


def threshold_params(method: str, percentile: float | None = None, k: float | None = None, **options) -> dict:
    """The options that the threshold method takes (others are not stored with it)."""
    fn = thresholds.METHODS.get(method)
    if fn is None:
        raise DataError(f"unknown threshold method {method!r}; choose one of {', '.join(thresholds.METHODS)}")
    accepted = {p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY}
    given = {"percentile": percentile, "k": k, **options}
    return {name: value for name, value in given.items() if name in accepted and value is not None}


def train(
    data_file: str,
    *,
    version: str | None = None,
    overwrite: bool = False,
    store: ModelStore | None = None,
    paths: ArtifactPaths | None = None,
    model_type: str = defaults.MODEL_TYPE,
    window: int | str = defaults.WINDOW,
    epochs: int = defaults.EPOCHS,
    batch_size: int = defaults.BATCH_SIZE,
    learning_rate: float = defaults.LEARNING_RATE,
    percentile: float = defaults.PERCENTILE,
    threshold_method: str = defaults.THRESHOLD_METHOD,
    k: float | None = None,
    scaler: str = defaults.SCALER,
    columns: list[str] | None = None,
    label_column: str | None = None,
    missing: str = defaults.MISSING,
    keep_constant: bool = False,
    validation_split: float = defaults.VALIDATION_SPLIT,
    patience: int = defaults.PATIENCE,
    seed: int = defaults.SEED,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threshold_options: dict | None = None,
    **model_params,
) -> dict:
    """Train a detector on `data_file` and save it as a new version (or to explicit `paths`)."""
    from .detector import Detector

    store = store or ModelStore()
    if version is not None and paths is None:
        from .store import validate_version_name
        validate_version_name(version)
        if (store.root / version).exists() and not overwrite:
            from .errors import VersionExists
            raise VersionExists(f"version {version!r} already exists in {store.root}; choose another or pass overwrite")
    table = data.read_table(data_file, columns=columns, label_column=label_column, missing=missing,
                            drop_constant=not keep_constant)
    t_params = threshold_params(threshold_method, percentile, k, **(threshold_options or {}))
    det = Detector(model_type=model_type, window=window, scaler=scaler, threshold_method=threshold_method,
                   threshold_params=t_params, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   validation_split=validation_split, patience=patience, seed=seed, **model_params)
    started = time.perf_counter()
    try:
        det.fit(table.X, table.features, labels=table.labels, progress=progress, should_stop=should_stop)
    except FloatingPointError as exc:
        raise DataError(str(exc)) from None
    seconds = time.perf_counter() - started
    metadata = {"data": {"file": str(Path(data_file).resolve()), "rows": int(len(table.X)),
                         "fingerprint": fingerprint(table.X), "report": table.report,
                         "feature_ranges": {f: [float(lo), float(hi)] for f, lo, hi in
                                            zip(table.features, table.X.min(0), table.X.max(0))}}}
    if paths is not None:
        det.save(paths, metadata)
        name, location = str(paths.model.parent), {k: str(v) for k, v in paths.items()}
    else:
        name = store.save(lambda p: det.save(p, metadata), version=version, overwrite=overwrite)
        location = {k: str(v) for k, v in ArtifactPaths.in_folder(store.root / name).items()}
    hist = det.history_
    return {
        "status": "success",
        "version": name,
        "paths": location,
        "model_type": det.model_type,
        "features": det.feature_names_,
        "window": det.window_,
        "rows": int(len(table.X)),
        "threshold": det.threshold_,
        "threshold_method": det.threshold_method,
        "threshold_params": det.threshold_params,
        "threshold_source": det.threshold_source_,
        "epochs_run": hist["epochs_run"],
        "best_epoch": hist["best_epoch"],
        "stopped_early": hist["stopped_early"],
        "final_loss": hist["loss"][-1],
        "final_val_loss": hist["val_loss"][-1],
        "train_seconds": round(seconds, 3),
        "data_report": table.report,
    }


def fingerprint(X: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(X).tobytes() + str(X.shape).encode()).hexdigest()[:32]


# --- detection ---------------------------------------------------------------------------------------------


class _Pending:
    """Raw rows waiting for their scores: window models finalise a row only after later rows arrive."""

    def __init__(self):
        self.blocks: list[tuple[data.Block, np.ndarray]] = []  # (block, kept-row mask)
        self.errors: list[np.ndarray] = []
        self.n_errors = 0

    def add_block(self, block: data.Block, mask: np.ndarray) -> None:
        self.blocks.append((block, mask))

    def add_errors(self, errors: np.ndarray) -> None:
        if len(errors):
            self.errors.append(errors)
            self.n_errors += len(errors)

    def ready(self, final: bool = False) -> Iterator[tuple[data.Block, np.ndarray, np.ndarray]]:
        """Yield (block, mask, errors-for-kept-rows) for every block whose kept rows all have errors."""
        while self.blocks:
            block, mask = self.blocks[0]
            need = int(mask.sum())
            if self.n_errors < need and not final:
                return
            errs = np.concatenate(self.errors) if self.errors else np.empty((0, 0), np.float32)
            mine, rest = errs[:need], errs[need:]
            self.errors = [rest] if len(rest) else []
            self.n_errors = len(rest)
            self.blocks.pop(0)
            yield block, mask, mine


def iter_detect(
    file_path: str,
    *,
    version: str | None = None,
    store: ModelStore | None = None,
    paths: ArtifactPaths | None = None,
    output: str | None = None,
    per_feature: bool = False,
    missing: str = defaults.MISSING,
    label_column: str | None = None,
    max_results: int | None = DEFAULT_MAX_RESULTS,
    return_details: bool = True,
    block_bytes: int = 32 << 20,
) -> Iterator[dict]:
    """Score a file block by block. Yields events: `progress`, `anomaly` (one per anomalous row, as soon as
    its block is scored) and finally `summary` (the same dict `detect` returns)."""
    started = time.perf_counter()
    if paths is None:
        paths, label = artifact_paths(version, store)
    else:
        label = str(paths.model.parent)
    det = load_detector(paths, label)
    features = det.feature_names_
    p = data.check_file(file_path)
    fmt = data.sniff(p)
    numeric, _ = data.numeric_columns(p, fmt)
    label_col = data.find_label_column(list(fmt.names), label_column)
    used = data.match_features(fmt, numeric, features, label_col)
    total_bytes = p.stat().st_size
    result_cols = ["reconstruction_error", "is_anomaly"] + ([f"{f}_contribution" for f in features] if per_feature else [])
    writer = None
    if output:
        from .output import ResultWriter, raw_header
        writer = ResultWriter(output, fmt, raw_header(p, fmt), result_cols)
    stream = det.stream()
    pending = _Pending()
    acc = _Summary(det.threshold_, features, max_results if return_details else 0, keep_all=label_col is not None)
    prev_row = None
    missing_report = {"missing_values": 0, "values_filled": 0, "rows_dropped": 0}
    try:
        for block in data.iter_blocks(p, fmt, used + ([label_col] if label_col else []), block_bytes):
            X = block.frame[used].to_numpy(np.float32)
            X, mask, prev_row = _fill_missing(X, features, missing, prev_row, block.start, missing_report)
            if label_col:
                acc.add_labels(block.frame[label_col].to_numpy(), label_col)
            pending.add_block(block, mask)
            pending.add_errors(stream.push(X)[0])
            yield from _emit(pending, False, det, acc, writer, per_feature)
            yield {"event": "progress", "rows_done": acc.rows, "bytes_total": total_bytes,
                   "rows_read": block.start + len(block.raw_lines)}
        pending.add_errors(stream.finish()[0])
        yield from _emit(pending, True, det, acc, writer, per_feature)
        if acc.rows == 0:
            raise DataError(f"{p} has a header row but no data rows")
        summary = acc.summary() | {
            "file": str(p), "version": label, "model_type": det.model_type, "features": features,
            "window": det.window_, "threshold_method": det.threshold_info_.get("method"),
            "missing": missing_report, "seconds": round(time.perf_counter() - started, 3),
        }
        if output:
            summary["output"] = str(Path(output))
        if label_col:
            summary["metrics"] = acc.metrics()
        if writer:
            writer.close(summary)
            writer = None
        yield {"event": "summary", **summary}
    finally:
        if writer:
            writer.abort()


def _fill_missing(X, features, policy, prev_row, start, report):
    """Per-block missing-value handling; the last row of the previous block anchors interpolation."""
    bad = ~np.isfinite(X)
    if not bad.any():
        return X, np.ones(len(X), bool), (X[-1] if len(X) else prev_row)
    if policy == "error":
        data.handle_missing(X, features, "error", where=f"rows {start}..{start + len(X) - 1}: ")
    n_bad = int(bad.sum())
    report["missing_values"] += n_bad
    if policy == "drop":
        keep = ~bad.any(axis=1)
        report["rows_dropped"] += int((~keep).sum())
        kept = X[keep]
        return kept, keep, (kept[-1] if len(kept) else prev_row)
    if prev_row is not None:
        filled, _, _ = data.handle_missing(np.vstack([prev_row, X]), features, "interpolate")
        filled = filled[1:]
    else:
        filled, _, _ = data.handle_missing(X, features, "interpolate")
    report["values_filled"] += n_bad
    return filled, np.ones(len(X), bool), filled[-1]


def _emit(pending: _Pending, final: bool, det, acc: "_Summary", writer, per_feature: bool) -> Iterator[dict]:
    from .detector import flag

    for block, mask, errs in pending.ready(final):
        n = len(block.raw_lines)
        row_err = np.full((n, len(det.feature_names_)), np.nan, np.float32)
        if len(errs):
            row_err[mask] = errs
        with np.errstate(invalid="ignore"):
            scores = row_err.mean(axis=1) if row_err.shape[1] else np.full(n, np.nan, np.float32)
        flags = flag(scores, det.threshold_)
        acc.add(block.start, scores, flags, row_err)
        if writer:
            cols = {"reconstruction_error": scores, "is_anomaly": flags}
            if per_feature:
                share = contributions(row_err)
                cols |= {f"{f}_contribution": share[:, i] for i, f in enumerate(det.feature_names_)}
            writer.write(block.start, block.raw_lines, block.frame, cols)
        for i in np.flatnonzero(flags):
            yield {"event": "anomaly", "index": int(block.start + i), "reconstruction_error": float(scores[i]),
                   "top_features": top_features(row_err[i], det.feature_names_)}


def contributions(row_err: np.ndarray) -> np.ndarray:
    """Each feature's share of a row's error (rows sum to 1)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return row_err / row_err.sum(axis=1, keepdims=True)


def top_features(err: np.ndarray, names: list[str], k: int = TOP_FEATURES) -> list[dict]:
    total = float(np.nansum(err))
    if not total > 0:
        return []
    order = np.argsort(-np.nan_to_num(err))[:k]
    return [{"feature": names[i], "share": round(float(err[i]) / total, 4)} for i in order]


class _Summary:
    """Running counts, top anomalies and capped per-row results, in memory bounded by `max_results`."""

    def __init__(self, threshold: float, features: list[str], max_results: int | None, keep_all: bool = False):
        self.threshold, self.features = threshold, features
        self.max_results = max_results
        self.rows = self.scored = self.anomalies = 0
        self.top: list[tuple[float, int, list]] = []  # min-heap of the strongest anomalies
        self.anom_rows: list[tuple[int, float]] = []
        self.normal_rows: list[tuple[int, float]] = []
        self.keep_all = keep_all
        self.all_scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.label_column = None

    def add(self, start: int, scores: np.ndarray, flags: np.ndarray, row_err: np.ndarray) -> None:
        self.rows += len(scores)
        self.scored += int(np.isfinite(scores).sum())
        idx = np.flatnonzero(flags)
        self.anomalies += len(idx)
        for i in idx:
            item = (float(scores[i]), start + int(i))
            if len(self.top) < TOP_ANOMALIES:
                heapq.heappush(self.top, (*item, top_features(row_err[i], self.features)))
            elif item[0] > self.top[0][0]:
                heapq.heapreplace(self.top, (*item, top_features(row_err[i], self.features)))
        cap = self.max_results
        if cap is None or len(self.anom_rows) < cap:
            take = idx if cap is None else idx[: cap - len(self.anom_rows)]
            self.anom_rows += [(start + int(i), float(scores[i])) for i in take]
        if cap is None or len(self.normal_rows) < cap:
            normal = np.flatnonzero(flags == 0)
            take = normal if cap is None else normal[: cap - len(self.normal_rows)]
            self.normal_rows += [(start + int(i), _num(scores[i])) for i in take]
        if self.keep_all:
            self.all_scores.append(scores)

    def add_labels(self, labels, column: str) -> None:
        self.label_column = column
        import pandas as pd
        lab = pd.to_numeric(pd.Series(labels), errors="coerce").to_numpy()
        if np.isnan(lab).any():
            raise DataError(f"label column {column!r} has non-numeric or empty values")
        self.labels.append((lab > 0).astype(np.int8))

    def summary(self) -> dict:
        out = {
            "status": "success",
            "total_rows": self.rows,
            "scored_rows": self.scored,
            "anomaly_count": self.anomalies,
            "anomaly_ratio": self.anomalies / self.rows if self.rows else 0.0,
            "threshold": self.threshold,
            "top_anomalies": [{"index": i, "reconstruction_error": s, "top_features": f}
                              for s, i, f in sorted(self.top, reverse=True)],
        }
        if self.max_results != 0:
            rows = [(i, s, True) for i, s in self.anom_rows] + [(i, s, False) for i, s in self.normal_rows]
            limit = len(rows) if self.max_results is None else self.max_results
            out["results"] = [{"index": i, "reconstruction_error": s, "is_anomaly": a} for i, s, a in rows[:limit]]
            out["results_truncated"] = len(out["results"]) < self.rows
        return out

    def metrics(self) -> dict:
        from .metrics import threshold_report

        scores = np.concatenate(self.all_scores)
        labels = np.concatenate(self.labels)[: len(scores)]
        return threshold_report(labels, scores, self.threshold) | {"label_column": self.label_column}


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def detect(file_path: str, **kwargs) -> dict:
    """Score every row of `file_path`; returns the summary dict (see `iter_detect` for the arguments)."""
    for event in iter_detect(file_path, **kwargs):
        if event["event"] == "summary":
            event.pop("event")
            return event
    raise AnomalyError("detection ended without a summary")  # unreachable: iter_detect always ends with one


# --- models ------------------------------------------------------------------------------------------------


def model_info(version: str | None = None, store: ModelStore | None = None, **explicit_paths) -> dict:
    paths, label = artifact_paths(version, store, **explicit_paths)
    det = load_detector(paths, label)
    config = det.config_
    return {
        "status": "success",
        "version": label,
        "model_type": det.model_type,
        "architecture": config.get("model"),
        "parameters": int(sum(p.numel() for p in det.model_.parameters())),
        "features": det.feature_names_,
        "n_features": len(det.feature_names_),
        "window": det.window_,
        "scaler": config.get("scaler"),
        "threshold": det.threshold_,
        "threshold_method": det.threshold_info_.get("method"),
        "threshold_params": det.threshold_info_.get("params"),
        "threshold_source": det.threshold_info_.get("source"),
        "threshold_stats": det.threshold_info_.get("stats"),
        "training": config.get("training"),
        "history": config.get("history"),
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


__all__ = ["train", "detect", "iter_detect", "model_info", "list_models", "delete_model", "artifact_paths",
           "load_detector", "DEFAULT_ROOT"]
