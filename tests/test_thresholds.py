"""Threshold methods on known distributions, label-based thresholds at training, and re-thresholding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from anomaly import service, thresholds
from anomaly.cli import main as cli_main
from anomaly.errors import DataError
from anomaly.store import ModelStore


def test_registry_holds_every_method():
    assert {"percentile", "meanstd", "iqr", "pot", "best-f1", "midpoint"} <= set(thresholds.METHODS)
    assert thresholds.NEEDS_LABELS == {"best-f1", "midpoint"}


def test_label_free_methods_on_a_normal_distribution():
    x = np.random.default_rng(0).normal(size=200_000)
    assert thresholds.percentile(x, percentile=97.5) == pytest.approx(1.96, abs=0.03)
    assert thresholds.meanstd(x, k=3) == pytest.approx(3.0, abs=0.03)
    assert thresholds.iqr(x) == pytest.approx(0.6745 + 1.5 * 1.349, abs=0.03)


@pytest.mark.parametrize("name, dist", [("exponential", stats.expon()), ("half-normal", stats.halfnorm()),
                                        ("lomax", stats.lomax(4))])
@pytest.mark.parametrize("risk", [1e-3, 1e-4])
def test_pot_recovers_a_known_tail_quantile(name, dist, risk):
    x = dist.rvs(size=100_000, random_state=np.random.default_rng(1))
    true = dist.ppf(1 - risk)
    # risk 1e-4 leaves ~10 rows above the answer: the fitted tail must carry it. A heavy (Pareto-like) tail is
    # harder to pin down from 2,000 excesses, hence the wider tolerance there.
    tolerance = 0.15 if name == "lomax" and risk < 1e-3 else 0.08
    assert thresholds.pot(x, risk=risk) == pytest.approx(true, rel=tolerance)


def test_pot_extrapolates_beyond_the_data():
    x = stats.expon().rvs(size=2000, random_state=np.random.default_rng(2))
    thr = thresholds.pot(x, risk=1e-5)  # 1 in 100,000: beyond the largest of 2,000 rows
    assert thr > x.max()
    assert thr == pytest.approx(np.log(1e5), rel=0.2)


def test_pot_rejects_bad_risk():
    with pytest.raises(DataError, match="risk"):
        thresholds.pot(np.arange(100.0), risk=2)


def test_best_f1_and_midpoint_on_labelled_scores():
    rng = np.random.default_rng(3)
    normal, anomalous = rng.normal(0, 1, 5000), rng.normal(8, 1, 100)
    scores = np.r_[normal, anomalous]
    labels = np.r_[np.zeros(5000), np.ones(100)]
    best = thresholds.compute("best-f1", scores, labels)["threshold"]
    assert 2.5 < best < 6.5  # between the two well-separated groups
    mid = thresholds.compute("midpoint", scores, labels)["threshold"]
    assert mid == pytest.approx(4.0, abs=0.2)  # halfway between the medians 0 and 8
    with pytest.raises(DataError, match="needs labelled data"):
        thresholds.compute("best-f1", scores, None)


def test_training_with_best_f1_uses_the_label_column(tmp_path, dataset):
    # Training data with a few labelled spikes: best-f1 sets the threshold between them and the normal rows.
    train = dataset["test_frame"]
    path = tmp_path / "labelled.csv"
    train.to_csv(path, index=False)
    res = service.train(str(path), store=ModelStore(tmp_path / "m"), epochs=3, batch_size=64, window=1,
                        threshold_method="best-f1")  # one-row spikes: the row-wise model
    assert res["threshold_method"] == "best-f1"
    det = service.load_detector(ModelStore(tmp_path / "m").paths(res["version"]))
    flags = det.predict(train[dataset["features"]].to_numpy(np.float32))
    labels = train["label"].to_numpy()
    assert (flags[labels == 1] == 1).mean() > 0.8 and flags[labels == 0].mean() < 0.01


def test_training_with_a_labels_file(tmp_path, dataset, capsys):
    frame = dataset["test_frame"]
    data = tmp_path / "unlabelled.csv"
    frame.drop(columns=["label"]).to_csv(data, index=False)
    labels = tmp_path / "labels.csv"
    frame[["label"]].to_csv(labels, index=False)
    code = cli_main(["train", "--data", str(data), "--model-dir", str(tmp_path / "m"), "--epochs", "2", "--quiet",
                     "--threshold-method", "midpoint", "--labels", str(labels), "--json"])
    assert code == 0
    import json
    assert json.loads(capsys.readouterr().out)["threshold_method"] == "midpoint"
    short = tmp_path / "short.csv"
    frame[["label"]].iloc[:10].to_csv(short, index=False)
    code = cli_main(["train", "--data", str(data), "--model-dir", str(tmp_path / "m"), "--epochs", "1", "--quiet",
                     "--threshold-method", "best-f1", "--labels", str(short)])
    assert code == 2 and "must match row for row" in capsys.readouterr().err


def test_train_risk_option_reaches_pot(tmp_path, dataset, capsys):
    code = cli_main(["train", "--data", str(dataset["train"]), "--model-dir", str(tmp_path / "m"), "--epochs", "2",
                     "--quiet", "--threshold-method", "pot", "--risk", "0.01", "--json"])
    assert code == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert out["threshold_params"] == {"risk": 0.01}


def test_rethreshold_writes_a_new_version_with_the_same_weights(trained, copy_store, cli, dataset):
    root = copy_store(trained)
    before = (root / "v1" / "threshold.json").read_text()
    proc = cli("anomaly", "threshold", "v1", "--method", "pot", "--risk", "1e-4", "--model-dir", root,
               "--new-version", "v1-pot", "--json")
    assert proc.returncode == 0, proc.stderr
    import json
    out = json.loads(proc.stdout)
    assert out["version"] == "v1-pot" and out["threshold_method"] == "pot"
    assert (root / "v1" / "threshold.json").read_text() == before  # the old version is untouched
    assert (root / "v1-pot" / "model.pth").read_bytes() == (root / "v1" / "model.pth").read_bytes()
    new = json.loads((root / "v1-pot" / "threshold.json").read_text())
    assert new["method"] == "pot" and new["params"] == {"risk": 0.0001} and new["threshold"] == out["threshold"]
    assert new["derived_from"]["version"] == "v1"
    info = service.model_info("v1-pot", ModelStore(root))
    assert info["threshold"] == pytest.approx(out["threshold"]) and info["features"] == dataset["features"]
    # label-based methods need labels (in-process from here on: a subprocess per call is slow on 2 cores)
    assert cli_main(["threshold", "v1", "--method", "best-f1", "--model-dir", str(root)]) == 2
    assert cli_main(["threshold", "v1", "--method", "best-f1", "--model-dir", str(root), "--data",
                     str(dataset["test"]), "--new-version", "v1-f1"]) == 0
    res = service.detect(str(dataset["test"]), version="v1-f1", store=ModelStore(root), label_column="label")
    assert res["metrics"]["f1"] == pytest.approx(res["metrics"]["best_f1"], abs=1e-9)
