"""Training time of every model type on a 10,000-row x 25-column series with default settings (target: the
default model under 20 s on 2 cores, the others under a minute), as ratios against the dense autoencoder trained
in the same run; also scoring time.

    .venv/bin/python bench/train_models.py [--rows 10000] [--cols 25] [--window 1] [--epochs 100] [--models lstm,vae]

Default settings = the library defaults in `anomaly/defaults.py` (window, at most 100 epochs, early stopping
with patience 10, batch 32); `--window 1 --epochs 5` etc. time other settings (s/epoch is comparable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anomaly import defaults, models, synthetic  # noqa: E402
from anomaly.detector import Detector  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--cols", type=int, default=25)
    p.add_argument("--window", default="default", help="a number, 'auto', or 'default' (each model type's own)")
    p.add_argument("--epochs", type=int, default=defaults.EPOCHS)
    p.add_argument("--models", default=",".join(models.MODEL_TYPES), help="dense is always timed first (the baseline)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    window = args.window if args.window == "auto" else None if args.window == "default" else int(args.window)
    X = synthetic.make_series(args.rows, args.cols, seed=0).drop(columns="timestamp").to_numpy(np.float32)
    chosen = ["dense"] + [m for m in args.models.split(",") if m and m != "dense"]
    print(f"{args.rows} rows x {args.cols} columns, window {args.window}, at most {args.epochs} epochs")
    print(f"default model type: {defaults.MODEL_TYPE}")
    print(f"{'model':<12} {'window':>6} {'epochs':>6} {'train s':>8} {'s/epoch':>8} {'vs dense':>8} {'score s':>8}")
    results, base = [], None
    for model_type in chosen:
        started = time.perf_counter()
        det = Detector(model_type=model_type, window=window, epochs=args.epochs).fit(X)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        det.decision_function(X)
        score_seconds = time.perf_counter() - started
        base = base or seconds
        row = {"model": model_type, "window": det.window_, "epochs": det.history_["epochs_run"],
               "train_seconds": round(seconds, 2), "seconds_per_epoch": round(seconds / det.history_["epochs_run"], 3),
               "vs_dense": round(seconds / base, 2), "score_seconds": round(score_seconds, 2)}
        results.append(row)
        print(f"{model_type:<12} {row['window']:>6} {row['epochs']:>6} {seconds:>8.1f} {row['seconds_per_epoch']:>8.3f} "
              f"{row['vs_dense']:>7.2f}x {score_seconds:>8.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
