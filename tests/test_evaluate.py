"""`anomaly evaluate` end to end on a tiny generated suite, and `detect --label-column` metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly import service, synthetic
from anomaly.cli import main as cli_main
from anomaly.store import ModelStore


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Two series in the suite format: one with blatant spikes, one without any anomaly."""
    folder = tmp_path_factory.mktemp("suite")
    for name, n_anom, seed in (("spiky", 8, 1), ("clean", 0, 2)):
        train = synthetic.make_series(400, n_features=2, seed=seed).drop(columns=["timestamp"])
        test = synthetic.make_series(300, n_features=2, seed=seed + 10).drop(columns=["timestamp"])
        test = synthetic.inject(test, n_anomalies=n_anom, magnitude=8.0, seed=seed) if n_anom else test.assign(label=0)
        train.to_csv(folder / f"{name}.train.csv", index=False, float_format="%.5f")
        test.to_csv(folder / f"{name}.test.csv", index=False, float_format="%.5f")
    (folder / "README.md").write_text("not a series")
    return folder


def _evaluate(suite, tmp_path, *extra) -> dict:
    out = tmp_path / "report.json"
    code = cli_main(["evaluate", "--suite", str(suite), "--epochs", "3", "--json", str(out), "--quiet", *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_evaluate_reports_every_metric_for_detector_and_baselines(suite, tmp_path, capsys):
    # dense: the baselines keep their plain names (the default, pca, is the next test)
    report = _evaluate(suite, tmp_path, "--model-type", "dense", "--window", "4", "--plots", str(tmp_path / "plots"),
                       "--smooth")
    printed = capsys.readouterr().out
    result = report["suites"][suite.name]
    series = {r["series"]: r for r in result["series"]}
    assert set(series) == {"spiky", "clean"}
    spiky = series["spiky"]["detectors"]
    assert set(spiky) == {"dense w=4", "dense w=4 smoothed", "iforest w=4", "pca w=4", "zscore"}
    dense = spiky["dense w=4"]
    for key in ("roc_auc", "pr_auc", "vus_pr", "precision", "recall", "f1", "best_f1", "pa_f1", "pa_f1_random",
                "train_seconds", "score_seconds", "threshold"):
        assert key in dense, key
    assert dense["roc_auc"] > 0.9 and dense["vus_pr"] > 0.3  # blatant spikes are easy
    assert set(dense["f1_at"]) == {"percentile", "pot", "meanstd", "iqr", "dynamic"}
    assert spiky["zscore"]["roc_auc"] > 0.8 and "vus_pr" in spiky["iforest w=4"]
    assert spiky["dense w=4 smoothed"]["vus_pr"] != dense["vus_pr"]
    # a series without anomalies reports false alarms only
    clean = series["clean"]["detectors"]["dense w=4"]
    assert "false_positive_rate" in clean and "roc_auc" not in clean and "vus_pr" not in clean
    summary = result["summary"]["dense w=4"]
    assert summary["series_with_anomalies"] == 1 and summary["series_without"] == 1
    assert summary["vus_pr"] == pytest.approx(dense["vus_pr"])
    assert "false_positive_rate_clean" in summary
    assert "VUS-PR" in printed and "pca w=4" in printed
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert len(plots) == 2 and all((tmp_path / "plots" / p).stat().st_size > 10_000 for p in plots)


def test_evaluate_default_model_is_named_by_its_window_next_to_the_pca_baseline(suite, tmp_path, capsys):
    report = _evaluate(suite, tmp_path, "--series", "spiky")
    spiky = report["suites"][suite.name]["series"][0]["detectors"]
    # the default pca model and the PCA reconstruction baseline are both reported, under distinct names
    assert set(spiky) == {"pca w=auto", "iforest w=auto", "pca baseline w=auto", "zscore"}
    model = spiky["pca w=auto"]
    # Blatant spikes are easy, but a window's distance goes to every row of the window: a one-row spike raises
    # its whole window-wide neighbourhood, so point-wise ROC-AUC is ~0.72 here (window 1 is the point-wise
    # view; dense reconstructs each row and gets 1.0). VUS-PR, which credits the neighbourhood, is ~0.92.
    assert model["epochs_run"] == 1 and model["vus_pr"] > 0.8 and model["roc_auc"] > 0.65
    assert set(model["f1_at"]) == {"percentile", "pot", "meanstd", "iqr", "dynamic"}
    # compared thresholds are calibrated as training calibrates (out of fold): the same percentile threshold
    assert model["f1_at"]["percentile"]["threshold"] == pytest.approx(model["threshold"], rel=1e-5)
    assert "pca baseline w=auto" in capsys.readouterr().out


def test_evaluate_is_reproducible_with_a_seed(suite, tmp_path):
    args = ("--series", "spiky", "--model-type", "dense,pca", "--window", "1", "--baselines", "iforest",
            "--seed", "3")
    a = _evaluate(suite, tmp_path, *args)["suites"][suite.name]["series"][0]["detectors"]
    b = _evaluate(suite, tmp_path, *args)["suites"][suite.name]["series"][0]["detectors"]
    for key in ("dense w=1", "pca w=1", "iforest w=1"):
        for m in ("roc_auc", "vus_pr", "f1", "threshold"):
            assert a[key][m] == b[key][m], (key, m)


def test_evaluate_bad_suite_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["evaluate", "--suite", str(tmp_path / "nope")]) == 2
    assert "suite folder not found" in capsys.readouterr().err
    assert cli_main(["evaluate", "--suite", str(tmp_path)]) == 2
    assert "no <series>.train.csv" in capsys.readouterr().err


def test_detect_label_column_prints_the_same_metrics(trained, dataset):
    res = service.detect(str(dataset["test"]), version="v1", store=ModelStore(trained["root"]), label_column="label")
    m = res["metrics"]
    for key in ("precision", "recall", "f1", "roc_auc", "pr_auc", "vus_pr", "best_f1", "pa_f1", "pa_f1_random"):
        assert key in m, key
    assert m["roc_auc"] > 0.95 and m["best_f1"] >= m["f1"]
    # the same numbers the evaluation computes from the same scores
    from anomaly import metrics
    det = service.load_detector(ModelStore(trained["root"]).paths("v1"))
    X = dataset["test_frame"][dataset["features"]].to_numpy(np.float32)
    labels = dataset["test_frame"]["label"].to_numpy()
    from anomaly.service.pipeline import Thresholder
    scores = det.decision_function(X)
    ref = metrics.threshold_report(labels, scores, Thresholder(det, None)(scores, None),
                                   max_buffer=metrics.max_buffer_for(X[:, 0]))
    assert m["vus_pr"] == pytest.approx(ref["vus_pr"], abs=1e-6) and m["f1"] == pytest.approx(ref["f1"])
