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

from . import data, defaults, rolling, thresholds
from .errors import AnomalyError, DataError
from .store import DEFAULT_ROOT, ArtifactPaths, ModelStore

DEFAULT_MAX_RESULTS = defaults.MAX_RESULTS
TOP_ANOMALIES = 10
TOP_FEATURES = 3
WARN_FACTOR = 3  # flagged ratio over this many times the expected one gets a warning
MIN_WARN_RATIO = 0.01  # ... and over 1% of rows (a strict threshold expects almost none)


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


def load_detector(paths: ArtifactPaths, label: str = "", device: str = "auto", precision: str = "fp32"):
    """Load a saved detector onto `device`, cached in memory; a changed or replaced version is reloaded."""
    from .store import check_complete

    check_complete(paths, label or str(paths.model.parent))
    key = tuple(str(p.resolve()) for _, p in paths.items()) + (device, precision)
    stamp = tuple(p.stat().st_mtime_ns for _, p in paths.items())
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
    from .detector import Detector  # torch: imported only once there is a model to load

    det = Detector.load(paths, label, device, precision)
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
    params = {name: value for name, value in given.items() if name in accepted and value is not None}
    if "percentile" in params and not 0 < params["percentile"] < 100:  # say so before training, not after
        raise DataError(f"--percentile must be between 0 and 100, got {params['percentile']}")
    return params


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
    labels_file: str | None = None,
    plot: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    **model_params,
) -> dict:
    """Train a detector on `data_file` and save it as a new version (or to explicit `paths`).
    `labels_file` (one 0/1 label per data row) feeds the label-based threshold methods (best-f1, midpoint)."""
    store = store or ModelStore()
    if paths is None:
        store.check_root()  # a --model-dir that is a file fails now, not after the training
    if version is not None and paths is None:
        from .store import validate_version_name
        validate_version_name(version)
        if (store.root / version).exists() and not overwrite:
            from .errors import VersionExists
            raise VersionExists(f"version {version!r} already exists in {store.root}; choose another or pass overwrite")
    table = data.read_table(data_file, columns=columns, label_column=label_column, missing=missing,
                            drop_constant=not keep_constant)
    if labels_file:
        file_labels = thresholds.load_labels(labels_file, len(table.frame))
        table.labels = file_labels if table.row_mask is None else file_labels[table.row_mask]
    _refuse_infinite(table, data_file)
    t_params = threshold_params(threshold_method, percentile, k, **(threshold_options or {}))
    from .detector import Detector  # torch: imported after the cheap checks, so bad input fails fast

    det = Detector(model_type=model_type, window=window, scaler=scaler, threshold_method=threshold_method,
                   threshold_params=t_params, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   validation_split=validation_split, patience=patience, seed=seed, device=device,
                   precision=precision, **model_params)
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
    extra = {}
    if plot:
        from .plotting import plot_threshold_choice
        extra["plot"] = str(plot_threshold_choice(plot, det.decision_scores_, det.threshold_info_,
                                                  f"version {name}: calibration errors of {Path(data_file).name}"))
    return {
        **extra,
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
    anomaly_events: bool = True,
    block_bytes: int = 32 << 20,
    plot: str | None = None,
    time_column: str | None = None,
    threshold_window: int | str | None = None,
    device: str = "auto",
    precision: str = "fp32",
) -> Iterator[dict]:
    """Score a file block by block. Yields events: `progress`, `anomaly` (one per anomalous row, as soon as
    its block is scored) and finally `summary` (the same dict `detect` returns).
    `time_column` (default: a column named timestamp/time/date/datetime) gives every reported anomaly its time;
    `threshold_window` (rows, or a time span such as `7d`) makes the threshold follow the data (`anomaly.rolling`)."""
    started = time.perf_counter()
    p = data.check_file(file_path)  # before loading the model: a typo in the file name fails at once
    fmt = data.sniff(p)
    if paths is None:
        paths, label = artifact_paths(version, store)
    else:
        label = str(paths.model.parent)
    det = load_detector(paths, label, device, precision)
    features = det.feature_names_
    numeric, _ = data.numeric_columns(p, fmt)
    label_col = data.find_label_column(list(fmt.names), label_column)
    used = data.match_features(fmt, numeric, features, label_col)
    time_col = data.time_column(list(fmt.names), used, time_column)
    window = rolling.parse_window(threshold_window)
    if window is not None and not isinstance(window, int) and time_col is None:
        raise DataError(f"threshold_window {threshold_window!r} is a time span, but {p.name} has no time column "
                        "(name one with --time-column, or give the window in rows)")
    thresholder = _Thresholder(det, window, str(threshold_window))
    total_bytes = p.stat().st_size
    result_cols = (["reconstruction_error", "is_anomaly"] + (["threshold"] if window is not None else [])
                   + ([f"{f}_contribution" for f in features] if per_feature else []))
    writer = None
    if output:
        from .output import ResultWriter
        writer = ResultWriter(output, fmt, fmt.header_line, result_cols, source=p)
    stream = det.stream()
    pending = _Pending()
    acc = _Summary(det.threshold_, features, max_results if return_details else 0, keep_all=label_col is not None,
                   expected_rate=expected_rate(det.threshold_info_))
    missing_report = {"missing_values": 0, "values_filled": 0, "rows_dropped": 0}
    plotter = _plotter(plot, det, fmt, used, label_col)
    filler = _MissingFiller(features, missing, missing_report)
    try:
        json_output = bool(output) and Path(output).suffix.lower() in (".json", ".jsonl", ".ndjson")
        blocks = data.prefetch(data.iter_blocks(p, fmt, used + ([label_col] if label_col else []), block_bytes,
                                                all_columns=json_output or bool(plot),
                                                text_cols=[time_col] if time_col else []))
        for block in blocks:
            X = block.frame[used].to_numpy(np.float64)  # float64: 1e39 is a huge value, not an overflow to inf
            X, mask = filler.push(X, block.start)
            if label_col:
                acc.add_labels(block.frame[label_col].to_numpy(), label_col)
                acc.add_period_sample(block.frame[used[0]].to_numpy())
            pending.add_block(block, mask)
            pending.add_errors(stream.push(X)[0])
            yield from _emit(pending, False, det, acc, writer, per_feature, anomaly_events, plotter, thresholder, time_col)
            yield {"event": "progress", "rows_done": acc.rows, "bytes_total": total_bytes,
                   "rows_read": block.start + len(block.raw_lines)}
        pending.add_errors(stream.push(filler.finish())[0])
        pending.add_errors(stream.finish()[0])
        yield from _emit(pending, True, det, acc, writer, per_feature, anomaly_events, plotter, thresholder, time_col)
        if acc.rows == 0:
            raise DataError(f"{p} has a header row but no data rows")
        summary = acc.summary() | {
            "file": str(p), "version": label, "model_type": det.model_type, "features": features,
            "window": det.window_, "threshold_method": det.threshold_info_.get("method"),
            "time_column": time_col, "missing": missing_report, "seconds": round(time.perf_counter() - started, 3),
        }
        if thresholder.rolling is not None:
            summary["threshold_window"] = thresholder.rolling.describe()
        if output:
            summary["output"] = str(Path(output))
        if label_col:
            summary["metrics"] = acc.metrics()
        if plotter:
            summary["plot"] = str(plotter.render(plot, f"{p.name}: model {label}"))
        if writer:
            writer.close(summary)
            writer = None
        yield {"event": "summary", **summary}
    finally:
        if writer:
            writer.abort()


class _MissingFiller:
    """Per-block missing-value handling that gives the same values as filling the whole file at once: rows
    whose gap is still open at the end of a block wait for the next block (interpolation needs the value
    after the gap); the last row handed on anchors the next interpolation."""

    def __init__(self, features: list[str], policy: str, report: dict):
        self.features, self.policy, self.report = features, policy, report
        self.anchor: np.ndarray | None = None  # last row handed on (finite)
        self.held = np.empty((0, len(features)), np.float64)  # raw rows waiting for a gap to close

    def push(self, X: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows ready for scoring, this block's kept-row mask)."""
        bad = np.isnan(X)  # only an empty or unparsable cell is missing; inf is the strongest anomaly
        if bad.any():
            if self.policy == "error":
                data.handle_missing(X, self.features, "error", where=f"rows {start}..{start + len(X) - 1}: ",
                                    first_row=start)
            self.report["missing_values"] += int(bad.sum())
            if self.policy == "drop":
                keep = ~bad.any(axis=1)
                self.report["rows_dropped"] += int((~keep).sum())
                return X[keep], keep
            data.handle_missing(X[:0], self.features, self.policy)  # rejects an unknown policy
            self.report["values_filled"] += int(bad.sum())
        mask = np.ones(len(X), bool)
        rows = np.concatenate([self.held, X]) if len(self.held) else X
        finite = ~np.isnan(rows)
        if finite.all():
            self.held = rows[:0]
            self.anchor = rows[-1] if len(rows) else self.anchor
            return rows, mask
        # Rows up to each column's last value can be filled now; the ones after wait for the next block.
        last = np.where(finite.any(axis=0), len(rows) - 1 - np.argmax(finite[::-1], axis=0), -1)
        cut = int(last.min()) + 1
        if cut == 0:
            self.held = rows
            return rows[:0], mask
        ready = self._fill(rows)[:cut]
        self.held, self.anchor = rows[cut:], ready[-1]
        return ready, mask

    def finish(self) -> np.ndarray:
        """The rows still waiting at the end of the file: their gaps are filled from the last value."""
        if not len(self.held):
            return self.held
        rows, self.held = self._fill(self.held), self.held[:0]
        return rows

    def _fill(self, rows: np.ndarray) -> np.ndarray:
        if self.anchor is None:
            return data.handle_missing(rows, self.features, "interpolate")[0]
        return data.handle_missing(np.vstack([self.anchor, rows]), self.features, "interpolate")[0][1:]


def _plotter(plot: str | None, det, fmt, used: list[str], label_col: str | None):
    """A bounded-memory plot collector for `detect --plot`, or None."""
    if not plot:
        return None
    import pandas as pd

    from .plotting import PlotCollector
    time_col = data.guess_time_column(pd.DataFrame(columns=list(fmt.names)), used)
    return PlotCollector(det.feature_names_, det.threshold_, columns=used, label_column=label_col, time_column=time_col)


def expected_rate(info: dict) -> float | None:
    """The fraction of normal rows the stored threshold flags (versions before it was stored: from the percentile)."""
    if info.get("expected_rate") is not None:
        return float(info["expected_rate"])
    if info.get("method") == "percentile":
        return (100 - float((info.get("params") or {}).get("percentile", defaults.PERCENTILE))) / 100
    return None


class _Thresholder:
    """The stored threshold, or a rolling one (`anomaly.rolling`) when a threshold window is given."""

    def __init__(self, det, window, label: str | None = None):
        from .rolling import RollingThreshold

        info = det.threshold_info_
        self.static = det.threshold_
        self.rolling = None if window is None else RollingThreshold(
            window, info.get("method", "percentile"), info.get("params") or {}, det.threshold_,
            label=label)

    def __call__(self, scores: np.ndarray, times: np.ndarray | None) -> np.ndarray | float:
        return self.static if self.rolling is None else self.rolling.push(scores, times)


def _emit(pending: _Pending, final: bool, det, acc: "_Summary", writer, per_feature: bool,
          events: bool, plot=None, thresholder: _Thresholder | None = None, time_col: str | None = None) -> Iterator[dict]:
    from .detector import flag

    for block, mask, errs in pending.ready(final):
        n = len(block.raw_lines)
        row_err = np.full((n, len(det.feature_names_)), np.nan, np.float32)
        if len(errs):
            row_err[mask] = errs
        with np.errstate(invalid="ignore"):
            scores = row_err.mean(axis=1) if row_err.shape[1] else np.full(n, np.nan, np.float32)
        times = block.frame[time_col].astype(str).to_numpy() if time_col else None
        moving = thresholder is not None and thresholder.rolling is not None
        threshold = thresholder(scores, data.parse_times(times) if moving and thresholder.rolling.by_time else None) \
            if thresholder is not None else det.threshold_
        flags = flag(scores, threshold)
        acc.add(block.start, scores, flags, row_err, times, threshold if moving else None)
        if plot is not None:
            plot.add_frame(block.start, block.frame, scores, flags, row_err, threshold if moving else None)
        if writer:
            cols = {"reconstruction_error": scores, "is_anomaly": flags}
            if moving:
                cols["threshold"] = threshold
            if per_feature:
                share = contributions(row_err)
                cols |= {f"{f}_contribution": share[:, i] for i, f in enumerate(det.feature_names_)}
            writer.write(block.start, block.raw_lines, block.frame, cols)
        if events:
            idx = np.flatnonzero(flags)
            for i, feats in zip(idx, top_features_rows(row_err[idx], det.feature_names_)):
                yield {"event": "anomaly", "index": int(block.start + i),
                       **({"time": times[i]} if times is not None else {}),
                       "reconstruction_error": float(scores[i]), "top_features": feats}


def contributions(row_err: np.ndarray) -> np.ndarray:
    """Each feature's share of a row's error (rows sum to 1)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return row_err / row_err.sum(axis=1, keepdims=True)


def top_features(err: np.ndarray, names: list[str], k: int = TOP_FEATURES) -> list[dict]:
    """The features with the largest share of one row's error."""
    return top_features_rows(err[None, :], names, k)[0]


def top_features_rows(errs: np.ndarray, names: list[str], k: int = TOP_FEATURES) -> list[list[dict]]:
    """`top_features` for many rows at once (vectorised: detection can flag tens of thousands of rows)."""
    if len(errs) == 0:
        return []
    share = np.nan_to_num(contributions(errs), nan=0.0)
    order = np.argsort(-share, axis=1)[:, :k]
    picked = np.round(np.take_along_axis(share, order, axis=1).astype(np.float64), 4)
    return [[{"feature": names[j], "share": float(v)} for j, v in zip(o, sh) if v > 0]
            for o, sh in zip(order.tolist(), picked.tolist())]


class _Summary:
    """Running counts, top anomalies and capped per-row results, in memory bounded by `max_results`."""

    def __init__(self, threshold: float, features: list[str], max_results: int | None, keep_all: bool = False,
                 expected_rate: float | None = None):
        self.threshold, self.features = threshold, features
        self.max_results = max_results
        self.expected_rate = expected_rate
        self.rows = self.scored = self.anomalies = 0
        self.top: list[tuple] = []  # min-heap of the strongest segments: (peak score, peak row, seq, segment)
        self.open: dict | None = None  # a segment still running at the end of the last block
        self.segments = 0
        self.anom_rows: list[dict] = []
        self.normal_rows: list[dict] = []
        self.keep_all = keep_all
        self.all_scores: list[np.ndarray] = []
        self.all_thresholds: list[np.ndarray] = []  # per-row thresholds of a rolling threshold
        self.labels: list[np.ndarray] = []
        self.label_column = None
        self.period_sample: list[np.ndarray] = []

    def add(self, start: int, scores: np.ndarray, flags: np.ndarray, row_err: np.ndarray,
            times: np.ndarray | None = None, thresholds: np.ndarray | None = None) -> None:
        self.rows += len(scores)
        self.scored += int(np.isfinite(scores).sum())
        idx = np.flatnonzero(flags)
        self.anomalies += len(idx)
        self._add_segments(start, scores, flags.astype(bool), row_err, times)
        cap = self.max_results
        if cap is None or len(self.anom_rows) < cap:
            take = idx if cap is None else idx[: cap - len(self.anom_rows)]
            self.anom_rows += [_row(start, i, scores, times, True) for i in take]
        if cap is None or len(self.normal_rows) < cap:
            normal = np.flatnonzero(flags == 0)
            take = normal if cap is None else normal[: cap - len(self.normal_rows)]
            self.normal_rows += [_row(start, i, scores, times, False) for i in take]
        if self.keep_all:
            self.all_scores.append(scores)
            if thresholds is not None:
                self.all_thresholds.append(np.broadcast_to(thresholds, scores.shape))

    def _add_segments(self, start: int, scores: np.ndarray, flags: np.ndarray, row_err: np.ndarray,
                      times: np.ndarray | None) -> None:
        """Contiguous anomalous rows form one segment (an incident); the top list holds the strongest segments
        by their peak row, so ten rows of one incident do not crowd out the others. A segment may continue
        into the next block."""
        edges = np.flatnonzero(np.diff(np.r_[0, flags.view(np.int8), 0]))
        runs = list(zip(edges[::2], edges[1::2]))  # [first, end) within the block
        if self.open is not None and (not runs or runs[0][0] != 0):
            self._close(self.open)
            self.open = None
        if not runs:
            return
        padded = np.r_[np.nan_to_num(scores, nan=-np.inf), -np.inf]
        peaks = np.maximum.reduceat(padded, np.ravel(runs))[::2]
        keep = set(np.argsort(-peaks)[:TOP_ANOMALIES].tolist()) | {0, len(runs) - 1}
        self.segments += len(runs) - (self.open is not None)
        at = (lambda i: None) if times is None else (lambda i: str(times[i]))
        for k, (a, b) in enumerate(runs):
            if k not in keep:
                continue
            i = a + int(np.argmax(padded[a:b]))
            seg = {"index": int(start + i), "time": at(i), "reconstruction_error": float(scores[i]),
                   "first_row": int(start + a), "first_time": at(a), "last_row": int(start + b - 1),
                   "last_time": at(b - 1), "errors": row_err[i]}
            if k == 0 and self.open is not None:  # continues the segment the previous block ended with
                prev = self.open
                peak = seg if seg["reconstruction_error"] > prev["reconstruction_error"] else prev
                seg = {**peak, "first_row": prev["first_row"], "first_time": prev["first_time"],
                       "last_row": seg["last_row"], "last_time": seg["last_time"]}
            if k == len(runs) - 1 and b == len(flags):
                self.open = seg
            else:
                self._close(seg)
                if k == 0:
                    self.open = None

    def _close(self, seg: dict) -> None:
        item = (seg["reconstruction_error"], seg["index"], seg["first_row"], seg)
        if len(self.top) < TOP_ANOMALIES:
            heapq.heappush(self.top, item)
        elif item[0] > self.top[0][0]:
            heapq.heapreplace(self.top, item)

    def add_period_sample(self, values: np.ndarray) -> None:
        """The first feature's leading values: VUS-PR's buffer range comes from the series' period."""
        if sum(len(v) for v in self.period_sample) < 20000:
            self.period_sample.append(values[:20000])

    def add_labels(self, labels, column: str) -> None:
        self.label_column = column
        import pandas as pd
        lab = pd.to_numeric(pd.Series(labels), errors="coerce").to_numpy()
        if np.isnan(lab).any():
            raise DataError(f"label column {column!r} has non-numeric or empty values")
        self.labels.append((lab > 0).astype(np.int8))

    def summary(self) -> dict:
        if self.open is not None:
            self._close(self.open)
            self.open = None
        ratio = self.anomalies / self.rows if self.rows else 0.0
        out = {
            "status": "success",
            "total_rows": self.rows,
            "scored_rows": self.scored,
            "anomaly_count": self.anomalies,
            "anomaly_ratio": ratio,
            "threshold": self.threshold,
            "expected_ratio": self.expected_rate,
            "anomaly_segments": self.segments,
            "top_anomalies": [_segment_report(seg, self.features)
                              for *_, seg in sorted(self.top, key=lambda t: t[0], reverse=True)],
            "warnings": self.warnings(ratio),
        }
        if self.max_results != 0:
            rows = self.anom_rows + self.normal_rows
            limit = len(rows) if self.max_results is None else self.max_results
            out["results"] = rows[:limit]
            out["results_truncated"] = len(out["results"]) < self.rows
        return out

    def warnings(self, ratio: float) -> list[str]:
        """Plain words when far more rows are flagged than normal data gets: the flags then say more about
        the data's fit to the model than about individual rows."""
        expected = self.expected_rate
        if expected is None or self.scored < 100:
            return []
        limit = max(WARN_FACTOR * expected, MIN_WARN_RATIO)
        if ratio <= limit:
            return []
        return [f"{ratio:.1%} of rows are flagged where normal data gets about {expected:.1%}: the data may have "
                "drifted away from the training data, the model may not fit it, or it holds long incidents. "
                "Look at the segments; consider a rolling threshold (threshold_window) or retraining on recent "
                "normal data."]

    def metrics(self) -> dict:
        from .metrics import threshold_report

        scores = np.concatenate(self.all_scores)
        labels = np.concatenate(self.labels)[: len(scores)]
        from .metrics import max_buffer_for
        sample = self.period_sample
        max_buffer = max_buffer_for(np.concatenate(sample)) if sample else None
        threshold = np.concatenate(self.all_thresholds) if self.all_thresholds else self.threshold
        return threshold_report(labels, scores, threshold, max_buffer=max_buffer) | {"label_column": self.label_column}


def _row(start: int, i: int, scores: np.ndarray, times: np.ndarray | None, anomaly: bool) -> dict:
    row = {"index": start + int(i)}
    if times is not None:
        row["time"] = str(times[i])
    return row | {"reconstruction_error": _num(scores[i]), "is_anomaly": anomaly}


def _segment_report(seg: dict, features: list[str]) -> dict:
    """A top anomaly as reported: the peak row and the segment's first and last rows, each with its time."""
    timed = seg["time"] is not None
    out = {"index": seg["index"], **({"time": seg["time"]} if timed else {}),
           "reconstruction_error": seg["reconstruction_error"], "first_row": seg["first_row"],
           **({"first_time": seg["first_time"]} if timed else {}), "last_row": seg["last_row"],
           **({"last_time": seg["last_time"]} if timed else {})}
    return out | {"top_features": top_features(seg["errors"], features)}


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def detect(file_path: str, **kwargs) -> dict:
    """Score every row of `file_path`; returns the summary dict (see `iter_detect` for the arguments)."""
    return summary_of(iter_detect(file_path, anomaly_events=False, **kwargs))


def summary_of(events: Iterator[dict], progress: Callable[[dict], None] | None = None) -> dict:
    """The summary that ends a detection event stream; `progress` sees the progress events on the way."""
    for event in events:
        if event["event"] == "summary":
            event.pop("event")
            return event
        if progress and event["event"] == "progress":
            progress(event)
    raise AnomalyError("detection ended without a summary")  # unreachable: iter_detect always ends with one


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
        from .scoring import CenteredMean, LiveSpikeSmoother
        self.smoother = LiveSpikeSmoother(CenteredMean(self.detector.smooth_).back + 1, self.detector.spike_floor_)
        window = rolling.parse_window(threshold_window)
        if window is not None and not isinstance(window, int):
            raise DataError("the live stream takes threshold_window as a number of points, not a time span")
        self.threshold_window = window
        self.thresholder = _Thresholder(self.detector, window, None if window is None else str(window))
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

        from .detector import flag
        from .scoring import gather

        Z = self.detector.transform(self._matrix(points))
        rows = np.concatenate([self.history, Z])
        ends = np.arange(len(self.history), len(rows))  # positions of the new points in `rows`
        ends = ends[ends >= self.span - 1]
        errors = np.full((len(Z), len(self.features)), np.nan)
        if len(ends):
            device = self.detector.device_
            starts = torch.from_numpy(ends - self.span + 1).to(device)
            with torch.inference_mode():
                err = self.detector.model_.errors(gather(torch.from_numpy(rows).to(device), starts, self.span))[:, -1]
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
                        **({"threshold": float(threshold[i])} if self.thresholder.rolling is not None else {}),
                        "top_features": top_features(errors[i], self.features) if scored else []})
        self.count += len(Z)
        return out


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


__all__ = ["train", "detect", "iter_detect", "model_info", "list_models", "delete_model", "artifact_paths",
           "load_detector", "LiveScorer", "DEFAULT_ROOT"]
