"""Detection-quality metrics on labelled rows.

Threshold-free ranking metrics (ROC-AUC, PR-AUC, VUS-PR, best F1) say how well a score separates anomalies
from normal rows; precision / recall / F1 at a threshold say how good one operating point is. Point-adjusted
F1 is reported only next to the same metric for a uniform random score, because point adjustment rewards
random scores (a whole labelled window counts as found when any one of its rows is flagged).
"""

from __future__ import annotations

import numpy as np

# TSB-AD's get_metrics default sliding window is 100 and VUS uses buffers 0 .. 2 * window.
DEFAULT_SLIDING_WINDOW = 100
VUS_THRESHOLDS = 250  # score levels per range-PR curve, as in TSB-AD
RANDOM_SEED = 0


# --- helpers -----------------------------------------------------------------------------------------------


def segments(labels: np.ndarray) -> np.ndarray:
    """(start, end) pairs, end inclusive, of the runs of 1s in a 0/1 vector; shape (n_segments, 2)."""
    lab = np.asarray(labels).astype(bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], lab, [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1], axis=1)


def _ranking_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Bool labels and float scores where unscored rows (NaN) rank lowest: never flagged before a scored row."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    ok = np.isfinite(scores)
    if not ok.all():
        scores = np.where(ok, scores, np.min(scores[ok]) if ok.any() else 0.0)
    return labels, scores


def sliding_window(values: np.ndarray, fallback: int = 125) -> int:
    """Dominant period from the autocorrelation's strongest local maximum (TSB-AD's `find_length_rank`):
    lags 3..400 of the first 20,000 values; outside 3..300 (or none found) the fallback 125 is used."""
    x = np.asarray(values, np.float64).ravel()[:20000]
    x = x[np.isfinite(x)]
    if len(x) < 8 or np.ptp(x) == 0:
        return fallback
    with np.errstate(all="ignore"):  # huge values overflow: no period then (numpy's warnings broke the one-line error)
        x = x - x.mean()
        size = 1 << (2 * len(x) - 1).bit_length()
        spectrum = np.fft.rfft(x, size)
        acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[: min(401, len(x))]
    if not (acov[0] > 0 and np.isfinite(acov).all()):  # denormal values underflow to 0, huge ones overflow
        return fallback
    acf = acov / acov[0]
    base = 3
    a = acf[base:]
    if len(a) < 3:
        return fallback
    peaks = np.flatnonzero((a[1:-1] > a[:-2]) & (a[1:-1] > a[2:])) + 1
    if len(peaks) == 0:
        return fallback
    lag = int(peaks[np.argmax(a[peaks])])
    if lag < 3 or lag > 300:
        return fallback
    return lag + base


def max_buffer_for(values: np.ndarray | None) -> int:
    """VUS buffer range 0..2 * sliding window, as TSB-AD evaluates (window from the series when given)."""
    return 2 * (DEFAULT_SLIDING_WINDOW if values is None else sliding_window(values))


# --- VUS-PR ------------------------------------------------------------------------------------------------


def range_pr_auc(labels: np.ndarray, scores: np.ndarray, buffer: int, n_thresholds: int = VUS_THRESHOLDS,
                 _ranks: tuple | None = None) -> float:
    """Range-aware PR-AUC for one buffer length (Paparrizos et al., VLDB 2022, as implemented in TSB-AD).

    Each labelled segment [s, e] gets a soft buffer of buffer // 2 rows on each side, weighted
    sqrt(1 - d / buffer) at distance d (capped at 1 where buffers meet). At a threshold, with pred = score >=
    threshold: TP = flagged anomalous rows + the buffer weight of flagged buffer rows; precision = TP / flagged;
    recall = min(1, TP / P') with P' = P + (flagged buffer weight) / 2, multiplied by the fraction of
    (buffer-extended, merged) segments that hold a flagged row. The area is the step sum of precision over
    recall increments at `n_thresholds` score levels evenly spaced in rank.
    """
    labels, scores = _ranking_inputs(labels, scores)
    n = len(scores)
    seg = segments(labels)
    if len(seg) == 0:
        return float("nan")
    half = buffer // 2
    levels, n_pred, tp_anom, rank = _ranks or _rank_levels(labels, scores, n_thresholds)
    # Soft buffer weights of the rows around each segment (anomalous rows themselves count fully).
    if half > 0:
        d = np.arange(1, half + 1)
        w = np.sqrt(1 - d / buffer)
        pos = np.concatenate([(seg[:, 1:2] + d).ravel(), (seg[:, 0:1] - d).ravel()])
        wts = np.tile(w, 2 * len(seg))
        ok = (pos >= 0) & (pos < n)
        weight = np.minimum(np.bincount(pos[ok], weights=wts[ok], minlength=n), 1.0)  # buffers that meet add up
        weight[labels] = 0.0
        buf_rows = np.flatnonzero(weight)
    else:
        weight, buf_rows = np.zeros(0), np.empty(0, np.int64)
    # A row is flagged at level j when its rank (0 = highest score) is below n_pred[j]; bin rows by the first
    # level that flags them, so sums over flagged rows are cumulative sums over levels (no sort per buffer).
    first = np.searchsorted(n_pred, rank[buf_rows], side="right")
    tp_buf = np.cumsum(np.bincount(first, weights=weight[buf_rows], minlength=len(levels) + 1))[: len(levels)]
    # Buffer-extended segments, merged where they touch; a segment "exists" once any of its rows is flagged.
    lo = np.maximum(seg[:, 0] - half, 0)
    hi = np.minimum(seg[:, 1] + half, n - 1)
    new = np.r_[True, lo[1:] > hi[:-1]]
    lo, hi = lo[new], np.maximum.reduceat(hi, np.flatnonzero(new))
    lengths = hi - lo + 1
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    rows = np.repeat(lo - starts, lengths) + np.arange(lengths.sum())
    seg_first = np.searchsorted(n_pred, np.minimum.reduceat(rank[rows], starts), side="right")
    existence = np.cumsum(np.bincount(seg_first, minlength=len(levels) + 1))[: len(levels)] / len(lo)
    P = labels.sum()
    tp = tp_anom + tp_buf
    recall = np.minimum(tp / (P + tp_buf / 2), 1.0) * existence
    precision = tp / n_pred
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def _rank_levels(labels: np.ndarray, scores: np.ndarray, n_thresholds: int) -> tuple:
    """Score levels evenly spaced in rank (highest first); at each, the rows flagged (score >= level) and the
    anomalous rows flagged; and every row's rank (0 = highest score; tied rows are flagged together)."""
    desc = np.argsort(-scores, kind="stable")
    ordered = scores[desc[::-1]]
    levels = scores[desc][np.linspace(0, len(scores) - 1, n_thresholds).astype(int)]
    n_pred = len(scores) - np.searchsorted(ordered, levels, side="left")
    anom = np.sort(scores[labels])
    rank = np.empty(len(scores), np.int64)
    rank[desc] = np.arange(len(scores))
    return levels, n_pred, len(anom) - np.searchsorted(anom, levels, side="left"), rank


def vus_pr(labels: np.ndarray, scores: np.ndarray, max_buffer: int | None = None,
           n_thresholds: int = VUS_THRESHOLDS) -> float:
    """Volume under the range-aware PR surface: the mean range PR-AUC over buffer lengths 0..max_buffer.
    NaN when there is no anomaly (undefined)."""
    max_buffer = 2 * DEFAULT_SLIDING_WINDOW if max_buffer is None else int(max_buffer)
    labels, scores = _ranking_inputs(labels, scores)
    if not labels.any():
        return float("nan")
    ranks = _rank_levels(labels, scores, n_thresholds)  # the same for every buffer length
    return float(np.mean([range_pr_auc(labels, scores, b, n_thresholds, ranks) for b in range(max_buffer + 1)]))


# --- F1 variants -------------------------------------------------------------------------------------------


def prf(labels: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    labels, pred = np.asarray(labels).astype(bool), np.asarray(pred).astype(bool)
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(best F1 over all thresholds, the threshold that reaches it); rows with score > threshold are flagged."""
    labels, scores = _ranking_inputs(labels, scores)
    if not labels.any():
        return float("nan"), float("nan")
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last row of each tie group
    tp = np.cumsum(lab)[last]
    flagged = last + 1
    f1 = 2 * tp / (flagged + labels.sum())
    i = int(np.argmax(f1))
    # Threshold just below the group's score, so "score > threshold" flags exactly that group and above.
    below = s[last[i] + 1] if last[i] + 1 < len(s) else -np.inf
    thr = (s[last[i]] + below) / 2 if np.isfinite(below) else np.nextafter(s[last[i]], -np.inf)
    return float(f1[i]), float(thr)


def best_point_adjusted_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over thresholds after point adjustment: a labelled segment counts as fully found when any of its
    rows is flagged. Exact over all thresholds."""
    labels, scores = _ranking_inputs(labels, scores)
    seg = segments(labels)
    if len(seg) == 0:
        return float("nan")
    levels = np.unique(scores)[::-1]  # flag score >= level
    seg_max = np.array([scores[s:e + 1].max() for s, e in seg])
    seg_len = seg[:, 1] - seg[:, 0] + 1
    order = np.argsort(seg_max)
    cum_len = np.concatenate([[0], np.cumsum(seg_len[order][::-1])])  # longest-max first
    found = len(seg_max) - np.searchsorted(seg_max[order], levels, side="left")
    tp = cum_len[found]
    normal = np.sort(scores[~labels])
    fp = len(normal) - np.searchsorted(normal, levels, side="left")
    P = labels.sum()
    f1 = 2 * tp / (2 * tp + fp + (P - tp))
    return float(f1.max())


def random_point_adjusted_f1(labels: np.ndarray, seed: int = RANDOM_SEED) -> float:
    """The same best point-adjusted F1 for a uniform random score: the baseline it must be read against."""
    rng = np.random.default_rng(seed)
    return best_point_adjusted_f1(labels, rng.random(len(labels)))


# --- reports -----------------------------------------------------------------------------------------------


def ranking_report(labels: np.ndarray, scores: np.ndarray, max_buffer: int | None = None) -> dict:
    """Threshold-free metrics; empty when the labels hold no anomaly (or nothing but anomalies)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    ok = np.isfinite(scores)
    if not (labels[ok].any() and not labels[ok].all()):
        return {}
    f1, thr = best_f1(labels, scores)
    return {
        "roc_auc": float(roc_auc_score(labels[ok], scores[ok])),
        "pr_auc": float(average_precision_score(labels[ok], scores[ok])),
        "vus_pr": vus_pr(labels, scores, max_buffer),
        "best_f1": f1,
        "best_f1_threshold": thr,
        "pa_f1": best_point_adjusted_f1(labels, scores),
        "pa_f1_random": random_point_adjusted_f1(labels),
    }


def threshold_report(labels: np.ndarray, scores: np.ndarray, threshold: float, max_buffer: int | None = None) -> dict:
    """Precision, recall, F1 at `threshold`, plus the threshold-free ranking metrics (`ranking_report`).
    Unscored rows count as normal for the thresholded metrics and rank lowest for the ranking metrics."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore"):
        pred = scores > threshold
    precision, recall, f1 = prf(labels, pred)
    fp = int((pred & ~labels).sum())
    out = {"rows": int(len(labels)), "anomalous_rows": int(labels.sum()), "flagged_rows": int(pred.sum()),
           "precision": precision, "recall": recall, "f1": f1,
           "false_positive_rate": fp / max(1, int((~labels).sum()))}
    return out | ranking_report(labels, scores, max_buffer)
