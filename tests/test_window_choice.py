"""The training report says which window was chosen and why: the period in rows and time, a cut, a fallback."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly.window_choice import explain

ROOT = Path(__file__).resolve().parents[1]


def metrics(days: int, step: str, per_day: int, columns: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * per_day
    day = np.sin(2 * np.pi * np.arange(n) / per_day)
    frame = pd.DataFrame({f"m{i}": 10 * (i + 1) + 5 * (i + 1) * day + rng.normal(0, 0.3, n) for i in range(columns)})
    frame.insert(0, "timestamp", pd.date_range("2026-01-01", periods=n, freq=step))
    return frame


def test_a_daily_cycle_of_5_minute_data_cut_by_the_width_limit_is_said_with_a_shorter_window():
    frame = metrics(14, "5min", 288)
    X, times = frame.iloc[:, 1:].to_numpy(), frame["timestamp"].to_numpy()
    choice = explain("pca", X, 256, True, times)
    assert choice["period_rows"] == 288 and choice["period_span"] == "1 day"
    assert choice["cut_by"].startswith("the width limit") and choice["window_span"] == "21.3h"
    assert "--window 12" in choice["suggestion"]
    whole = explain("pca", X[:, :1], 288, True, times)  # one column: the whole day fits
    assert whole["cut_by"] is None and "suggestion" not in whole and whole["window_span"] == "1 day"


def test_the_day_of_1_minute_data_is_named_beside_the_window():
    frame = metrics(5, "1min", 1440, columns=1)
    X, times = frame[["m0"]].to_numpy(), frame["timestamp"].to_numpy()
    from anomaly.models.pca import auto_window

    choice = explain("pca", X, auto_window(X), True, times)
    assert abs(choice["long_period_rows"] - 1440) <= 15 and "1 day" in choice["reason"]
    assert "--window" in choice["suggestion"]


def test_noise_has_no_day_to_report():
    rng = np.random.default_rng(2)
    choice = explain("pca", rng.normal(size=(3000, 1)), 125, True)
    assert "long_period_rows" not in choice


def test_a_window_the_user_gave_is_reported_as_such():
    assert explain("pca", np.zeros((100, 2)), 12, False) == {"window": 12, "auto": False}


def test_train_prints_the_window_and_why(tmp_path):
    metrics(14, "5min", 288).to_csv(tmp_path / "train.csv", index=False)
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(tmp_path / "train.csv"),
                          "--model-dir", str(tmp_path / "m"), "--quiet"], capture_output=True, text=True, check=True)
    assert "window 256 rows = 21.3h: one period is 288 rows (1 day), cut to 256 by the width limit" in out.stdout
    assert "--window 12" in out.stdout
