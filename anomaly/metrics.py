"""Detection-quality metrics on labelled rows."""

from __future__ import annotations

import numpy as np


def threshold_report(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1 at `threshold`, plus the threshold-free ROC-AUC and PR-AUC. Unscored rows count as
    normal for the thresholded metrics and are left out of the ranking metrics."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore"):
        pred = scores > threshold
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"rows": int(len(labels)), "anomalous_rows": int(labels.sum()), "precision": precision, "recall": recall,
           "f1": f1, "false_positive_rate": fp / max(1, int((~labels).sum()))}
    ok = np.isfinite(scores)
    if labels[ok].any() and not labels[ok].all():
        out["roc_auc"] = float(roc_auc_score(labels[ok], scores[ok]))
        out["pr_auc"] = float(average_precision_score(labels[ok], scores[ok]))
    return out
