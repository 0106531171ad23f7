"""`anomaly threshold <version> --method pot`: a new threshold on an existing version, without retraining.

The weights, scaler and model config stay the same; the result is a NEW version (the old one is untouched), so
detection results stay reproducible. The scores the threshold is computed from:
- label-free methods (percentile, meanstd, iqr, pot): the held-out tail of the training file (the rows the
  original threshold came from), or all rows of `--data FILE` when given (e.g. fresh normal data);
- best-f1 / midpoint: a labelled file, `--data FILE` with a label column (or `--label-column`), or
  `--data FILE --labels LABELS` with one 0/1 label per row.
"""

from __future__ import annotations

import argparse

from .. import defaults, jsonsafe, thresholds
from ..errors import DataError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", help="existing model version ('latest' for the newest)")
    p.add_argument("--method", required=True, help="threshold method: percentile, meanstd, iqr, pot, best-f1, midpoint")
    p.add_argument("--model-dir", default="models", help="artifact store folder")
    p.add_argument("--new-version", help="name of the new version (default: a timestamp)")
    p.add_argument("--data", help="scores come from this file (default: the held-out tail of the training file)")
    p.add_argument("--labels", dest="labels_file", help="0/1 labels for --data, one per row (best-f1, midpoint)")
    p.add_argument("--label-column", help="label column in --data (default: a column named 'label')")
    p.add_argument("--percentile", type=float, help="percentile method: percentile of normal scores (default 95)")
    p.add_argument("--k", type=float, help="meanstd / iqr multiplier")
    p.add_argument("--risk", type=float, help="pot: probability that a normal row exceeds the threshold (default 1e-3)")
    p.add_argument("--plot", help="write a PNG: the calibration errors, their histogram and density, every "
                   "label-free method's threshold and the fraction of rows each flags (the new one highlighted)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    result = rethreshold(args.version, args.method, model_dir=args.model_dir, new_version=args.new_version,
                         data_file=args.data, labels_file=args.labels_file, label_column=args.label_column,
                         percentile=args.percentile, k=args.k, risk=args.risk, plot=args.plot)
    if args.json:
        print(jsonsafe.dumps(result, indent=2))
    else:
        print(f"New version {result['version']} (from {result['source_version']}): threshold "
              f"{result['threshold']:.6g} ({result['threshold_method']} {result['threshold_params']}, "
              f"from {result['threshold_source']}); was {result['previous_threshold']:.6g} "
              f"({result['previous_method']})")
        if result.get("plot"):
            print(f"Plot written to {result['plot']}")
    return 0


def rethreshold(version: str, method: str, *, model_dir: str = "models", new_version: str | None = None,
                data_file: str | None = None, labels_file: str | None = None, label_column: str | None = None,
                percentile: float | None = None, k: float | None = None, risk: float | None = None,
                plot: str | None = None) -> dict:
    from .. import data, service
    from ..detector import Detector
    from ..store import ModelStore

    if plot:
        from ..plotting import require_matplotlib
        require_matplotlib()
    store = ModelStore(model_dir)
    name = store.resolve(version)
    det = Detector.load(store.paths(name), name)  # a private copy: the service cache keeps the original
    params = service.threshold_params(method, percentile, k, **({"risk": risk} if risk is not None else {}))
    needs_labels = method in thresholds.NEEDS_LABELS
    old = dict(det.threshold_info_)
    if data_file is None:
        if needs_labels:
            raise DataError(f"threshold method {method!r} needs labelled data: --data FILE with a label column, "
                            "or --data FILE --labels LABELS")
        data_file = det.config_.get("data", {}).get("file")
        if not data_file:
            raise DataError(f"version {name} does not record its training file; pass --data FILE")
        table = data.read_table(data_file, features=det.feature_names_)
        scores = det.calibration_scores(table.X)  # as training scored them (out of fold for a closed-form model)
        # The rows the original threshold came from: every training row (versions from before that: the tail).
        split = float(det.config_.get("training", {}).get("validation_split", defaults.VALIDATION_SPLIT))
        n_val = int(round(len(scores) * split))
        held_out = old.get("source") == "validation" and n_val > 0
        calib, labels = (scores[-n_val:] if held_out else scores), None
        source = f"{'held-out tail of ' if held_out else ''}training file {data_file}"
    else:
        table = data.read_table(data_file, features=det.feature_names_, label_column=label_column)
        scores = det.decision_function(table.X)
        labels = table.labels
        if labels_file:
            labels = thresholds.load_labels(labels_file, len(table.frame))
            if table.row_mask is not None:
                labels = labels[table.row_mask]
        if not needs_labels and labels is not None:
            calib, labels = scores[labels == 0], None  # label-free methods describe normal rows only
        else:
            calib = scores
        source = data_file
    det.threshold_source_ = source
    info = det.set_threshold(method, calib, labels, **params)
    info["derived_from"] = {"version": name, "threshold": old.get("threshold"), "method": old.get("method")}
    metadata = {k: v for k, v in det.config_.items() if k == "data"}
    metadata["derived_from"] = name
    saved = store.save(lambda p: det.save(p, metadata, atomic=False), version=new_version)
    extra = {}
    if plot:
        from ..plotting import plot_threshold_choice
        extra["plot"] = str(plot_threshold_choice(plot, calib, info, f"version {saved}: calibration errors ({source})"))
    return {"status": "success", "version": saved, **extra, "source_version": name, "threshold": det.threshold_,
            "threshold_method": method, "threshold_params": params, "threshold_source": source,
            "previous_threshold": old.get("threshold"), "previous_method": old.get("method")}
