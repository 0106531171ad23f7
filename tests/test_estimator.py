"""`anomaly.Detector` as a scikit-learn estimator with PyOD's score conventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from anomaly import Detector
from anomaly.errors import DataError

SMALL = {"window": 1, "epochs": 3, "batch_size": 64, "seed": 0}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    t = np.arange(600)
    return pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=600, freq="min").astype(str),
                         "cpu": np.sin(t / 10) + 0.05 * rng.normal(size=600),
                         "mem": np.cos(t / 10) + 0.05 * rng.normal(size=600),
                         "host": "a"})


@pytest.fixture(scope="module")
def fitted(frame) -> Detector:
    return Detector(**SMALL).fit(frame)


def test_get_params_set_params_and_clone():
    det = Detector(window=4, epochs=7, hidden=[8, 4], threshold_params={"percentile": 90})
    params = det.get_params()
    assert params["window"] == 4 and params["epochs"] == 7 and params["hidden"] == [8, 4]
    assert params["threshold_params"] == {"percentile": 90} and params["encoding_dim"] is None
    copy = clone(det)
    assert copy is not det and copy.get_params() == params
    assert det.set_params(epochs=3) is det and det.epochs == 3
    with pytest.raises(ValueError):
        det.set_params(epoch=3)  # scikit-learn refuses unknown parameters too
    assert "window=4" in repr(det)


def test_usable_in_a_pipeline(frame):
    X = frame[["cpu", "mem"]].to_numpy()
    pipe = Pipeline([("scale", StandardScaler()), ("detector", Detector(**SMALL))]).fit(X)
    assert pipe.predict(X).shape == (len(X),) and set(np.unique(pipe.predict(X))) <= {0, 1}
    assert np.isfinite(pipe.decision_function(X)).all()
    assert clone(pipe).get_params()["detector__window"] == 1


def test_dataframe_with_a_timestamp_and_text_column(fitted, frame):
    assert list(fitted.feature_names_in_) == ["cpu", "mem"] and fitted.n_features_in_ == 2
    scores = fitted.decision_function(frame)
    np.testing.assert_allclose(scores, fitted.decision_function(frame[["cpu", "mem"]].to_numpy()))


def test_reordered_columns_are_matched_by_name_and_missing_ones_refused(fitted, frame):
    reordered = frame[["mem", "host", "cpu", "timestamp"]]
    np.testing.assert_array_equal(fitted.decision_function(reordered), fitted.decision_function(frame))
    with pytest.raises(DataError, match="lacks feature column.*mem"):
        fitted.decision_function(frame.drop(columns="mem"))
    with pytest.raises(DataError, match="takes 2 column"):
        fitted.decision_function(np.zeros((5, 3)))


def test_sign_conventions(fitted, frame):
    """PyOD: decision_function and decision_scores_ higher = more anomalous, predict/labels_ 1 = anomaly;
    scikit-learn: score_samples higher = more normal."""
    spiked = frame.copy()
    spiked.loc[300, "cpu"] = 25.0
    anomaly_score = fitted.decision_function(spiked)
    assert np.nanargmax(anomaly_score) == 300
    np.testing.assert_array_equal(fitted.score_samples(spiked), -anomaly_score)
    assert np.nanargmin(fitted.score_samples(spiked)) == 300
    assert fitted.predict(spiked)[300] == 1
    np.testing.assert_array_equal(fitted.labels_, (fitted.decision_scores_ > fitted.threshold_).astype(np.int8))
    assert 0 < fitted.labels_.mean() < 0.2  # percentile 95 of the training scores: about 5% flagged
