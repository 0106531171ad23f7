"""The detection pipeline: a file is read, scored, thresholded, summarised and written block by block
(`iter_detect`), so memory stays flat whatever the file size."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .. import data
from ..attribution import contributions, top_features_rows
from ..errors import AnomalyError, DataError
from ..incidents import AlertHygiene
from ..loader import artifact_paths, load_detector
from ..specs import DetectSpec, parse
from ..store import ArtifactPaths, ModelStore
from ..summary import Summary, expected_rate
from ..thresholds import Thresholder, flag, rolling


class _Pending:
    """Raw rows waiting for their scores: window models finalise a row only after later rows arrive."""

    def __init__(self):
        self.blocks: list[tuple[data.Block, np.ndarray, np.ndarray]] = []  # (block, kept-row mask, raw values)
        self.errors: list[np.ndarray] = []
        self.n_errors = 0

    def add_block(self, block: data.Block, mask: np.ndarray, values: np.ndarray) -> None:
        self.blocks.append((block, mask, values))

    def add_errors(self, errors: np.ndarray) -> None:
        if len(errors):
            self.errors.append(errors)
            self.n_errors += len(errors)

    def ready(self, final: bool = False) -> Iterator[tuple[data.Block, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (block, mask, errors-for-kept-rows, raw values) for every block whose kept rows all have errors."""
        while self.blocks:
            block, mask, values = self.blocks[0]
            need = int(mask.sum())
            if self.n_errors < need and not final:
                return
            errs = np.concatenate(self.errors) if self.errors else np.empty((0, 0), np.float32)
            mine, rest = errs[:need], errs[need:]
            self.errors = [rest] if len(rest) else []
            self.n_errors = len(rest)
            self.blocks.pop(0)
            yield block, mask, mine, values


def iter_detect(
    file_path: str,
    spec: DetectSpec | None = None,
    *,
    version: str | None = None,
    store: ModelStore | None = None,
    paths: ArtifactPaths | None = None,
    anomaly_events: bool = True,
    block_bytes: int = data.BLOCK_BYTES,
    row_features: bool = False,
    **params: Any,
) -> Iterator[dict]:
    """Score a file block by block. Yields events: `progress`, `anomaly` (one per anomalous row, as soon as
    its block is scored) and finally `summary` (the same dict `detect` returns).
    What is detected is a `DetectSpec` (or its fields as keyword arguments, checked before anything is read):
    `time_column` (default: a column named timestamp/time/date/datetime) gives every reported anomaly its time;
    `threshold_window` (rows, or a time span such as `7d`) makes the threshold follow the data (`anomaly.thresholds.rolling`);
    `min_duration` and `merge_gap` shape the incidents and their rows' flags alike (`anomaly.incidents`).
    `row_features`: each anomalous row in `results` also names its strongest features (the MCP reply)."""
    spec = parse(DetectSpec, spec, **params)
    started = time.perf_counter()
    p = data.check_file(file_path)  # before loading the model: a typo in the file name fails at once
    fmt = data.sniff(p)
    if paths is None:
        paths, label = artifact_paths(version, store)
    else:
        label = str(paths.model.parent)
    # Reading starts before the model is loaded, so that the first blocks are parsed while torch is imported;
    # its columns come from the saved config, and are checked again once the model is loaded.
    try:  # probed once; a file it cannot read is reported after the model load, in the usual order
        numeric: list[str] | None = data.numeric_columns(p, fmt)[0]
    except AnomalyError:
        numeric = None
    readers = [_early_reader(p, fmt, numeric, paths, spec, block_bytes) if numeric is not None else None]
    try:
        yield from _detect(p, fmt, numeric, spec, paths, label, readers, started, anomaly_events, block_bytes,
                           row_features)
    finally:
        for reader in readers:
            if reader is not None:
                reader.close()


def _detect(p, fmt, numeric: list[str] | None, spec: DetectSpec, paths: ArtifactPaths, label: str, readers: list,
            started: float, anomaly_events: bool, block_bytes: int, row_features: bool) -> Iterator[dict]:
    reader = readers[0]
    output, per_feature, missing, plot = spec.output, spec.per_feature, spec.missing, spec.plot
    label_column, max_results, return_details = spec.label_column, spec.max_results, spec.return_details
    time_column, threshold_window = spec.time_column, spec.threshold_window
    device, precision = spec.device or "auto", spec.precision
    det = load_detector(paths, label, device, precision)
    features = det.feature_names_
    if numeric is None:
        numeric, _ = data.numeric_columns(p, fmt)
    label_col = data.find_label_column(list(fmt.names), label_column)
    used = data.match_features(fmt, numeric, features, label_col)
    time_col = data.time_column(list(fmt.names), used, time_column)
    window = rolling.parse_window(threshold_window)
    if window is not None and not isinstance(window, int) and time_col is None:
        raise DataError(f"threshold_window {threshold_window!r} is a time span, but {p.name} has no time column "
                        "(name one with time_column, or give the window in rows)")
    thresholder = Thresholder(det, window, str(threshold_window), spec.follow_level)
    baseline = _Baseline(window, det) if window is not None else None
    hygiene = AlertHygiene.of(spec.min_duration, spec.merge_gap, time_col is not None, p.name)
    total_bytes = p.stat().st_size
    result_cols = (["reconstruction_error", "is_anomaly"] + (["threshold"] if thresholder.moving else [])
                   + ([f"{f}_contribution" for f in features] if per_feature else []))
    stream = det.stream()
    pending = _Pending()
    acc = Summary(det.threshold_, features, max_results if return_details else 0, keep_all=label_col is not None,
                   expected_rate=expected_rate(det.threshold_info_), row_features=row_features,
                   score_stats=det.threshold_info_.get("stats") or det.train_stats_,
                   expected_ranges=getattr(det, "expected_ranges_", None))
    missing_report = {"missing_values": 0, "values_filled": 0, "rows_dropped": 0}
    plotter = _plotter(plot, det, fmt, used, label_col)
    filler = data.MissingFiller(features, missing, missing_report)
    writer = None
    headers_skipped = 0
    try:
        if output:  # inside the try: an interruption from here on removes the temporary file
            from ..output import ResultWriter
            writer = ResultWriter(output, fmt, fmt.header_line, result_cols, source=p)
        plan = _read_plan(spec, used, label_col, time_col)
        if reader is None or reader.plan != plan:  # the model's columns are not the ones the config named
            if reader is not None:
                reader.close()
            reader = _Reader(p, fmt, plan, block_bytes)
            readers.append(reader)
        for block in reader:
            headers_skipped += block.headers_skipped
            raw = block.frame[used].to_numpy(np.float64)  # float64: 1e39 is a huge value, not an overflow to inf
            X, mask = filler.push(raw, block.start)
            if baseline is not None:
                X = baseline.push(X, block, time_col)
            if label_col:
                acc.add_labels(block.frame[label_col].to_numpy(), label_col)
                acc.add_period_sample(block.frame[used[0]].to_numpy())
            pending.add_block(block, mask, raw)
            pending.add_errors(stream.push(X)[0])
            yield from _emit(pending, False, det, acc, writer, per_feature, anomaly_events, plotter, thresholder, time_col, hygiene)
            yield {"event": "progress", "rows_done": acc.rows, "bytes_total": total_bytes,
                   "rows_read": block.start + len(block.raw_lines)}
        tail = filler.finish()
        pending.add_errors(stream.push(baseline.push(tail, None, None) if baseline is not None else tail)[0])
        pending.add_errors(stream.finish()[0])
        yield from _emit(pending, True, det, acc, writer, per_feature, anomaly_events, plotter, thresholder, time_col, hygiene)
        if acc.rows == 0:
            raise DataError(f"{p} has a header row but no data rows")
        if acc.scored == 0:  # exit 0 with nothing scored looked like "no anomalies"
            raise DataError(_nothing_scored(p, det, acc.rows, missing_report))
        summary = acc.summary() | {
            "file": str(p), "version": label, "model_type": det.model_type, "features": features,
            "window": det.window_, "threshold_method": det.threshold_info_.get("method"),
            "time_column": time_col, "missing": missing_report, "seconds": round(time.perf_counter() - started, 3),
        }
        summary |= thresholder.report()
        if baseline is not None and "threshold_window" in summary:
            summary["threshold_window"]["baseline"] = baseline.describe()
        summary["warnings"] = summary["warnings"] + thresholder.warnings() + filler.warnings(acc.rows)
        if headers_skipped:
            summary["warnings"].append(f"{headers_skipped} line(s) repeating the header inside the data (concatenated "
                                       "files) were skipped")
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


@dataclass(frozen=True)
class _ReadPlan:
    """What is read of each block: the numeric columns, every column (JSON output and plots hold them all), the
    text columns parsed with the numbers and those read from the lines when asked for."""

    columns: tuple[str, ...]
    all_columns: bool
    text_cols: tuple[str, ...]
    lazy_text_cols: tuple[str, ...]


def _read_plan(spec: DetectSpec, used: list[str], label_col: str | None, time_col: str | None) -> _ReadPlan:
    json_output = bool(spec.output) and Path(spec.output).suffix.lower() in (".json", ".jsonl", ".ndjson")
    every_column = json_output or bool(spec.plot)
    # The time column is otherwise read from the lines, only for the rows the summary names (`data.LineTexts`):
    # parsing it all cost more than parsing the numbers.
    time_cols = (time_col,) if time_col else ()
    return _ReadPlan(tuple(used + ([label_col] if label_col else [])), every_column,
                     time_cols if every_column else (), () if every_column else time_cols)


class _Reader:
    """The blocks of a file as `plan` says, read ahead in a thread from the moment it is made."""

    def __init__(self, p: Path, fmt: data.CsvFormat, plan: _ReadPlan, block_bytes: int):
        self.plan = plan
        self.ahead = data.Prefetch(data.iter_blocks(p, fmt, list(plan.columns), block_bytes,
                                                    all_columns=plan.all_columns, text_cols=list(plan.text_cols),
                                                    lazy_text_cols=list(plan.lazy_text_cols)),
                                   READ_AHEAD)

    def __iter__(self):
        return iter(self.ahead)

    def close(self) -> None:
        self.ahead.close()


READ_AHEAD = 2  # blocks parsed ahead: while torch is imported the reader gets that far


def _early_reader(p: Path, fmt: data.CsvFormat, numeric: list[str], paths: ArtifactPaths, spec: DetectSpec,
                  block_bytes: int):
    """A `_Reader` for the columns the saved config names, or None when anything is amiss (the checks after
    the model is loaded say what, in their usual order)."""
    try:
        import json

        features = list(json.loads(paths.config.read_text())["features"])
        label_col = data.find_label_column(list(fmt.names), spec.label_column)
        used = data.match_features(fmt, numeric, features, label_col)
        time_col = data.time_column(list(fmt.names), used, spec.time_column)
        return _Reader(p, fmt, _read_plan(spec, used, label_col, time_col), block_bytes)
    except Exception:  # noqa: BLE001 - a corrupt config or a file that does not fit: reported after the load
        return None


def _nothing_scored(p: Path, det, rows: int, missing: dict) -> str:
    """Why a file gave no score at all."""
    if missing.get("rows_dropped", 0) >= rows:
        return f"{p}: every one of its {rows} row(s) has a missing value and --missing drop dropped them all; nothing to score"
    need = max(det.window_, int(getattr(det.model_, "span", det.window_)))  # a forecaster needs its window and one more
    return (f"{p} has {rows} data row(s), fewer than the {need} rows of the model's window: nothing could be "
            f"scored (give at least {need} rows)")


def _plotter(plot: str | None, det, fmt, used: list[str], label_col: str | None):
    """A bounded-memory plot collector for `detect --plot`, or None."""
    if not plot:
        return None
    import pandas as pd

    from ..plotting import PlotCollector
    time_col = data.guess_time_column(pd.DataFrame(columns=list(fmt.names)), used)
    return PlotCollector(det.feature_names_, det.threshold_, columns=used, label_column=label_col, time_column=time_col)



class _Baseline:
    """`rolling.DriftBaseline` over the threshold window: in rows, or for a time span the rows it held at the
    first block's median time step."""

    def __init__(self, window, det):
        self.window, self.reference = window, det.feature_levels()
        self.period = det.period()
        self.inner = self._make(window) if isinstance(window, int) else None

    def _make(self, rows: int) -> rolling.DriftBaseline:
        return rolling.DriftBaseline(rows, self.reference, self.period)

    def push(self, X: np.ndarray, block, time_col: str | None) -> np.ndarray:
        if self.inner is None and block is not None and time_col:
            times = data.parse_times(np.asarray(block.text(time_col)))
            steps = np.diff(times[~np.isnat(times)]).astype("timedelta64[ns]").astype(np.int64)
            steps = steps[steps > 0]
            if len(steps):
                rows = int(round(np.timedelta64(self.window, "ns").astype(np.int64) / np.median(steps)))
                self.inner = self._make(max(rolling.MIN_ROWS, rows))
        return X if self.inner is None else self.inner.push(X)

    def describe(self) -> dict | None:
        return None if self.inner is None else self.inner.describe()


def _emit(pending: _Pending, final: bool, det, acc: "Summary", writer, per_feature: bool,
          events: bool, plot, thresholder: Thresholder, time_col: str | None, hygiene: AlertHygiene) -> Iterator[dict]:
    """Flag the blocks whose rows are all scored; hand on those whose flags are final (`AlertHygiene`)."""

    for block, mask, errs, values in pending.ready(final):
        n = len(block.raw_lines)
        if len(errs) == n and errs.shape[1:] == (len(det.feature_names_),):  # every row kept: no scatter
            row_err = np.array(errs, np.float32)  # a fresh array, as the scatter gave (the same mean below)
        else:
            row_err = np.full((n, len(det.feature_names_)), np.nan, np.float32)
            if len(errs):
                row_err[mask] = errs
        with np.errstate(invalid="ignore"):
            scores = row_err.mean(axis=1) if row_err.shape[1] else np.full(n, np.nan, np.float32)
        times = block.text(time_col) if time_col else None
        moving, by_time = thresholder.moving, thresholder.moving and thresholder.by_time
        parsed = data.parse_times(np.asarray(times)) if times is not None and (by_time or hygiene.by_time) else None
        threshold = thresholder(scores, parsed if by_time else None)
        flags = flag(scores, threshold)
        item = (block, scores, row_err, times, threshold if moving else None, values)
        for settled, final_flags in hygiene.push(block.start, flags, parsed, item):
            yield from _deliver(settled, final_flags, det, acc, writer, per_feature, events, plot)
    if final:
        for settled, final_flags in hygiene.finish():
            yield from _deliver(settled, final_flags, det, acc, writer, per_feature, events, plot)


def _deliver(item: tuple, flags: np.ndarray, det, acc: "Summary", writer, per_feature: bool, events: bool,
             plot) -> Iterator[dict]:
    """One block with its final flags: into the summary, the plot and the output; an event per anomalous row."""
    block, scores, row_err, times, threshold, values = item
    acc.add(block.start, scores, flags, row_err, times, threshold, values)
    if plot is not None:
        plot.add_frame(block.start, block.frame, scores, flags, row_err, threshold)
    if writer:
        cols = {"reconstruction_error": scores, "is_anomaly": flags}
        if threshold is not None:  # the result columns have `threshold` exactly when it moves
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


def summary_of(events: Iterator[dict], progress: Callable[[dict], None] | None = None) -> dict:
    """The summary that ends a detection event stream; `progress` sees the progress events on the way."""
    for event in events:
        if event["event"] == "summary":
            event.pop("event")
            return event
        if progress and event["event"] == "progress":
            progress(event)
    raise AnomalyError("detection ended without a summary")  # unreachable: iter_detect always ends with one

