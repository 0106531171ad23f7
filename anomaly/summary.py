"""The detection summary: counts, anomaly segments (incidents), top anomalies with the features that drove
them, capped per-row results, label metrics and drift warnings, in memory bounded by `max_results`; and
`lean_reply`, the same summary sized for an LLM (the MCP `run_detection` reply)."""

from __future__ import annotations

import json
import math

import numpy as np

from . import defaults
from .attribution import TOP_FEATURES, contributions, top_features, top_features_rows  # noqa: F401
from .errors import DataError
from .incidents import Incidents

WARN_FACTOR = 3  # flagged ratio over this many times the expected one gets a warning
MIN_WARN_RATIO = 0.01  # ... and over 1% of rows (a strict threshold expects almost none)


def expected_rate(info: dict) -> float | None:
    """The fraction of normal rows the stored threshold flags (versions before it was stored: from the percentile)."""
    if info.get("expected_rate") is not None:
        return float(info["expected_rate"])
    if info.get("method") == "percentile":
        return (100 - float((info.get("params") or {}).get("percentile", defaults.PERCENTILE))) / 100
    return None


class Summary:
    """Running counts, top anomalies and capped per-row results, in memory bounded by `max_results`."""

    def __init__(self, threshold: float, features: list[str], max_results: int | None, keep_all: bool = False,
                 expected_rate: float | None = None, row_features: bool = False, score_stats: dict | None = None,
                 expected_ranges: dict | None = None):
        self.threshold, self.features = threshold, features
        self.score_stats = score_stats  # the training scores' statistics: each incident's severity
        self.expected_ranges = expected_ranges  # {feature: [low, high]} in the data's units
        self.row_features = row_features  # anomalous rows in `results` name their strongest features
        self.max_results = max_results
        self.expected_rate = expected_rate
        self.rows = self.scored = self.anomalies = 0
        self.incidents = Incidents()
        self.anom_rows: list[dict] = []
        self.normal_rows: list[dict] = []
        self.keep_all = keep_all
        self.all_scores: list[np.ndarray] = []
        self.all_thresholds: list[np.ndarray] = []  # per-row thresholds of a rolling threshold
        self.labels: list[np.ndarray] = []
        self.label_column = None
        self.period_sample: list[np.ndarray] = []

    def add(self, start: int, scores: np.ndarray, flags: np.ndarray, row_err: np.ndarray,
            times: np.ndarray | None = None, thresholds: np.ndarray | None = None,
            values: np.ndarray | None = None) -> None:
        """One block's final flags; `values`: its raw feature values (an incident's value seen)."""
        self.rows += len(scores)
        self.scored += int(np.isfinite(scores).sum())
        idx = np.flatnonzero(flags)
        self.anomalies += len(idx)
        self.incidents.add(start, scores, flags, row_err, values, times, thresholds)
        cap = self.max_results
        # rows whose threshold moved (rolling, or following the file's level) say which one they were held to
        per_row = None if thresholds is None else np.broadcast_to(thresholds, scores.shape)
        own = (lambda i: None) if per_row is None else (
            lambda i: None if per_row[i] == self.threshold else float(per_row[i]))
        if cap is None or len(self.anom_rows) < cap:
            take = idx if cap is None else idx[: cap - len(self.anom_rows)]
            rows = [_row(start, i, scores, times, True, own(i)) for i in take]
            if self.row_features:
                for row, drivers in zip(rows, top_features_rows(row_err[take], self.features)):
                    row["top_features"] = drivers
            self.anom_rows += rows
        if cap is None or len(self.normal_rows) < cap:
            normal = np.flatnonzero(flags == 0)
            take = normal if cap is None else normal[: cap - len(self.normal_rows)]
            self.normal_rows += [_row(start, i, scores, times, False, own(i)) for i in take]
        if self.keep_all:
            self.all_scores.append(scores)
            if thresholds is not None:
                self.all_thresholds.append(np.broadcast_to(thresholds, scores.shape))

    def add_period_sample(self, values: np.ndarray) -> None:
        """The first feature's leading values: VUS-PR's buffer range comes from the series' period."""
        if sum(len(v) for v in self.period_sample) < 20000:
            self.period_sample.append(values[:20000])

    def add_labels(self, labels, column: str) -> None:
        self.label_column = column
        import pandas as pd
        lab = pd.to_numeric(pd.Series(labels), errors="coerce").to_numpy()
        if np.isnan(lab).any():
            raise DataError(f"label column {column!r} has non-numeric or empty values")
        self.labels.append((lab > 0).astype(np.int8))

    def summary(self) -> dict:
        ratio = self.anomalies / self.rows if self.rows else 0.0
        out = {
            "status": "success",
            "total_rows": self.rows,
            "scored_rows": self.scored,
            "anomaly_count": self.anomalies,
            "anomaly_ratio": ratio,
            "threshold": self.threshold,
            "expected_ratio": self.expected_rate,
            "anomaly_segments": self.incidents.count,
            "top_anomalies": self.incidents.report(self.features, self.threshold, self.score_stats,
                                                   self.expected_ranges),
            "warnings": self.warnings(ratio),
        }
        if self.max_results != 0:
            rows = self.anom_rows + self.normal_rows
            limit = len(rows) if self.max_results is None else self.max_results
            out["results"] = rows[:limit]
            out["results_truncated"] = len(out["results"]) < self.rows
        return out

    def warnings(self, ratio: float) -> list[str]:
        """Plain words when far more rows are flagged than normal data gets: the flags then say more about
        the data's fit to the model than about individual rows."""
        expected = self.expected_rate
        if expected is None or self.scored < 100:
            return []
        limit = max(WARN_FACTOR * expected, MIN_WARN_RATIO)
        if ratio <= limit:
            return []
        return [f"{ratio:.1%} of rows are flagged where normal data gets about {expected:.1%}: the data may have "
                "drifted away from the training data, the model may not fit it, or it holds long incidents. "
                "Look at the incidents; consider a rolling threshold (threshold_window) or retraining on recent "
                "normal data."]

    def metrics(self) -> dict:
        from .metrics import threshold_report

        scores = np.concatenate(self.all_scores)
        labels = np.concatenate(self.labels)[: len(scores)]
        from .metrics import max_buffer_for
        sample = self.period_sample
        max_buffer = max_buffer_for(np.concatenate(sample)) if sample else None
        threshold = np.concatenate(self.all_thresholds) if self.all_thresholds else self.threshold
        return threshold_report(labels, scores, threshold, max_buffer=max_buffer) | {"label_column": self.label_column}


# --- the reply sized for an LLM ---------------------------------------------------------------------------

REPLY_CHARS = defaults.MCP_REPLY_CHARS  # a default MCP run_detection reply is at most this long
DIGITS = 6  # significant digits of every float in a lean reply


def round_floats(obj, digits: int = DIGITS):
    """A copy of `obj` with every float rounded to `digits` significant digits (NaN/inf become None)."""
    if isinstance(obj, (float, np.floating)):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj


def lean_reply(summary: dict, max_chars: int | None = REPLY_CHARS) -> dict:
    """A detection summary as an LLM should read it: every float to 6 significant digits and, when the reply
    would be longer than `max_chars`, the last per-row results dropped until it fits (anomalous rows come
    first, so normal ones go first); `results_truncated` then says so. Every other field (counts, threshold,
    segments with their first and last times, warnings, the `output` CSV of every row) stays.

    `max_chars` counts the whole MCP message a client receives: the JSON-RPC envelope and the reply's JSON
    as a JSON string inside it (every quote escaped), not just the reply's own characters."""
    out = round_floats(summary)
    rows = out.get("results")
    if max_chars is None or not rows:
        return out
    excess = _as_string(out) + ENVELOPE_CHARS - max_chars
    if excess <= 0:
        return out
    keep = len(rows)
    while keep and excess > 0:
        keep -= 1
        excess -= _as_string(rows[keep]) - 1  # the row, less its quotes, plus its comma
    out["results"] = rows[:keep]
    out["results_truncated"] = True
    return out


ENVELOPE_CHARS = 200  # {"jsonrpc":"2.0","id":..,"result":{"content":[{"type":"text","text":...}],"isError":false}}


def _as_string(obj) -> int:
    """Characters of `obj`'s compact JSON written as a JSON string (quotes and backslashes escaped)."""
    return len(json.dumps(json.dumps(obj, separators=(",", ":"))))


def _row(start: int, i: int, scores: np.ndarray, times: np.ndarray | None, anomaly: bool,
         threshold: float | None = None) -> dict:
    """One per-row result; `threshold`: the row's own, given where it differs from the stored one."""
    row = {"index": start + int(i)}
    if times is not None:
        row["time"] = str(times[i])
    row |= {"reconstruction_error": _num(scores[i]), "is_anomaly": anomaly}
    return row if threshold is None else row | {"threshold": _num(threshold)}


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None

