"""Event-level quality of the flags: incidents caught and false alarms raised, as an on-call engineer reads them.

Row-wise precision and recall count rows; a person counts incidents and pages. The definitions are those of
`../shared/tools/event_metrics.py` (the project's reference; a test keeps the two equal):

- event: a maximal run of label-1 rows. alert: a maximal run of flagged rows, where runs fewer than
  `merge_gap` rows apart are one alert (a pager does not page twice within that many rows).
- an event is caught when a flagged row lies inside it or within `tolerance` rows of either end.
- an alert is true when it overlaps an event widened by `tolerance` rows on each side, else a false alarm.
- pooled over a suite's series: event recall = caught / events, event precision = true alerts / alerts,
  false alarms per 10k normal rows; FPR is the mean over series with events; alerts per 10k rows are counted
  on series without any event; spill is how far the alerts touching a caught event reach before its start
  and after its end (median rows); delay is the rows from an event's start to its first flagged row within
  tolerance (median; negative when that flag came before the labelled start).
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 10  # rows either side of an event within which a flag still catches it
MERGE_GAP = 10  # flagged runs fewer than this many rows apart page once
# What the shipped defaults must reach on every suite (issue 22).
GOAL_EVENT_RECALL = 0.75
GOAL_FALSE_PER_10K = 2.0
GOAL_FPR = 0.05
GOAL_CLEAN_ALERTS_PER_10K = 1.0
COUNT_KEYS = ("rows", "normal", "events", "caught", "alerts", "true_alerts", "false_alerts")


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (inclusive) of the runs of True in a 1-d mask."""
    edges = np.diff(np.r_[0, np.asarray(mask, bool).astype(np.int8), 0])
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def alerts(flags: np.ndarray, merge_gap: int = MERGE_GAP) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (inclusive) of the alerts: flagged runs, those fewer than `merge_gap` rows apart merged."""
    starts, ends = runs(flags)
    if len(starts) > 1:
        split = starts[1:] - ends[:-1] - 1 >= merge_gap
        starts, ends = starts[np.r_[True, split]], ends[np.r_[split, True]]
    return starts, ends


def series_counts(labels: np.ndarray, flags: np.ndarray, tolerance: int = TOLERANCE,
                  merge_gap: int = MERGE_GAP) -> dict:
    """Events, alerts and their matches in one series: the counts that pool over a suite (`pool`)."""
    y, flag = np.asarray(labels).astype(bool), np.asarray(flags).astype(bool)
    if y.shape != flag.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and flags {flag.shape} must be 1-d and of one length")
    ev_start, ev_end = runs(y)
    al_start, al_end = alerts(flag, merge_gap)
    flagged = np.flatnonzero(flag)
    # An alert is true when the first widened event that ends at or after its start begins before its end;
    # later events begin later still, so checking that one event suffices.
    nearest = np.searchsorted(ev_end + tolerance, al_start)
    has = nearest < len(ev_start)
    true = np.zeros(len(al_start), bool)
    true[has] = ev_start[nearest[has]] - tolerance <= al_end[has]
    # An event is caught by the first flagged row at or after its widened start, when that row is in reach.
    first = np.searchsorted(flagged, ev_start - tolerance)
    in_reach = first < len(flagged)
    caught = np.zeros(len(ev_start), bool)
    caught[in_reach] = flagged[first[in_reach]] <= ev_end[in_reach] + tolerance
    s, e = ev_start[caught], ev_end[caught]
    # Alerts are ordered and disjoint: those touching a widened event are one contiguous range of them.
    lo = np.searchsorted(al_end, s - tolerance)
    hi = np.searchsorted(al_start, e + tolerance, side="right") - 1
    normal = int((~y).sum())
    return {"rows": int(len(y)), "normal": normal, "events": int(len(ev_start)), "caught": int(caught.sum()),
            "alerts": int(len(al_start)), "true_alerts": int(true.sum()), "false_alerts": int((~true).sum()),
            "fpr": float((flag & ~y).sum() / max(normal, 1)),
            "before": np.maximum(0, s - al_start[lo]).tolist(), "after": np.maximum(0, al_end[hi] - e).tolist(),
            "delays": (flagged[first[caught]] - s).tolist()}


def pool(counts: list[dict]) -> dict:
    """Suite figures from per-series counts, rounded as the reference rounds them; `meets_goal` says whether
    every goal is reached (never on a suite without events: recall is undefined there)."""
    with_events = [c for c in counts if c["events"]]
    clean = [c for c in counts if not c["events"]]
    events, caught = (sum(c[k] for c in with_events) for k in ("events", "caught"))
    n_alerts, n_true, n_false = (sum(c[k] for c in with_events) for k in ("alerts", "true_alerts", "false_alerts"))
    recall = caught / events if events else None
    precision = n_true / n_alerts if n_alerts else 0.0
    f1 = 2 * precision * recall / (precision + recall) if recall is not None and precision + recall else 0.0

    def median(key: str) -> float | None:
        values = [v for c in with_events for v in c[key]]
        return float(np.median(values)) if values else None

    out = {"events": events, "caught": caught, "event_recall": None if recall is None else round(recall, 3),
           "event_precision": round(precision, 3), "event_f1": None if recall is None else round(f1, 3),
           "false_per_10k": round(1e4 * n_false / max(sum(c["normal"] for c in with_events), 1), 2),
           "fpr": round(float(np.mean([c["fpr"] for c in with_events])), 3) if with_events else None,
           "spill_before": median("before"), "spill_after": median("after"), "delay": median("delays")}
    if clean:
        out["clean_alerts_per_10k"] = round(1e4 * sum(c["alerts"] for c in clean)
                                            / max(sum(c["rows"] for c in clean), 1), 2)
    out["meets_goal"] = meets_goal(out)
    return out


def meets_goal(figures: dict) -> bool:
    """The issue's goals for the shipped defaults, on pooled suite figures."""
    recall = figures.get("event_recall")
    return bool(recall is not None and recall >= GOAL_EVENT_RECALL
                and figures["false_per_10k"] <= GOAL_FALSE_PER_10K and (figures.get("fpr") or 0) <= GOAL_FPR
                and figures.get("clean_alerts_per_10k", 0) <= GOAL_CLEAN_ALERTS_PER_10K)


def series_report(labels: np.ndarray, flags: np.ndarray, tolerance: int = TOLERANCE,
                  merge_gap: int = MERGE_GAP) -> dict:
    """One series' counts (unrounded, so that stored reports pool exactly as `pool` does) and the figures of a
    suite of this one series that apply to it: event figures where it has events, alerts per 10k rows where not."""
    counts = series_counts(labels, flags, tolerance, merge_gap)
    figures = pool([counts])
    keep = ("clean_alerts_per_10k",) if not counts["events"] else (
        "event_recall", "event_precision", "event_f1", "false_per_10k", "spill_before", "spill_after", "delay")
    return counts | {k: figures[k] for k in keep}
