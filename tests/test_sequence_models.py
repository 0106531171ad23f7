"""Sequence models (lstm, transformer, vae) and windowed PCA: detection of injected anomalies, per-row alignment, save/load,
reproducibility, `--window auto`, the CLI end to end and the live stream."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomaly import models, period, service
from anomaly.detector import Detector
from anomaly.errors import DataError
from anomaly.store import ArtifactPaths, ModelStore

SEQUENCE_MODELS = ["lstm", "transformer", "vae", "pca"]
PERIOD, WINDOW = 20, 20
# smooth=1: these tests check the models' own per-row errors, not the detector's optional score smoothing
# (an option a model does not take is ignored, so this is harmless where the detector has no smoothing).
SMALL = dict(epochs=10, hidden=[16], layers=1, seed=0, batch_size=32, smooth=1)
KINDS = {1: "level shift", 2: "spike", 3: "changed frequency"}


def sines(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([np.sin(2 * np.pi * t / PERIOD + 1.3 * j) + 0.05 * rng.normal(size=n) for j in range(2)],
                    axis=1).astype(np.float32)


def with_anomalies(n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A test series and the kind of anomaly per row (0 = normal, see KINDS)."""
    X, kind = sines(n, seed), np.zeros(n, int)
    X[100:120, 0] += 2.0
    kind[100:120] = 1
    X[300, 1] += 3.0
    kind[300] = 2
    t = np.arange(450, 490)
    X[450:490, 0] = np.sin(2 * np.pi * t / (PERIOD / 2.5))
    kind[450:490] = 3
    return X, kind


@pytest.fixture(scope="module", params=SEQUENCE_MODELS)
def fitted(request) -> Detector:
    return Detector(model_type=request.param, window=WINDOW, **SMALL).fit(sines(1200, 0))


def test_each_model_ranks_each_injected_anomaly_above_normal_rows(fitted):
    X, kind = with_anomalies()
    scores = fitted.decision_function(X)
    for k, name in KINDS.items():
        rows = np.isfinite(scores) & ((kind == 0) | (kind == k))
        auc = roc_auc_score(kind[rows] == k, scores[rows])
        assert auc > 0.9, f"{fitted.model_type}: {name} ROC-AUC {auc:.3f}"
    assert np.nanargmax(scores) in np.flatnonzero(kind), "the top-scored row is not an anomaly"


def test_one_score_per_row_and_nan_only_for_missing_history(fitted):
    X, _ = with_anomalies()
    scores = fitted.decision_function(X)
    assert scores.shape == (len(X),)
    unscored = np.flatnonzero(~np.isfinite(scores))
    if fitted.model_type == "lstm":  # a forecaster has no forecast for the first `window` rows
        assert unscored.tolist() == list(range(WINDOW))
        assert fitted.predict(X)[:WINDOW].sum() == 0  # unscored rows are never anomalies
    else:
        assert len(unscored) == 0
    errors = fitted.row_errors(X)
    assert errors.shape == X.shape and (errors[np.isfinite(errors)] >= 0).all()


def test_chunked_streaming_gives_the_same_scores(fitted):
    X, _ = with_anomalies()
    whole = fitted.decision_function(X)
    stream = fitted.stream(batch_size=50)  # small batches and uneven chunks: windows straddle the boundaries
    parts = [stream.push(X[a:b])[1] for a, b in [(0, 5), (5, 33), (33, 34), (34, 400), (400, 600)]]
    streamed = np.concatenate([*parts, stream.finish()[1]])
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_gives_identical_scores(fitted, tmp_path):
    X, _ = with_anomalies()
    paths = ArtifactPaths.in_folder(tmp_path)
    fitted.save(paths)
    loaded = Detector.load(paths)
    np.testing.assert_array_equal(loaded.decision_function(X), fitted.decision_function(X))
    assert loaded.threshold_ == fitted.threshold_
    config = json.loads(paths.config.read_text())
    assert config["model_type"] == fitted.model_type and config["window"] == WINDOW


@pytest.mark.parametrize("model_type", SEQUENCE_MODELS)
def test_same_seed_same_weights_and_window_one_is_valid(model_type):
    X = sines(300, 0)
    a = Detector(model_type=model_type, window=1, **(SMALL | {"epochs": 2})).fit(X)
    b = Detector(model_type=model_type, window=1, **(SMALL | {"epochs": 2})).fit(X)
    for (name, wa), wb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(wa, wb), name
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)
    expected_nan = 1 if model_type == "lstm" else 0
    assert np.isnan(a.decision_scores_).sum() == expected_nan


def test_vae_scores_are_deterministic_and_use_the_configured_samples():
    X = sines(300, 0)
    det = Detector(model_type="vae", window=1, epochs=2, seed=0, samples=3).fit(X)
    assert det.model_.scoring_eps.shape == (3, det.model_config_.encoding_dim)
    np.testing.assert_array_equal(det.decision_function(X), det.decision_function(X))


def test_model_options_map_to_each_model_and_bad_ones_are_user_errors():
    lstm = models.make_config("lstm", 3, 10, {"hidden": [24], "layers": 3, "error": "mae", "heads": 2})
    assert (lstm.hidden, lstm.layers, lstm.error) == (24, 3, "mae")
    tr = models.make_config("transformer", 3, 10, {"hidden": [15, 40], "heads": 4, "encoding_dim": 2})
    assert (tr.d_model, tr.ff_width, tr.heads) == (16, 40, 4)  # d_model rounded up to a multiple of heads
    assert models.build("transformer", vars(tr)).config == tr  # the saved config rebuilds the same model
    vae = models.make_config("vae", 3, 2, {"samples": 4, "encoding_dim": 2, "error": "mae"})
    assert (vae.samples, vae.encoding_dim) == (4, 2)
    with pytest.raises(DataError, match="mse or mae"):
        models.make_config("lstm", 3, 10, {"error": "huber"})
    with pytest.raises(DataError, match="samples"):
        models.make_config("vae", 3, 1, {"samples": 0})


# --- window auto -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("true_period", [12, 37, 90])
def test_auto_window_finds_the_period_of_a_sine(true_period):
    rng = np.random.default_rng(0)
    t = np.arange(3000)
    X = np.stack([np.sin(2 * np.pi * t / true_period) + 0.2 * rng.normal(size=len(t)),
                  np.cos(2 * np.pi * t / true_period) + 0.2 * rng.normal(size=len(t)), np.ones(len(t))], axis=1)
    assert abs(period.auto_window(X) - true_period) <= 1


def test_auto_window_is_bounded_and_falls_back_without_a_period():
    rng = np.random.default_rng(0)
    assert period.dominant_period(rng.normal(size=(2000, 2))) is None
    assert period.auto_window(rng.normal(size=(2000, 2))) == period.FALLBACK_WINDOW
    t = np.arange(5000)
    assert period.auto_window(np.sin(2 * np.pi * t / 400)[:, None]) == period.MAX_WINDOW
    assert period.auto_window(np.sin(2 * np.pi * t / 3)[:, None]) == period.MIN_WINDOW


def test_window_auto_is_recorded_in_the_model_config(tmp_path):
    X = sines(800, 0)
    det = Detector(model_type="lstm", window="auto", **(SMALL | {"epochs": 1})).fit(X)
    assert det.window_ == PERIOD and det.model_.span == PERIOD + 1
    paths = ArtifactPaths.in_folder(tmp_path)
    det.save(paths)
    config = json.loads(paths.config.read_text())
    assert config["window"] == PERIOD and config["window_auto"] is True and config["model"]["window"] == PERIOD
    assert Detector.load(paths).window_ == PERIOD


# --- command line and live stream --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("seqdata")
    train = pd.DataFrame(sines(800, 0), columns=["a", "b"])
    X, kind = with_anomalies()
    test = pd.DataFrame(X, columns=["a", "b"]).assign(label=(kind > 0).astype(int))
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    return {"train": folder / "train.csv", "test": folder / "test.csv", "labels": kind > 0, "X": X}


@pytest.mark.parametrize("model_type", SEQUENCE_MODELS)
def test_cli_trains_and_detects_with_each_sequence_model(model_type, csv_files, tmp_path, cli):
    store = tmp_path / "models"
    proc = cli("train.py", "--data", csv_files["train"], "--model-dir", store, "--model-type", model_type,
               "--window", "auto", "--epochs", "3", "--hidden", "16", "--layers", "1", "--samples", "2",
               "--error", "mae", "--heads", "2", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    trained = json.loads(proc.stdout)
    assert trained["model_type"] == model_type and trained["window"] == PERIOD
    config = json.loads((store / trained["version"] / "model_config.json").read_text())
    assert config["model_type"] == model_type and config["window_auto"] is True
    out = tmp_path / "scores.csv"
    if model_type == "lstm":  # the detect CLI once; the same service call in-process for the others (faster)
        proc = cli("detect.py", "--data", csv_files["test"], "--model-dir", store, "--output", out, "--json")
        assert proc.returncode == 0, proc.stderr
    else:
        service.detect(str(csv_files["test"]), store=ModelStore(store), output=str(out))
    rows = pd.read_csv(out)
    assert len(rows) == len(csv_files["X"])  # one row out per row in
    scores = rows["reconstruction_error"].to_numpy()
    assert np.isnan(scores).sum() == (PERIOD if model_type == "lstm" else 0)
    ok = np.isfinite(scores)
    assert roc_auc_score(csv_files["labels"][ok], scores[ok]) > 0.7


def test_live_stream_scores_points_one_by_one_with_a_window_model(csv_files, tmp_path):
    store = ModelStore(tmp_path / "models")
    service.train(str(csv_files["train"]), version="live", store=store, model_type="lstm", window=WINDOW,
                  **(SMALL | {"epochs": 5}))
    live = service.LiveScorer("live", store)
    X = csv_files["X"]
    out = [live.push([list(map(float, row))])[0] for row in X[:WINDOW + 5]]  # one point at a time at first
    for start in range(WINDOW + 5, 320, 59):  # then a few points at a time, as a stream's messages may carry
        out += live.push(X[start:min(start + 59, 320)].tolist())
    assert [o["reconstruction_error"] is None for o in out] == [i < WINDOW for i in range(320)]
    assert not any(o["is_anomaly"] for o in out[:WINDOW])
    # A forecaster scores each row from exactly one window, so live scores equal batch scores.
    batch = Detector.load(ArtifactPaths.in_folder(store.root / "live")).decision_function(X[:320])
    live_scores = np.array([np.nan if o["reconstruction_error"] is None else o["reconstruction_error"] for o in out])
    np.testing.assert_allclose(live_scores, batch, rtol=1e-4, equal_nan=True)
    assert out[300]["is_anomaly"] and out[300]["reconstruction_error"] == max(live_scores[WINDOW:])
