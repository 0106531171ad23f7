"""Plots: files are written and non-empty for univariate, multivariate and timestamped data; memory stays
bounded for long inputs and no anomaly disappears in the downsampling."""

from __future__ import annotations

import numpy as np
import pandas as pd

from anomaly import service
from anomaly.plotting import PlotCollector, plot_detection
from anomaly.store import ModelStore


def _png(path) -> bool:
    return path.exists() and path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_univariate_plot(tmp_path):
    x = np.sin(np.arange(500) / 10)[:, None]
    scores = np.abs(np.random.default_rng(0).normal(size=500))
    scores[250] = 9
    labels = np.zeros(500)
    labels[245:255] = 1
    assert _png(plot_detection(tmp_path / "uni.png", x, ["value"], scores, 3.0, labels=labels))


def test_multivariate_plot_shows_top_contributors(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(800, 9))
    err = np.abs(rng.normal(size=(800, 9))) * 0.1
    err[400, 7] = 50  # feature 7 explains the anomaly
    scores = err.mean(1)
    pc = PlotCollector([f"f{i}" for i in range(9)], threshold=2.0)
    pc.add(0, X, scores, scores > 2.0, row_err=err)
    assert pc.top_features()[0] == 7 and len(pc.top_features()) == 4
    assert _png(pc.render(tmp_path / "multi.png"))


def test_timestamped_detect_plot(tmp_path, trained, dataset, capsys):
    from anomaly.cli import main as cli_main

    out = tmp_path / "detect.png"
    code = cli_main(["detect", "--data", str(dataset["test"]), "--model-dir", str(trained["root"]), "--version", "v1",
                     "--label-column", "label", "--plot", str(out)])
    assert code == 0 and f"Plot written to {out}" in capsys.readouterr().out
    assert _png(out)
    res = service.detect(str(dataset["test"]), version="v1", store=ModelStore(trained["root"]),
                         plot=str(tmp_path / "svc.png"))
    assert _png(tmp_path / "svc.png") and res["plot"] == str(tmp_path / "svc.png")


def test_long_series_is_downsampled_and_keeps_every_anomaly(tmp_path):
    n = 400_000
    rng = np.random.default_rng(2)
    X = rng.normal(size=(n, 2))
    scores = np.abs(rng.normal(size=n))
    anomalies = np.array([7, 123_457, 250_001, n - 1])
    scores[anomalies] = 100
    times = pd.date_range("2026-01-01", periods=n, freq="s").strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    pc = PlotCollector(["a", "b"], threshold=10.0, target=500, time_column="timestamp")
    for s in range(0, n, 65_536):  # streamed in blocks, as detection does
        e = min(n, s + 65_536)
        pc.add(s, X[s:e], scores[s:e], scores[s:e] > 10, times=times[s:e])
    buckets = len(pc.b["smin"])
    assert buckets <= 1000 and pc.size >= n // 1000  # bounded whatever the length
    assert pc.b["acount"].sum() == len(anomalies)  # every anomaly counted...
    flagged = np.flatnonzero(pc.b["acount"])
    assert sorted(flagged * pc.size // pc.size) == sorted(anomalies // pc.size)  # ...in its own bucket
    assert np.all(pc.b["amax"][flagged] == 100) and pc.b["max"][:, 0].max() == X[:, 0].max()
    assert _png(pc.render(tmp_path / "long.png", "long"))
