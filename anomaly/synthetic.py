"""Synthetic multivariate series with injected anomalies, for the demo and the tests.

    python -m anomaly.synthetic examples/   # writes train.csv, test.csv (with a label column)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def make_series(n: int, n_features: int = 4, seed: int = 0, start: str = "2026-01-01") -> pd.DataFrame:
    """Correlated periodic sensor-like signals plus noise, with a timestamp column."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = np.sin(2 * np.pi * t / 50)
    cols = {}
    for j in range(n_features):
        phase = j * 0.7
        cols[f"sensor_{j}"] = (np.sin(2 * np.pi * t / 50 + phase) + 0.5 * base * (j % 2)
                               + 0.1 * rng.normal(size=n) + j)
    frame = pd.DataFrame(cols).astype(np.float32)
    frame.insert(0, "timestamp", pd.date_range(start, periods=n, freq="min").strftime("%Y-%m-%d %H:%M:%S"))
    return frame


def inject(frame: pd.DataFrame, n_anomalies: int = 10, magnitude: float = 6.0, seed: int = 1,
           feature: str | None = None) -> pd.DataFrame:
    """Add blatant point anomalies (spikes of `magnitude` in one feature) and a `label` column."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    feats = [c for c in out.columns if c.startswith("sensor_")]
    rows = rng.choice(np.arange(20, len(out) - 20), size=n_anomalies, replace=False)
    out["label"] = 0
    for r in rows:
        col = feature or feats[int(rng.integers(len(feats)))]
        out.loc[r, col] = np.float32(out.loc[r, col] + magnitude * rng.choice([-1.0, 1.0]))
        out.loc[r, "label"] = 1
    return out


def inject_incidents(frame: pd.DataFrame, seed: int = 3) -> pd.DataFrame:
    """Incidents that last, as in real telemetry, plus a few spikes, with a `label` column: a level shift, a
    changed frequency, a noise burst and a frozen sensor."""
    rng = np.random.default_rng(seed)
    out = inject(frame, n_anomalies=2, magnitude=6.0, seed=seed)
    n = len(out)
    t = np.arange(n)
    spans = [(0.15, 40), (0.40, 60), (0.65, 30), (0.85, 50)]
    for k, (at, length) in enumerate(spans):
        r0 = int(at * n)
        rows = slice(r0, r0 + length)
        col = f"sensor_{k % 4}"
        values = out[col].to_numpy(np.float32).copy()
        if k == 0:
            values[rows] += 2.5  # level shift
        elif k == 1:
            values[rows] = np.sin(2 * np.pi * t[rows] / 12) + k + 0.1 * rng.normal(size=length)  # faster cycle
        elif k == 2:
            values[rows] += rng.normal(scale=1.5, size=length)  # noise burst
        else:
            values[rows] = values[r0]  # stuck sensor
        out[col] = values
        out.loc[rows, "label"] = 1
    return out


def write_example(folder: str | Path, n_train: int = 3000, n_test: int = 4000) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train = make_series(n_train, seed=0)
    test = inject_incidents(make_series(n_test, seed=2, start="2026-02-01"))
    train.to_csv(folder / "train.csv", index=False, float_format="%.5f")
    test.to_csv(folder / "test.csv", index=False, float_format="%.5f")
    return folder / "train.csv", folder / "test.csv"


if __name__ == "__main__":
    tr, te = write_example(sys.argv[1] if len(sys.argv) > 1 else "examples")
    print(f"wrote {tr} and {te}")
