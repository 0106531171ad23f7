"""Scaler and threshold math, the Detector (fit / score_samples / predict / save / load), reproducibility,
window mode, per-feature attribution and chunked detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly import scoring, service, thresholds
from anomaly.detector import Detector, flag
from anomaly.errors import DataError
from anomaly.store import ArtifactPaths

# --- threshold math ------------------------------------------------------------------------------------


def test_percentile_threshold():
    scores = np.arange(101, dtype=np.float64)  # 0..100: the p-th percentile is p
    assert thresholds.percentile(scores, percentile=95) == pytest.approx(95.0)
    assert thresholds.percentile(scores, percentile=99.5) == pytest.approx(99.5)
    with pytest.raises(DataError):
        thresholds.percentile(scores, percentile=100)


def test_meanstd_threshold():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, population std sqrt(2)
    assert thresholds.meanstd(scores) == pytest.approx(3 + 3 * np.sqrt(2))
    assert thresholds.meanstd(scores, k=1) == pytest.approx(3 + np.sqrt(2))


def test_iqr_threshold():
    scores = np.arange(1, 10, dtype=np.float64)  # Q1 = 3, Q3 = 7
    assert thresholds.iqr(scores) == pytest.approx(7 + 1.5 * 4)
    assert thresholds.iqr(scores, k=3) == pytest.approx(7 + 3 * 4)


def test_compute_ignores_unscored_rows_and_keeps_statistics():
    scores = np.array([np.nan, np.nan, *range(101)], dtype=np.float64)
    info = thresholds.compute("percentile", scores, percentile=90)
    assert info["threshold"] == pytest.approx(90.0)
    assert info["method"] == "percentile" and info["params"] == {"percentile": 90}
    stats = info["stats"]
    assert stats["count"] == 101 and stats["min"] == 0 and stats["max"] == 100
    assert stats["mean"] == pytest.approx(50) and stats["p95"] == pytest.approx(95)
    with pytest.raises(DataError, match="unknown threshold method"):
        thresholds.compute("magic", scores)
    with pytest.raises(DataError, match="no scored rows"):
        thresholds.compute("percentile", np.array([np.nan]))


def test_flag_is_strictly_above_and_never_for_unscored():
    assert flag(np.array([0.5, 1.0, 1.5, np.nan]), 1.0).tolist() == [0, 0, 1, 0]


# --- scalers and the detector ----------------------------------------------------------------------------


def _series(n=400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = np.stack([np.sin(t / 8), np.cos(t / 8), np.sin(t / 8 + 1)], axis=1)
    return (base * [1, 2, 3] + [0, 10, -5] + 0.05 * rng.normal(size=(n, 3))).astype(np.float32)


@pytest.fixture(scope="module")
def X():
    return _series()


def _fit(X, **kwargs):
    options = dict(epochs=5, batch_size=64, seed=0, window=1) | kwargs  # row-wise unless a test asks
    return Detector(**options).fit(X, ["a", "b", "c"])


@pytest.mark.parametrize("name", ["standard", "minmax", "robust"])
def test_scaler_is_fitted_on_training_data_only(X, name):
    det = _fit(X, scaler=name, epochs=1)
    assert type(det.scaler_).__name__.lower().startswith(name)
    Z = det.transform(X)
    if name == "standard":
        np.testing.assert_allclose(Z.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(Z.std(0), 1, atol=1e-4)
    elif name == "minmax":
        np.testing.assert_allclose(Z.min(0), 0, atol=1e-6)
        np.testing.assert_allclose(Z.max(0), 1, atol=1e-6)
    else:
        np.testing.assert_allclose(np.median(Z, 0), 0, atol=1e-5)
        q1, q3 = np.percentile(Z, [25, 75], axis=0)
        np.testing.assert_allclose(q3 - q1, 1, atol=1e-4)
    shifted = X + 100  # new data is transformed with the training statistics, not refitted
    assert np.abs(det.transform(shifted).mean(0)).min() > 1


def test_unknown_scaler(X):
    with pytest.raises(DataError, match="scaler"):
        _fit(X, scaler="zscore", epochs=1)


def test_fit_sets_pyod_attributes_and_threshold_from_every_training_row(X):
    # a neural model: its calibration scores are its in-sample scores (pca's are out-of-fold: the test below)
    det = _fit(X, model_type="dense", threshold_params={"percentile": 90})
    assert det.decision_scores_.shape == (len(X),)
    expected = np.percentile(det.decision_scores_.astype(np.float64), 90)
    assert det.threshold_source_ == "training"
    assert det.threshold_info_["calibration"]["rows"] == len(X)
    assert det.threshold_info_["expected_rate"] == pytest.approx(0.10, abs=0.01)
    assert det.threshold_ == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(det.decision_function(X), det.decision_scores_, rtol=1e-5)
    # predict is score > threshold
    np.testing.assert_array_equal(det.predict(X), (det.decision_function(X) > det.threshold_).astype(np.int8))


def test_closed_form_calibration_is_out_of_fold_and_sets_the_threshold(X):
    det = _fit(X, model_type="pca", window=8, threshold_params={"percentile": 90})  # the default model type
    assert det.history_["epochs_run"] == 1 and det.history_["closed_form"]
    assert det.decision_scores_.shape == (len(X),) and np.isfinite(det.decision_scores_).all()
    calibration = det.threshold_info_["calibration"]
    assert calibration["errors"] == "out-of-fold (5 blocks)"
    assert calibration["rows"] == calibration["held_out_rows"] == len(X) and calibration["fitted_rows"] == 0
    assert det.threshold_ == pytest.approx(np.percentile(det.decision_scores_.astype(np.float64), 90), rel=1e-6)
    in_sample = det.decision_function(X)
    # each block scored by a fit without it: not the in-sample scores, and larger on the whole
    assert not np.allclose(in_sample, det.decision_scores_, rtol=1e-5)
    assert np.mean(det.decision_scores_) > np.mean(in_sample)
    np.testing.assert_array_equal(det.predict(X), (in_sample > det.threshold_).astype(np.int8))


def test_score_is_mean_squared_error_in_scaled_space(X):
    det = _fit(X, model_type="dense", epochs=2)
    Z = torch.from_numpy(det.transform(X[:50]))
    with torch.no_grad():
        recon = det.model_(Z.unsqueeze(1)).squeeze(1)
    expected = ((recon - Z) ** 2).mean(1).numpy()
    np.testing.assert_allclose(det.decision_function(X[:50]), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method,params", [("meanstd", {"k": 2.0}), ("iqr", {"k": 1.5})])
def test_other_threshold_methods_on_the_calibration_scores(X, method, params):
    det = _fit(X, threshold_method=method, threshold_params=params, validation_split=0.0)
    assert det.threshold_source_ == "training"
    expected = thresholds.METHODS[method](det.decision_scores_.astype(np.float64), **params)
    assert det.threshold_ == pytest.approx(expected, rel=1e-6)


def test_encoding_dim_and_hidden_shape_the_network(X):
    det = _fit(X, model_type="dense", epochs=1, encoding_dim=2, hidden=[12, 6])
    linears = [m for m in det.model_.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 12), (12, 6), (6, 2), (2, 6), (6, 12), (12, 3)]


def test_same_seed_same_weights_different_seed_different(X):
    a, b, c = (_fit(X, model_type="dense", seed=s) for s in (7, 7, 8))  # trained weights: a neural model
    for (name, wa), wb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert any(not torch.equal(wa, wc) for wa, wc in zip(a.model_.state_dict().values(), c.model_.state_dict().values()))
    assert a.threshold_ == b.threshold_


def test_save_load_round_trip_gives_identical_scores(tmp_path, X):
    det = _fit(X, scaler="robust", window=3)
    paths = ArtifactPaths.in_folder(tmp_path)
    det.save(paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "model_config.json", "scaler.pkl", "threshold.json"]
    loaded = Detector.load(paths)
    X_new = _series(120, seed=3)
    np.testing.assert_array_equal(loaded.decision_function(X_new), det.decision_function(X_new))
    assert loaded.threshold_ == det.threshold_ and loaded.window_ == 3
    assert loaded.feature_names_ == ["a", "b", "c"]
    # weights-only file: a plain state dict of tensors
    state = torch.load(paths.model, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_training_needs_finite_data_and_enough_rows(X):
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="finite"):
        _fit(bad)
    with pytest.raises(DataError, match="at least"):
        _fit(X[:4], window=5)
    with pytest.raises(DataError, match="epochs"):
        _fit(X, epochs=0)


# --- window mode: one score per row ----------------------------------------------------------------------


def test_window_every_row_gets_exactly_one_score(X):
    det = _fit(X, window=5, epochs=3, smooth=1)  # the overlap mean alone, without score smoothing
    scores = det.decision_function(X[:37])
    assert scores.shape == (37,) and np.isfinite(scores).all()
    # a row's score is the mean of its errors over all windows that contain it
    Z = torch.from_numpy(det.transform(X[:37]))
    starts = torch.arange(37 - 5 + 1)
    with torch.no_grad():
        err = det.model_.errors(scoring.gather(Z, starts, 5)).mean(2).numpy()  # (windows, 5)
    if getattr(det.model_, "uniform_rows", False):  # (windows, 1): the same error on each row of a window
        err = np.broadcast_to(err, (len(err), 5))
    row = 10
    contributions = [err[s, row - s] for s in range(row - 4, row + 1)]
    assert scores[row] == pytest.approx(np.mean(contributions), rel=1e-5)
    first = [err[0, 0]]  # row 0 sits only in the first window
    assert scores[0] == pytest.approx(first[0], rel=1e-5)


@pytest.mark.parametrize("window", [1, 4])
def test_row_scorer_in_chunks_equals_one_pass(X, window):
    det = _fit(X, window=window, epochs=2)
    Z = det.transform(X)
    whole = scoring.row_errors(det.model_, Z)
    scorer = scoring.RowScorer(det.model_, Z.shape[1], batch_size=7)
    parts = [scorer.push(Z[i:i + size]) for i, size in zip([0, 1, 3, 10, 50], [1, 2, 7, 40, 350])]
    parts.append(scorer.finish())
    chunked = np.concatenate(parts)
    assert chunked.shape == whole.shape == (400, 3)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)


# --- per-feature attribution -----------------------------------------------------------------------------


def test_per_feature_attribution_points_at_the_perturbed_column(trained, dataset, tmp_path):
    frame = dataset["train_frame"].iloc[:300].copy()
    rows = [50, 120, 210]
    for r, col in zip(rows, ["sensor_2", "sensor_0", "sensor_3"]):
        frame.loc[r, col] += 8.0
    f = tmp_path / "perturbed.csv"
    frame.to_csv(f, index=False, float_format="%.5f")
    out = tmp_path / "out.csv"
    result = service.detect(str(f), version="v1", store=trained["store"], output=str(out), per_feature=True)
    flagged = {a["index"]: a for a in result["top_anomalies"]}
    for r, col in zip(rows, ["sensor_2", "sensor_0", "sensor_3"]):
        assert r in flagged, f"row {r} not flagged"
        assert flagged[r]["top_features"][0]["feature"] == col
        assert flagged[r]["top_features"][0]["share"] > 0.5
    table = pd.read_csv(out)
    shares = table[[f"sensor_{j}_contribution" for j in range(4)]]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-4)
    assert table.loc[120, "sensor_0_contribution"] == shares.loc[120].max()


# --- chunked detection equals one-block detection -----------------------------------------------------


def _gappy_copy(dataset, tmp_path, n=500):
    frame = dataset["test_frame"].iloc[:n].copy()
    # Gaps at both edges, short inner runs, and long runs that span several blocks.
    frame.loc[[0, 1, 77, 78, 79, 250, n - 1], "sensor_1"] = np.nan
    frame.loc[100:160, "sensor_1"] = np.nan
    frame.loc[480:, "sensor_2"] = np.nan
    frame.loc[[130, 131], "sensor_3"] = np.inf
    f = tmp_path / "gappy.csv"
    frame.to_csv(f, index=False, float_format="%.5f")
    return f


@pytest.mark.parametrize("which", ["trained", "trained_window"])
@pytest.mark.parametrize("missing", ["interpolate", "drop"])
def test_chunked_detection_equals_one_block(request, dataset, tmp_path, which, missing):
    fixture = request.getfixturevalue(which)
    f = _gappy_copy(dataset, tmp_path)
    kwargs = dict(version=fixture["version"], store=fixture["store"], missing=missing, max_results=None)
    out_one, out_many = tmp_path / "one.csv", tmp_path / "many.csv"
    one = service.detect(str(f), output=str(out_one), **kwargs)
    many = service.detect(str(f), output=str(out_many), block_bytes=1500, **kwargs)
    assert one["total_rows"] == many["total_rows"] == 500
    a, b = pd.read_csv(out_one), pd.read_csv(out_many)
    assert len(a) == len(b) == 500
    np.testing.assert_allclose(a["reconstruction_error"], b["reconstruction_error"], rtol=1e-4, equal_nan=True)
    assert (a["is_anomaly"] == b["is_anomaly"]).all()
    assert one["anomaly_count"] == many["anomaly_count"]
    assert one["missing"] == many["missing"]
    # the two inf cells are values (the strongest anomalies), not gaps: neither filled nor dropped (their rows
    # lie inside the sensor_1 gap, so "drop" drops them for that)
    if missing == "drop":  # dropped rows keep their line, without a score
        assert one["missing"]["rows_dropped"] == 87
        assert a["reconstruction_error"].isna().sum() == 87
    else:
        assert one["missing"]["values_filled"] == 88
        assert a["reconstruction_error"].notna().all()
        assert a["is_anomaly"][[130, 131]].all()


def test_chunked_detection_matches_the_in_memory_detector(trained_window, dataset, tmp_path):
    f = tmp_path / "clean.csv"
    dataset["test_frame"].iloc[:300].to_csv(f, index=False, float_format="%.5f")
    det = Detector.load(ArtifactPaths.in_folder(trained_window["dir"]))
    # float64, as detection reads files: float32 rounding of the input is not what this compares (next to a
    # spike, pca's split of a window ramps over a narrow band and can move a score by 1e-4 of it)
    X = pd.read_csv(f)[det.feature_names_].to_numpy(np.float64)
    result = service.detect(str(f), version="w5", store=trained_window["store"], block_bytes=700, max_results=None)
    by_index = {r["index"]: r["reconstruction_error"] for r in result["results"]}
    assert sorted(by_index) == list(range(300))
    np.testing.assert_allclose([by_index[i] for i in range(300)], det.decision_function(X), rtol=1e-4)


def test_missing_error_names_the_row_in_the_file(trained, dataset, tmp_path):
    frame = dataset["test_frame"].copy()
    frame.loc[900, "sensor_2"] = np.nan
    f = tmp_path / "late_gap.csv"
    frame.to_csv(f, index=False)
    with pytest.raises(DataError, match=r"sensor_2: 1; first at row 900\)"):
        service.detect(str(f), version="v1", store=trained["store"], missing="error", block_bytes=2048)


def test_detection_matches_columns_by_name_or_position(trained, dataset, tmp_path):
    """Columns in another order, extra columns, or a headerless file with just the features: same scores."""
    frame = dataset["test_frame"].iloc[:150]
    feats = trained["result"]["features"]
    files = {"same": tmp_path / "a.csv", "shuffled": tmp_path / "b.csv", "headerless": tmp_path / "c.txt"}
    frame.to_csv(files["same"], index=False)
    frame[["label", "sensor_3", "timestamp", "sensor_1", "sensor_0", "sensor_2"]].assign(extra=1.5).to_csv(
        files["shuffled"], index=False)
    frame[feats].to_csv(files["headerless"], index=False, header=False, sep=" ")
    scores = {}
    for name, f in files.items():
        result = service.detect(str(f), version="v1", store=trained["store"], max_results=None)
        scores[name] = [r["reconstruction_error"] for r in sorted(result["results"], key=lambda r: r["index"])]
    np.testing.assert_array_equal(scores["same"], scores["shuffled"])
    np.testing.assert_array_equal(scores["same"], scores["headerless"])
