"""Why a model got the window it has: the period found, in rows and as a time span, or the fallback, and what to
try instead. The training report and the model card show it, so a user whose daily cycle did not fit the window
learns it at training time rather than from missed incidents."""

from __future__ import annotations

import numpy as np

from . import period
from .metrics import sliding_window

SHORT_WINDOW_PARTS = 24  # a short window for a cut period: an hour of a daily cycle


def explain(model_type: str, X: np.ndarray, window: int, auto: bool, times: np.ndarray | None = None) -> dict:
    """What `--window auto` found on training rows `X` (rows, features) and how it became `window`."""
    step = _time_step(times)
    out: dict = {"window": int(window), "auto": bool(auto)}
    if step is not None:
        out["window_span"] = _span(window * step)
    if not auto:
        return out
    X = np.asarray(X, np.float64)
    if model_type == "pca":  # the subsequence model: one period of the first column, TSB-AD's way
        found = sliding_window(X[:, 0], fallback=0) if len(X) else 0
        limits = {f"the width limit (1,024 values / {X.shape[1]} column(s))": 1024 // max(1, X.shape[1]),
                  "a quarter of the training rows": len(X) // 4}
        fallback = 125
    else:  # the neural models: the mean autocorrelation of every column
        found = period.dominant_period(X, max_lag=4 * period.MAX_WINDOW) or 0
        limits = {"the longest window": period.MAX_WINDOW, "a tenth of the training rows": max(1, len(X) // 10)}
        fallback = period.FALLBACK_WINDOW
    out["period_rows"] = int(found) if found else None
    if step is not None and found:
        out["period_span"] = _span(found * step)
    wanted = found or fallback
    cut = [name for name, bound in limits.items() if bound == window] if window < wanted else []
    out["cut_by"] = cut[0] if cut else None
    # a slow cycle (the day of 1-minute data) is beyond the lags searched, or hides under a short one (noise)
    longer = period.dominant_period(X[:, :1]) if len(X) > 8 else None
    longer_span = _as(_span(longer * step) if longer and step is not None else None)
    if not found:
        if longer and longer > window:
            out["long_period_rows"] = int(longer)
            out["reason"] = (f"the first column's cycle of {longer} rows{longer_span} is longer than the windows "
                             f"searched: the fallback window of {window} rows")
            out["suggestion"] = (f"short incidents are caught with a short window (--window "
                                 f"{max(4, longer // SHORT_WINDOW_PARTS)}); to compare whole cycles, resample to "
                                 "coarser steps first")
        else:
            out["reason"] = f"no clear period in the first column: the fallback window of {window} rows"
            out["suggestion"] = "if the data has a cycle, give --window one cycle in rows"
    elif out["cut_by"]:
        short = max(4, found // SHORT_WINDOW_PARTS)
        out["reason"] = (f"one period is {found} rows{_as(out.get('period_span'))}, cut to {window} by "
                         f"{out['cut_by']}")
        out["suggestion"] = (f"a window holding part of a period compares partial cycles; short incidents are "
                             f"caught better with a short window (--window {short}), whole cycles with fewer "
                             "columns or more training rows")
    else:
        out["reason"] = f"one period of the first column: {found} rows{_as(out.get('period_span'))}"
        if longer and longer > 2 * window:
            out["long_period_rows"] = int(longer)
            out["reason"] += f"; the column also cycles every {longer} rows{longer_span}, which no window compares whole"
            out["suggestion"] = (f"to compare whole cycles give --window {longer} (or resample to coarser steps "
                                 "first); the short window still catches short incidents")
    return out


def _as(span: str | None) -> str:
    return f" ({span})" if span else ""


def _time_step(times: np.ndarray | None) -> np.timedelta64 | None:
    """The median step between consecutive readable times, or None."""
    if times is None or len(times) < 3:
        return None
    t = np.asarray(times, "datetime64[ns]")
    steps = np.diff(t[~np.isnat(t)]).astype(np.int64)
    steps = steps[steps > 0]
    return np.timedelta64(int(np.median(steps)), "ns") if len(steps) else None


def _span(delta: np.timedelta64) -> str:
    """A time span in the largest unit that keeps it readable: `1 day`, `4h`, `25min`, `30s`."""
    seconds = float(delta / np.timedelta64(1, "s"))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            value = seconds / size
            text = f"{value:.3g}"
            return f"{text} {unit}{'s' if unit == 'day' and value != 1 else ''}" if unit == "day" else f"{text}{unit}"
    return f"{seconds:.3g}s"
