"""Metric functions against examples worked out by hand (see the comments for the arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anomaly import metrics

R = math.sqrt(0.5)  # buffer weight sqrt(1 - 1/2) of the row next to a segment when the buffer length is 2


def naive_vus_pr(labels, scores, max_buffer, n_thresholds=250):
    """The definition written out loop by loop (slow), to check the vectorised version on random cases."""
    labels = np.asarray(labels).astype(int)
    n, P = len(labels), labels.sum()
    seg = metrics.segments(labels)
    desc = np.sort(scores)[::-1]
    aps = []
    for w in range(max_buffer + 1):
        ext = labels.astype(float)
        for s, e in seg:
            after = np.arange(e + 1, min(e + w // 2 + 1, n))
            ext[after] += np.sqrt(1 - (after - e) / w)
            before = np.arange(max(s - w // 2, 0), s)
            ext[before] += np.sqrt(1 - (s - before) / w)
        ext = np.minimum(ext, 1)
        merged = []
        for s, e in seg:
            lo, hi = max(s - w // 2, 0), min(e + w // 2, n - 1)
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = hi
            else:
                merged.append([lo, hi])
        recall, precision = [0.0], []
        for i in np.linspace(0, n - 1, n_thresholds).astype(int):
            pred = scores >= desc[i]
            credit = np.where(labels == 1, 1.0, ext * pred)
            tp = (credit * pred).sum()
            p_new = (P + credit.sum()) / 2
            exist = sum(pred[lo:hi + 1].any() for lo, hi in merged) / len(merged)
            recall.append(min(tp / p_new, 1) * exist)
            precision.append(tp / pred.sum())
        aps.append(np.sum(np.diff(recall) * np.array(precision)))
    return float(np.mean(aps))


def test_segments():
    assert metrics.segments([0, 1, 1, 0, 1]).tolist() == [[1, 2], [4, 4]]
    assert metrics.segments([1, 0, 0]).tolist() == [[0, 0]]
    assert metrics.segments([0, 0]).shape == (0, 2)


def test_vus_pr_perfect_score_is_one():
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    assert metrics.vus_pr(labels, labels * 1.0, max_buffer=4) == pytest.approx(1.0)


def test_vus_pr_tiny_series_by_hand():
    # labels [0,1,0,0], scores [.9,.1,0,0], buffers 0..2.
    # Buffers 0 and 1 (no buffer rows): flag row 0 -> TP 0; flag rows 0,1 -> recall 1, precision 1/2 => AP 0.5.
    # Buffer 2: rows 0 and 2 weigh R. Flag row 0: TP = R, P' = 1 + R/2, recall = R / (1 + R/2), precision R.
    #           Flag rows 0,1: TP = 1 + R >= P' -> recall 1, precision (1 + R)/2.  Then ties add no recall.
    r1 = R / (1 + R / 2)
    ap2 = r1 * R + (1 - r1) * (1 + R) / 2
    expected = (0.5 + 0.5 + ap2) / 3
    assert metrics.vus_pr([0, 1, 0, 0], np.array([0.9, 0.1, 0, 0]), max_buffer=2) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.59235, abs=1e-5)


def test_vus_pr_ties_flag_together():
    # All scores equal: every threshold flags every row. Buffer 0: precision 2/4, recall 1 -> 0.5.
    # Buffer 2: rows 0 and 3 add R each -> TP = 2 + 2R over 4 flagged rows.
    labels, scores = np.array([0, 1, 1, 0]), np.ones(4)
    assert metrics.vus_pr(labels, scores, max_buffer=0) == pytest.approx(0.5)
    assert metrics.vus_pr(labels, scores, max_buffer=2) == pytest.approx((0.5 + 0.5 + (2 + 2 * R) / 4) / 3)


def test_vus_pr_all_normal_is_undefined():
    assert math.isnan(metrics.vus_pr(np.zeros(10), np.arange(10.0), max_buffer=4))
    report = metrics.threshold_report(np.zeros(10), np.arange(10.0), 7.5)
    assert "vus_pr" not in report and "roc_auc" not in report
    assert report["false_positive_rate"] == pytest.approx(0.2)


def test_vus_pr_matches_the_definition_on_random_cases():
    rng = np.random.default_rng(0)
    for trial in range(12):
        n = int(rng.integers(20, 200))
        labels = np.zeros(n, int)
        for _ in range(int(rng.integers(1, 4))):
            s = int(rng.integers(0, n))
            labels[s:s + int(rng.integers(1, 12))] = 1
        scores = rng.random(n) + labels * rng.random(n)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # many ties
        w = int(rng.integers(0, 30))
        assert metrics.vus_pr(labels, scores, w) == pytest.approx(naive_vus_pr(labels, scores, w), abs=1e-9)


def test_vus_pr_rewards_scores_near_the_window():
    # A detector that fires just before the labelled window earns credit from the buffer; point PR-AUC gives none.
    labels = np.zeros(200, int)
    labels[100:110] = 1
    near = np.zeros(200)
    near[96:100] = 1.0
    assert metrics.vus_pr(labels, near, max_buffer=0) < 0.1
    assert metrics.vus_pr(labels, near, max_buffer=20) > 0.2


def test_unscored_rows_rank_lowest():
    labels = np.array([0, 0, 1, 0])
    scores = np.array([np.nan, 0.1, 0.9, 0.2])
    rep = metrics.threshold_report(labels, scores, 0.5)
    assert rep["roc_auc"] == 1.0 and rep["f1"] == 1.0


def test_best_f1_by_hand():
    # scores .9 .8 .7 .1 with labels 1 0 1 0: flag top 1 -> F1 2/3; top 3 -> P 2/3 R 1 -> 0.8; top 2 -> 0.5.
    f1, thr = metrics.best_f1(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert f1 == pytest.approx(0.8)
    assert 0.1 < thr < 0.7  # "score > threshold" flags exactly the top three
    # ties: two rows share the top score, one of them anomalous -> F1 at the tie = 2/3, can't split the tie
    f1, _ = metrics.best_f1(np.array([1, 0, 0]), np.array([0.5, 0.5, 0.1]))
    assert f1 == pytest.approx(2 / 3)


def test_threshold_report_by_hand():
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 0])
    scores = np.array([0.1, 0.6, 0.7, 0.2, 0.1, 0.1, 0.9, 0.3])
    rep = metrics.threshold_report(labels, scores, 0.5)
    # flagged rows 1, 2, 6: TP 2, FP 1, FN 1
    assert rep["precision"] == pytest.approx(2 / 3) and rep["recall"] == pytest.approx(2 / 3)
    assert rep["f1"] == pytest.approx(2 / 3)
    assert rep["false_positive_rate"] == pytest.approx(1 / 5)
    # ranking: anomalies .9 .7 .2 vs normals .6 .3 .1 .1 .1 -> 13 of 15 pairs ordered right
    assert rep["roc_auc"] == pytest.approx(13 / 15)
    for key in ("pr_auc", "vus_pr", "best_f1", "pa_f1", "pa_f1_random"):
        assert 0 <= rep[key] <= 1


def test_point_adjusted_f1_by_hand_and_against_random():
    # One segment rows 2..5 (P = 4); flagging only row 3 (score .9) adjusts to the whole segment: TP 4, FP 0.
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    scores = np.array([0.1, 0.2, 0.0, 0.9, 0.0, 0.0, 0.3, 0.1])
    assert metrics.best_point_adjusted_f1(labels, scores) == pytest.approx(1.0)
    # Long labelled windows: point adjustment gives a random score a high F1 too; that is why both are shown.
    long = np.zeros(2000, int)
    long[500:1500] = 1
    assert metrics.random_point_adjusted_f1(long) > 0.6
    rng = np.random.default_rng(1)
    assert metrics.best_f1(long, rng.random(2000))[0] < metrics.random_point_adjusted_f1(long)


def test_sliding_window_finds_the_period():
    t = np.arange(5000)
    assert metrics.sliding_window(np.sin(2 * np.pi * t / 50)) == 50
    assert metrics.sliding_window(np.random.default_rng(0).normal(size=5000)) > 0
    assert metrics.max_buffer_for(None) == 200
