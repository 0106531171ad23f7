"""What `anomaly evaluate` reports after training: per-detector means over a suite, one line per series, and the
printed table."""

from __future__ import annotations

import numpy as np

from .. import events
from .evaluate_outputs import format_events_table

RANKING = ("roc_auc", "pr_auc", "vus_pr", "best_f1")
AT_THRESHOLD = ("precision", "recall", "f1")


def summarize(rows: list[dict]) -> dict:
    """Per detector: means over series with anomalies, mean false positive rate over series without."""
    out: dict = {}
    keys = []
    for r in rows:
        for k in r.get("detectors", {}):
            if k not in keys:
                keys.append(k)
    for k in keys:
        reps = [r["detectors"][k] for r in rows if k in r.get("detectors", {})]
        anom = [x for x in reps if x.get("anomalous_rows")]
        clean = [x for x in reps if not x.get("anomalous_rows")]
        s = {"series_with_anomalies": len(anom), "series_without": len(clean)}
        for m in RANKING + AT_THRESHOLD + ("pa_f1", "pa_f1_random"):
            vals = [x[m] for x in anom if m in x and np.isfinite(x[m])]
            if vals:
                s[m] = float(np.mean(vals))
        methods = {m for x in reps for m in x.get("f1_at", {})}
        if methods:
            def mean_at(group, m, key):
                vals = [x["f1_at"][m][key] for x in group if m in x.get("f1_at", {})]
                return float(np.mean(vals)) if vals else None
            s["f1_at"] = {m: mean_at(anom, m, "f1") for m in sorted(methods)}
            s["fpr_at"] = {m: mean_at(anom, m, "false_positive_rate") for m in sorted(methods)}
            s["flagged_clean_at"] = {m: mean_at(clean, m, "flagged_ratio") for m in sorted(methods)}
        if clean:
            s["false_positive_rate_clean"] = float(np.mean([x["false_positive_rate"] for x in clean]))
        s["events"] = events.pool([x["events"] for x in reps if "events" in x])
        s["train_seconds"] = round(float(sum(x.get("train_seconds", 0) for x in reps)), 2)
        s["score_seconds"] = round(float(sum(x.get("score_seconds", 0) for x in reps)), 2)
        out[k] = s
    return out


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and np.isfinite(v) else "-"


def format_series(row: dict) -> str:
    if "error" in row:
        return f"{row['series']}: skipped ({row['error']})"
    parts = []
    for k, r in row["detectors"].items():
        ev = r.get("events", {})
        if row["anomalous_rows"]:
            parts.append(f"{k}: vus {_fmt(r.get('vus_pr'))} roc {_fmt(r.get('roc_auc'))} f1 {_fmt(r.get('f1'))} "
                         f"caught {ev.get('caught', '-')}/{ev.get('events', '-')} false {ev.get('false_alerts', '-')}")
        else:
            parts.append(f"{k}: fpr {_fmt(r.get('false_positive_rate'))} alerts {ev.get('alerts', '-')}")
    return f"{row['series']} ({row['rows_test']} rows, {row['anomalous_rows']} anomalous): " + "; ".join(parts)


def format_summary(result: dict) -> str:
    summ = result["summary"]
    head = (f"{'detector':<22} {'ROC-AUC':>7} {'PR-AUC':>7} {'VUS-PR':>7} {'F1':>6} {'bestF1':>6} "
            f"{'PA-F1':>6} {'(rand)':>6} {'FPR0':>6} {'train s':>8} {'score s':>8}")
    lines = [f"suite {result['suite']}: {len(result['series'])} series", head]
    for k, s in summ.items():
        lines.append(f"{k:<22} {_fmt(s.get('roc_auc')):>7} {_fmt(s.get('pr_auc')):>7} {_fmt(s.get('vus_pr')):>7} "
                     f"{_fmt(s.get('f1')):>6} {_fmt(s.get('best_f1')):>6} {_fmt(s.get('pa_f1')):>6} "
                     f"{_fmt(s.get('pa_f1_random')):>6} {_fmt(s.get('false_positive_rate_clean')):>6} "
                     f"{s['train_seconds']:>8.1f} {s['score_seconds']:>8.1f}")
        if s.get("f1_at"):
            by_method = ", ".join(f"{m} {_fmt(v)} (fpr {_fmt(s['fpr_at'][m])}, clean {_fmt(s['flagged_clean_at'][m])})"
                                  for m, v in s["f1_at"].items())
            lines.append(f"    F1 by threshold method: {by_method}")
    lines.append("Means over series with anomalies; FPR0 = false positive rate on series without any. "
                 "PA-F1 (point-adjusted) is shown only beside the same metric for a uniform random score.")
    tol, gap = result.get("tolerance", events.TOLERANCE), result.get("merge_gap", events.MERGE_GAP)
    lines.append(format_events_table([(k, s["events"]) for k, s in summ.items() if "events" in s], tol, gap))
    return "\n".join(lines)
