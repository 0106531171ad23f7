"""`anomaly evaluate`: detection quality on labelled suites, next to classic baselines on the same windows.

A suite is a folder of `<series>.train.csv` (mostly normal rows) and `<series>.test.csv` (the same columns plus
a 0/1 `label` column). For every series and every detector variant (model type x window) this trains through
`service.train` (the one training path), scores the test file with the saved `Detector`, and reports ROC-AUC,
PR-AUC, VUS-PR, best F1, precision / recall / F1 at the detector's own threshold (and at each compared
threshold method), point-adjusted F1 next to the same for a uniform random score, train / score time, and
the event figures of the flags detection raises (`anomaly.events`: incidents caught, false alarms, spill,
delay). IsolationForest, PCA reconstruction and |z| are fitted on the same training rows and windows. Series
without any anomaly report the false positive rate (and alerts) only.

    anomaly evaluate --suite /work/shared/data/nab --json nab.json --plots plots/
    anomaly evaluate --suite /work/shared/data/nab --outputs nab-results/   # detections already made
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import defaults, events, metrics, models, thresholds
from ..errors import DataError, NotFound
from ..jsonsafe import numpy_default
from ..thresholds import Thresholder
from ..thresholds.rolling import RollingThreshold
from .commands import add_device_arguments
from .evaluate_outputs import add_event_arguments
from .evaluate_report import AT_THRESHOLD, RANKING, format_series, format_summary, summarize  # noqa: F401

# Evaluation defaults: enough training to converge on these small series, cheap enough for 2 shared cores.
EVAL_EPOCHS = 30
EVAL_BATCH_SIZE = 64
EVAL_PATIENCE = 5
EVAL_MAX_TRAIN_ROWS = 20000
COMPARE_THRESHOLDS = ("percentile", "pot", "meanstd", "iqr", "dynamic")


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _windows(value: str) -> list:
    out = []
    for v in _list(value):
        try:
            out.append(v if v == "auto" else int(v))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--window takes comma-separated whole numbers, got {value!r}") from None
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", required=True, nargs="+",
                   help="suite folder(s) of <series>.train.csv / <series>.test.csv")
    add_event_arguments(p)
    p.add_argument("--model-type", type=_list, default=[defaults.MODEL_TYPE], help="model types, comma-separated")
    p.add_argument("--window", type=_windows, default=[defaults.WINDOW], help="windows to compare, comma-separated")
    p.add_argument("--threshold-method", default=defaults.THRESHOLD_METHOD, help="the detector's own threshold method")
    p.add_argument("--percentile", type=float, default=defaults.PERCENTILE, help="percentile (percentile method)")
    p.add_argument("--risk", type=float, help="target risk (pot method, default 1e-3)")
    p.add_argument("--compare-thresholds", type=_list, default=list(COMPARE_THRESHOLDS),
                   help="also report F1 at these label-free threshold methods (same model, no retraining)")
    p.add_argument("--threshold-windows", type=lambda v: [int(x) for x in _list(v)], default=[],
                   help="also report rolling thresholds over these many preceding rows (each compared method)")
    p.add_argument("--smooth", action="store_true", help="also report each detector's scores smoothed by a centred "
                   "moving mean over 2 x window rows (an experiment: see the documentation's benchmarks page, "
                   "docs/benchmarks.md)")
    p.add_argument("--baselines", type=_list, default=["iforest", "pca", "zscore"],
                   help="baselines on the same windows (iforest, pca, zscore; 'none' for none)")
    p.add_argument("--series", type=_list, help="only series whose name contains one of these substrings")
    p.add_argument("--sample", type=int, help="only N series per suite, drawn at random with --seed (quick looks)")
    p.add_argument("--encoding-dim", type=int, help="bottleneck size (default: from the input width)")
    p.add_argument("--hidden", type=lambda v: [int(x) for x in _list(v)], help="hidden layer sizes, e.g. 64,32")
    p.add_argument("--dropout", type=float, help="dropout rate")
    p.add_argument("--learning-rate", type=float, default=defaults.LEARNING_RATE, help="Adam learning rate")
    p.add_argument("--epochs", type=int, default=EVAL_EPOCHS, help="maximum epochs per model")
    p.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help="mini-batch size")
    p.add_argument("--patience", type=int, default=EVAL_PATIENCE, help="early-stopping patience")
    p.add_argument("--max-train-rows", type=int, default=EVAL_MAX_TRAIN_ROWS, help="train on at most the first N rows")
    p.add_argument("--seed", type=int, default=defaults.SEED, help="seed for models, baselines and the random score")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    add_device_arguments(p)
    p.add_argument("--json", dest="json_path", help="write the full report here (rewritten after every series)")
    p.add_argument("--plots", help="write one plot per series and detector variant into this folder")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the suite summary")


def run(args) -> int:
    if args.outputs:
        from . import evaluate_outputs
        return evaluate_outputs.run(args)
    if args.plots:
        from ..plotting import require_matplotlib
        require_matplotlib()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    report = {"command": "anomaly evaluate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else None,
              "config": _config(args), "suites": {}}
    for suite in args.suite:
        print(format_summary(evaluate_suite(suite, args, report=report)), flush=True)
    return 0


def _config(args) -> dict:
    return {k: getattr(args, k, None) for k in (
        "model_type", "window", "threshold_method", "percentile", "risk", "compare_thresholds", "baselines",
        "series", "sample", "smooth", "encoding_dim", "hidden", "dropout", "learning_rate", "epochs",
        "batch_size", "patience", "max_train_rows", "seed", "device", "precision", "event_tolerance",
        "event_merge_gap")}


def find_series(suite: str | Path, only: list[str] | None = None) -> list[tuple[str, Path, Path]]:
    folder = Path(suite)
    if not folder.is_dir():
        raise NotFound(f"suite folder not found: {folder}")
    out = []
    for train in sorted(folder.glob("*.train.csv")):
        name = train.name[: -len(".train.csv")]
        test = folder / f"{name}.test.csv"
        if test.exists() and (not only or any(s in name for s in only)):
            out.append((name, train, test))
    if not out:
        raise DataError(f"no <series>.train.csv / <series>.test.csv pairs in {folder}"
                        + (f" matching {', '.join(only)}" if only else ""))
    return out


def evaluate_suite(suite: str | Path, args, report: dict | None = None) -> dict:
    report = report if report is not None else {"config": _config(args), "suites": {}}
    name = Path(suite).name
    result = {"suite": str(suite), "tolerance": args.event_tolerance, "merge_gap": args.event_merge_gap,
              "series": [], "summary": {}}
    report["suites"][name] = result
    with tempfile.TemporaryDirectory(prefix="anomaly-eval-") as tmp:
        for series, train, test in _sample(find_series(suite, args.series), getattr(args, "sample", None), args.seed):
            try:
                row = evaluate_series(series, train, test, args, Path(tmp), plot_prefix=f"{name}__{series}")
            except DataError as exc:  # one unusable series must not sink the suite
                row = {"series": series, "error": str(exc)}
            result["series"].append(row)
            result["summary"] = summarize(result["series"])
            if not args.quiet:
                print(format_series(row), flush=True)
            if args.json_path:
                _write_json(args.json_path, report)
    return result


def _sample(series: list, n: int | None, seed: int) -> list:
    if not n or n >= len(series):
        return series
    keep = np.random.default_rng(seed).choice(len(series), n, replace=False)
    return [series[i] for i in sorted(keep)]


def _write_json(path: str, report: dict) -> None:
    from ..store import atomic_write_text
    atomic_write_text(Path(path), json.dumps(report, indent=1, default=numpy_default, allow_nan=True))




def _capped(path: Path, max_rows: int | None, tmp: Path) -> Path:
    """The file itself, or a copy of its header and first `max_rows` data rows."""
    if not max_rows:
        return path
    with open(path, "rb") as f:
        lines = []
        for i, line in enumerate(f):
            if i > max_rows:
                break
            lines.append(line)
        else:
            return path
    out = tmp / f"capped-{path.name}"
    out.write_bytes(b"".join(lines))
    return out


def evaluate_series(series: str, train: Path, test: Path, args, tmp: Path, plot_prefix: str = "") -> dict:
    from .. import data, service
    from ..store import ModelStore

    store = ModelStore(tmp / "models")
    train_file = _capped(train, args.max_train_rows, tmp)
    table = data.read_table(test)
    if table.labels is None:
        raise DataError(f"{test} has no label column")
    labels = table.labels
    row = {"series": series, "rows_train": None, "rows_test": int(len(labels)),
           "anomalous_rows": int(labels.sum()), "segments": int(len(metrics.segments(labels))),
           "max_buffer": None, "detectors": {}}
    max_buffer = None
    train_X = None
    t_opts = {"risk": args.risk} if args.risk is not None else {}
    for model_type in args.model_type:
        for window in args.window:
            # named by the window asked for; none asked: the model type's own ("auto" for pca, 32 for dense)
            w_label = models.default_window(model_type) if window is None else window
            key = f"{model_type} w={w_label}"
            started = time.perf_counter()
            res = service.train(str(train_file), store=store, model_type=model_type, window=window,
                                epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                                seed=args.seed, threshold_method=args.threshold_method,
                                percentile=args.percentile, **t_opts,
                                learning_rate=args.learning_rate, device=args.device, precision=args.precision,
                                **_model_params(args))
            train_seconds = time.perf_counter() - started
            det = service.load_detector(store.paths(res["version"]), res["version"], args.device, args.precision)
            test_table = data.read_table(test, features=det.feature_names_)
            if max_buffer is None:
                # One VUS buffer range per series, from the period of its first feature (as TSB-AD does, and as
                # `detect --label-column` does), shared by every detector.
                max_buffer = row["max_buffer"] = metrics.max_buffer_for(test_table.X[:, 0])
            started = time.perf_counter()
            scores = det.decision_function(test_table.X)
            score_seconds = time.perf_counter() - started
            # at the threshold detection applies: the stored one, following the file's level (`follow_level`)
            rep = _report(labels, scores, Thresholder(det, None)(scores, None), max_buffer, args)
            rep |= {"threshold": det.threshold_, "train_seconds": round(train_seconds, 3),
                    "score_seconds": round(score_seconds, 3), "epochs_run": res["epochs_run"]}
            # The same model under other label-free threshold methods, calibrated like training does.
            train_table = data.read_table(train_file, features=det.feature_names_)
            train_X = train_table.X
            row["rows_train"] = int(len(train_X))
            # as training calibrates: out of fold for a closed-form model (its in-sample scores are lower)
            train_scores = det.calibration_scores(train_X)
            calib = _calibration(train_scores)
            rep["f1_at"] = {}
            for method in args.compare_thresholds:
                params = service.threshold_params(method, args.percentile, None, **t_opts)
                thr = thresholds.compute(method, calib, **params)["threshold"]
                rep["f1_at"][method] = _at_threshold(labels, scores, thr)
                for n in getattr(args, "threshold_windows", []):
                    moving = RollingThreshold(n, method, params, thr)
                    rep["f1_at"][f"{method} rolling {n}"] = _at_threshold(labels, scores, moving.push(scores))
            row["detectors"][key] = rep
            if getattr(args, "smooth", False):
                span = 2 * det.window_
                params = service.threshold_params(args.threshold_method, args.percentile, None, **t_opts)
                thr = thresholds.compute(args.threshold_method, _calibration(smooth(train_scores, span)),
                                         **params)["threshold"]
                row["detectors"][f"{key} smoothed"] = _report(labels, smooth(scores, span), thr, max_buffer, args) | {
                    "threshold": thr}
            if args.plots:
                _plot(Path(args.plots) / f"{plot_prefix}__{key.replace(' ', '_').replace('=', '')}.png",
                      det, test_table, scores, labels, f"{series}: {key}")
            if args.baselines and args.baselines != ["none"]:
                for name in args.baselines:
                    # a baseline named like an evaluated model type (pca) must not take (or give up) its place
                    bname = f"{name} baseline" if name in args.model_type else name
                    bkey = bname if name == "zscore" else f"{bname} w={w_label}"
                    if bkey not in row["detectors"]:
                        row["detectors"][bkey] = _baseline(name, det.window_, train_X, test_table.X, labels,
                                                           max_buffer, args)
    return row


def smooth(scores: np.ndarray, span: int) -> np.ndarray:
    """Centred moving mean over `span` rows (unscored rows ignored; edges average what they have)."""
    ok = np.isfinite(scores)
    kernel = np.ones(max(1, span))
    total = np.convolve(np.where(ok, scores, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _model_params(args) -> dict:
    names = ("encoding_dim", "hidden", "dropout")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _calibration(train_scores: np.ndarray) -> np.ndarray:
    """The rows a threshold is calibrated on, as training does: every scored training row."""
    return train_scores[np.isfinite(train_scores)]


def _at_threshold(labels, scores, threshold) -> dict:
    with np.errstate(invalid="ignore"):
        pred = scores > threshold
    p, r, f = metrics.prf(labels, pred)
    fp = int((pred & ~labels.astype(bool)).sum())
    return {"threshold": float(np.mean(threshold)), "precision": p, "recall": r, "f1": f,
            "false_positive_rate": fp / max(1, int((~labels.astype(bool)).sum())),
            "flagged_ratio": float(pred.mean()) if len(pred) else 0.0}


def _report(labels, scores, threshold, max_buffer, args) -> dict:
    from ..thresholds import flag

    found = events.series_report(labels, flag(scores, threshold), args.event_tolerance, args.event_merge_gap)
    if labels.any():
        return metrics.threshold_report(labels, scores, threshold, max_buffer=max_buffer) | {"events": found}
    # No anomaly: only the false alarms mean anything.
    return {k: v for k, v in metrics.threshold_report(labels, scores, threshold).items()
            if k in ("rows", "anomalous_rows", "flagged_rows", "false_positive_rate")} | {"events": found}


def _baseline(name: str, window: int, train_X, test_X, labels, max_buffer, args) -> dict:
    from ..baselines import BASELINES

    if name not in BASELINES:
        raise DataError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    started = time.perf_counter()
    model = BASELINES[name](window=window, seed=args.seed).fit(train_X)
    train_scores = model.decision_function(train_X)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = model.decision_function(test_X)
    score_seconds = time.perf_counter() - started
    if args.threshold_method in thresholds.NEEDS_LABELS:  # the training files carry no labels
        thr = float(np.nanpercentile(train_scores, defaults.PERCENTILE))
    else:
        from ..thresholds import threshold_params
        params = threshold_params(args.threshold_method, args.percentile, None,
                                  **({"risk": args.risk} if args.risk is not None else {}))
        thr = thresholds.compute(args.threshold_method, _calibration(train_scores), **params)["threshold"]
    rep = _report(labels, scores, thr, max_buffer, args)
    return rep | {"threshold": thr, "train_seconds": round(train_seconds, 3), "score_seconds": round(score_seconds, 3)}


def _plot(path: Path, det, table, scores, labels, title: str) -> None:
    from ..plotting import plot_detection

    row_err = det.row_errors(table.X)
    times = table.frame[table.time_column].to_numpy() if table.time_column else None
    plot_detection(path, table.X, det.feature_names_, scores, det.threshold_, labels=labels, times=times,
                   row_errors=row_err, title=title)
