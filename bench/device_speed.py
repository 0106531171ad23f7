"""Training samples/s and scoring rows/s of every model type on every device this machine has (CPU, CUDA,
MPS), on the same data in the same run, as ratios to the CPU; and how far mixed-precision scores are from fp32
scores of the same model (max relative difference per row, Spearman rank correlation).

    .venv/bin/python bench/device_speed.py [--rows 5000] [--features 20] [--window 32] [--epochs 1]
                                           [--batch-size 32,512] [--precision fp32,bf16]

Prints a markdown table (docs/benchmarks.md: Devices). Training is the product's loop (`training.fit`: the whole
matrix on the device, batches sliced there); scoring is `scoring.row_errors` (blocks moved once, errors back
once per batch). A short warm-up on each device comes first, so CUDA's start-up cost is not counted.
Then, per model type, training on each accelerator and on the CPU alternately (bench/pairs.py: --pairs pairs,
first batch size, fp32), as min / median / max of the ratio of seconds with the load average.

Without an accelerator (CUDA or MPS) it prints that it skipped and exits 0 (`--cpu` runs the CPU rows anyway).
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from anomaly import models, scoring, training
from anomaly.device import PRECISIONS, _mps_available, check_precision, device_name
from anomaly.errors import DeviceError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pairs  # noqa: E402

MODEL_TYPES = ("dense", "lstm", "transformer", "vae")


def make_data(rows: int, n_features: int, seed: int = 0) -> np.ndarray:
    """Standardised periodic signals with noise: what the models see after scaling."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    X = np.sin(2 * np.pi * t / rng.uniform(20, 200, n_features) + rng.uniform(0, 6, n_features))
    X = X + 0.1 * rng.normal(size=X.shape)
    return ((X - X.mean(0)) / X.std(0)).astype(np.float32)


def devices() -> list[torch.device]:
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda", 0))
    if _mps_available():
        found.append(torch.device("mps"))
    return found


def build(model_type: str, n_features: int, window: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights on every device
    return models.get(model_type).Model(models.make_config(model_type, n_features, window, {})).to(device)


def measure(model_type: str, X: np.ndarray, window: int, epochs: int, batch_size: int, device: torch.device,
            precision: str, repeat: int) -> dict:
    """Best of `repeat` runs each (other work on a shared machine only ever slows a run down)."""
    model = build(model_type, X.shape[1], window, device)
    training.fit(model, X[:2000], None, epochs=1, batch_size=batch_size, precision=precision)  # warm-up
    train_s = score_s = float("inf")
    for _ in range(repeat):
        model = build(model_type, X.shape[1], window, device)
        history = training.fit(model, X, None, epochs=epochs, batch_size=batch_size, precision=precision)
        train_s = min(train_s, history["seconds"])
    samples = (len(X) - model.span + 1) * epochs
    for _ in range(repeat):
        started = time.perf_counter()
        scores = scoring.row_scores(scoring.row_errors(model, X, precision=precision))
        score_s = min(score_s, time.perf_counter() - started)
    return {"train_per_s": samples / train_s, "score_per_s": len(X) / score_s, "model": model, "scores": scores}


def agreement(model: torch.nn.Module, X: np.ndarray, precision: str, reference: np.ndarray) -> tuple[float, float]:
    """(max relative difference, Spearman) of `precision` scores against the fp32 scores of the same model."""
    scores = scoring.row_scores(scoring.row_errors(model, X, precision=precision))
    ok = np.isfinite(reference)
    rel = np.abs(scores[ok] - reference[ok]) / np.abs(reference[ok])
    return float(rel.max()), float(spearmanr(scores[ok], reference[ok])[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", default="32,512", help="training batch sizes, comma-separated")
    ap.add_argument("--precision", default="fp32,bf16", help=f"of {', '.join(PRECISIONS)}, comma-separated")
    ap.add_argument("--model-type", default=",".join(MODEL_TYPES))
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    ap.add_argument("--cpu", action="store_true", help="run even without an accelerator (CPU rows only)")
    pairs.add_arguments(ap)
    args = ap.parse_args()
    if len(devices()) == 1 and not args.cpu:
        print("device_speed: no CUDA or MPS device on this machine, skipped (--cpu runs the CPU rows)")
        return
    X = make_data(args.rows, args.features)
    precisions = args.precision.split(",")
    print(f"{args.rows:,} rows x {args.features} features, window {args.window}, {args.epochs} epoch(s), best of "
          f"{args.repeat}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads ({platform.processor() or platform.machine()}); "
          f"devices: {', '.join(f'{d} ({device_name(d)})' for d in devices())}")
    print("| model | batch | device | precision | train samples/s | x CPU | score rows/s | x CPU | "
          "max rel. diff vs fp32 | Spearman vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model_type in args.model_type.split(","):
        for batch_size in (int(b) for b in args.batch_size.split(",")):
            cpu = None
            for device in devices():
                fp32 = None  # this device's fp32 run: its model scored in mixed precision gives the score gap
                for precision in precisions:
                    try:
                        check_precision(precision, device)
                    except DeviceError:
                        continue  # e.g. fp16 on the CPU
                    r = measure(model_type, X, args.window, args.epochs, batch_size, device, precision, args.repeat)
                    cpu = cpu or r  # the first row (CPU, first precision) is the baseline
                    fp32 = r if precision == "fp32" else fp32
                    gap = "- | -"
                    if precision != "fp32" and fp32 is not None:
                        rel, rho = agreement(fp32["model"], X, precision, fp32["scores"])
                        gap = f"{100 * rel:.2f}% | {rho:.5f}"
                    print(f"| {model_type} | {batch_size} | {device} | {precision} | {r['train_per_s']:,.0f} | "
                          f"{r['train_per_s'] / cpu['train_per_s']:.2f} | {r['score_per_s']:,.0f} | "
                          f"{r['score_per_s'] / cpu['score_per_s']:.2f} | {gap} |", flush=True)
    batch_size = int(args.batch_size.split(",")[0])
    for model_type in args.model_type.split(","):
        for device in devices()[1:]:
            def fit(device=device, model_type=model_type):
                model = build(model_type, X.shape[1], args.window, device)
                training.fit(model, X, None, epochs=args.epochs, batch_size=batch_size, precision="fp32")
                if device.type == "cuda":
                    torch.cuda.synchronize()
            cpu_fit = functools.partial(fit, torch.device("cpu"), model_type)
            result = pairs.alternate(f"{model_type} training, batch {batch_size}, {device} vs cpu", fit, cpu_fit,
                                     args.pairs, warmup=True)
            print(result.line(), flush=True)

if __name__ == "__main__":
    main()
