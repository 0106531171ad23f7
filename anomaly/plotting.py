"""Detection plots (matplotlib, Agg backend: no display needed), readable at millions of rows.

One figure: a panel per feature over time (row index or the timestamp column), anomalous rows marked, labelled
windows shaded, and a last panel with the score against the threshold line. Multivariate data shows the
features that contribute most to the anomalies' errors.

Rows are reduced to at most `2 * target` buckets of consecutive rows while they stream in (bounded memory
whatever the file size): each bucket keeps the min, max and mean of every feature and of the score, whether
it holds a labelled row, and its strongest anomaly. Drawing a bucket's min-max band keeps every spike visible,
and every bucket with an anomaly gets a marker, so no anomaly disappears in the downsampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError


def require_matplotlib() -> None:
    """Refuse a plot before any work is done when matplotlib is not installed (it is the `plot` extra): found
    only after training or scoring, its absence cost the work and the result file."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DataError("plots need matplotlib, which is not installed: pip install 'anomaly[plot]'") from None

TARGET_BUCKETS = 2000
MAX_FEATURE_PANELS = 4


class PlotCollector:
    """Streams (rows, scores, flags) in; `render(path)` draws the figure."""

    def __init__(self, features: list[str], threshold: float, target: int = TARGET_BUCKETS,
                 columns: list[str] | None = None, label_column: str | None = None, time_column: str | None = None):
        self.features, self.threshold, self.target = list(features), float(threshold), int(target)
        self.columns = list(columns or features)  # names of the feature columns in the data frames
        self.label_column, self.time_column = label_column, time_column
        self.size = 1  # rows per bucket; doubles when there are too many buckets
        self.rows = 0
        self.rolling = False  # per-row thresholds were given
        n_f = len(self.features)
        self.b = {  # per-bucket statistics, one entry per bucket
            "min": np.empty((0, n_f)), "max": np.empty((0, n_f)), "sum": np.empty((0, n_f)), "cnt": np.empty((0, n_f)),
            "smin": np.empty(0), "smax": np.empty(0), "thr": np.empty(0), "label": np.empty(0, bool), "time": np.empty(0, "datetime64[ns]"),
            "amax": np.empty(0), "aval": np.empty((0, n_f)), "ashare": np.empty((0, n_f)),
            "acount": np.empty(0, np.int64),
        }
        self.contrib = np.zeros(n_f)  # summed per-feature error of anomalous rows (all rows if none)
        self.contrib_all = np.zeros(n_f)

    # --- collecting ------------------------------------------------------------------------------------

    def add_frame(self, start: int, frame, scores: np.ndarray, flags: np.ndarray, row_err: np.ndarray | None = None,
                  thresholds: np.ndarray | None = None):
        """Add a block of rows as a pandas frame (the detection stream's blocks), in slices to bound memory.
        `thresholds`: per-row thresholds of a rolling threshold (drawn instead of the fixed line)."""
        step = 65536
        for a in range(0, len(frame), step):
            part = frame.iloc[a:a + step]
            X = part[self.columns].to_numpy(np.float64)
            labels = part[self.label_column].to_numpy() if self.label_column and self.label_column in part else None
            times = part[self.time_column].to_numpy() if self.time_column and self.time_column in part else None
            self.add(start + a, X, scores[a:a + step], flags[a:a + step], labels=labels, times=times,
                     row_err=None if row_err is None else row_err[a:a + step],
                     thresholds=None if thresholds is None else thresholds[a:a + step])

    def add(self, start: int, X: np.ndarray, scores: np.ndarray, flags: np.ndarray, labels=None, times=None,
            row_err: np.ndarray | None = None, thresholds: np.ndarray | None = None) -> None:
        n = len(X)
        if n == 0:
            return
        if start != self.rows:
            raise ValueError(f"rows must arrive in order: expected row {self.rows}, got {start}")
        X = np.asarray(X, np.float64)
        scores = np.asarray(scores, np.float64)
        flags = np.asarray(flags).astype(bool)
        err = None
        if row_err is not None:
            err = np.nan_to_num(np.asarray(row_err, np.float64))
            self.contrib += err[flags].sum(0)
            self.contrib_all += err.sum(0)
        ids = (start + np.arange(n)) // self.size
        cuts = np.r_[0, np.flatnonzero(np.diff(ids)) + 1]
        finite = np.isfinite(X)
        with np.errstate(all="ignore"):
            new = {
                "min": np.fmin.reduceat(np.where(finite, X, np.nan), cuts), "max": np.fmax.reduceat(X, cuts),
                "sum": np.add.reduceat(np.where(finite, X, 0), cuts),
                "cnt": np.add.reduceat(finite.astype(float), cuts),
                "smin": np.fmin.reduceat(scores, cuts), "smax": np.fmax.reduceat(scores, cuts),
                "thr": (np.fmax.reduceat(np.asarray(thresholds, np.float64), cuts) if thresholds is not None
                        else np.full(len(cuts), self.threshold)),
                "label": (np.logical_or.reduceat(np.asarray(labels, float) > 0, cuts) if labels is not None
                          else np.zeros(len(cuts), bool)),
                "time": (_times(times, cuts) if times is not None
                         else np.full(len(cuts), np.datetime64("NaT"), "datetime64[ns]")),
            }
        self.rolling = self.rolling or thresholds is not None
        a_score = np.where(flags, np.nan_to_num(scores, nan=-np.inf), -np.inf)
        new["amax"] = np.maximum.reduceat(a_score, cuts)
        new["acount"] = np.add.reduceat(flags.astype(np.int64), cuts)
        # the strongest anomaly's values in each bucket (NaN where the bucket has none)
        arg = _segment_argmax(a_score, cuts)
        has = (new["acount"] > 0)[:, None]
        new["aval"] = np.where(has, X[arg], np.nan)
        if err is not None:  # which features drive that anomaly: its panels get the marker
            with np.errstate(all="ignore"):
                share = err[arg] / err[arg].sum(1, keepdims=True)
            new["ashare"] = np.where(has, share, np.nan)
        else:
            new["ashare"] = np.full(X[arg].shape, np.nan)
        if len(self.b["smin"]) and ids[0] == len(self.b["smin"]) - 1:  # continue the open last bucket
            self._merge_last(new)
        else:
            self._append(new)
        self.rows += n
        while len(self.b["smin"]) > 2 * self.target:
            self._halve()

    def _append(self, new: dict) -> None:
        self.b = {k: np.concatenate([self.b[k], new[k]]) for k in self.b}

    def _merge_last(self, new: dict) -> None:
        last = {k: v[-1:] for k, v in self.b.items()}
        first = {k: v[:1] for k, v in new.items()}
        merged = _combine(last, first)
        self.b = {k: np.concatenate([self.b[k][:-1], merged[k], new[k][1:]]) for k in self.b}

    def _halve(self) -> None:
        """Merge neighbouring buckets pairwise: twice the rows per bucket, half the buckets."""
        n = len(self.b["smin"])
        even = {k: v[0:n - n % 2:2] for k, v in self.b.items()}
        odd = {k: v[1:n:2] for k, v in self.b.items()}
        merged = _combine(even, odd)
        if n % 2:
            merged = {k: np.concatenate([merged[k], self.b[k][-1:]]) for k in merged}
        self.b = merged
        self.size *= 2

    # --- drawing -------------------------------------------------------------------------------------

    def top_features(self, k: int = MAX_FEATURE_PANELS) -> list[int]:
        weight = self.contrib if self.contrib.any() else self.contrib_all
        if not weight.any():
            return list(range(min(k, len(self.features))))
        return [int(i) for i in np.argsort(-weight, kind="stable")[:k]]

    def render(self, path: str | Path, title: str = "") -> Path:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        b = self.b
        n_b = len(b["smin"])
        index = np.arange(n_b) * self.size
        use_time = n_b > 0 and not np.isnat(b["time"]).any()
        x = b["time"] if use_time else index
        shown = self.top_features()
        fig, axes = plt.subplots(len(shown) + 1, 1, sharex=True, squeeze=False,
                                 figsize=(12, 1.9 * (len(shown) + 1) + 0.6))
        axes = axes[:, 0]
        anomalous = b["acount"] > 0
        for ax, j in zip(axes, shown):
            with np.errstate(all="ignore"):
                mean = b["sum"][:, j] / b["cnt"][:, j]
            if self.size > 1:
                ax.fill_between(x, b["min"][:, j], b["max"][:, j], color="tab:blue", alpha=0.3, linewidth=0,
                                label="min-max per bucket")
            ax.plot(x, mean, color="tab:blue", linewidth=0.7)
            # Mark an anomaly on the panels of the features that drive it (an above-average share of its error);
            # without per-feature errors, on every panel.
            drive_share = b["ashare"][:, j]
            drives = anomalous & (np.isnan(drive_share) | (drive_share >= 1.0 / len(self.features)))
            ax.scatter(x[drives], b["aval"][drives, j], s=10, color="tab:red", zorder=3, label="anomaly")
            self._shade(ax, x, b["label"])
            share = ""
            total = self.contrib.sum() if self.contrib.any() else self.contrib_all.sum()
            if total > 0 and len(self.features) > 1:
                weight = self.contrib if self.contrib.any() else self.contrib_all
                share = f" ({100 * weight[j] / total:.0f}% of error)"
            ax.set_ylabel(_short(self.features[j]) + share, fontsize=8)
        ax = axes[-1]
        if self.size > 1:
            ax.fill_between(x, b["smin"], b["smax"], color="tab:gray", alpha=0.4, linewidth=0)
        ax.plot(x, b["smax"], color="black", linewidth=0.6, label="score (bucket max)" if self.size > 1 else "score")
        if self.rolling:
            ax.plot(x, b["thr"], color="tab:orange", linestyle="--", linewidth=1, drawstyle="steps-mid",
                    label="rolling threshold")
        else:
            ax.axhline(self.threshold, color="tab:orange", linestyle="--", linewidth=1,
                       label=f"threshold {self.threshold:.4g}")
        ax.scatter(x[anomalous], b["amax"][anomalous], s=10, color="tab:red", zorder=3, label="anomaly")
        self._shade(ax, x, b["label"], label="labelled anomaly")
        finite = b["smax"][np.isfinite(b["smax"])]
        if len(finite) and finite.min() > 0 and finite.max() / max(np.median(finite), 1e-300) > 100:
            ax.set_yscale("log")  # heavy-tailed errors: a linear axis would flatten everything but the peaks
        ax.set_ylabel("anomaly score", fontsize=8)
        ax.set_xlabel(self.time_column if use_time else "row")
        ax.legend(loc="upper left", fontsize=7, ncol=4)
        rows_note = f"{self.rows:,} rows" + (f", {self.size} rows per point" if self.size > 1 else "")
        n_anom = int(b["acount"].sum())
        fig.suptitle(f"{title}  ({rows_note}, {n_anom:,} anomalous)" if title else f"{rows_note}, {n_anom:,} anomalous",
                     fontsize=10)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def _shade(self, ax, x, labelled: np.ndarray, label: str | None = None) -> None:
        """Shade each labelled run of buckets, at least 0.2% of the axis wide so short windows stay visible."""
        from .metrics import segments

        runs = segments(labelled)
        if not len(runs):
            return
        if np.issubdtype(np.asarray(x).dtype, np.datetime64):
            import matplotlib.dates as mdates
            pos = mdates.date2num(x)
        else:
            pos = np.asarray(x, np.float64)
        step = pos[1] - pos[0] if len(pos) > 1 else 1.0
        ends = np.r_[pos[1:], pos[-1] + step]
        min_width = 0.002 * (ends[-1] - pos[0])
        if len(runs) > 1000:  # too many spans to draw one by one: one artist for all
            ax.fill_between(x, 0, 1, where=labelled, transform=ax.get_xaxis_transform(), color="tab:red",
                            alpha=0.15, linewidth=0, step="post", label=label)
            return
        for i, (a, b) in enumerate(runs):
            lo, hi = pos[a], ends[b]
            if hi - lo < min_width:
                mid = (lo + hi) / 2
                lo, hi = mid - min_width / 2, mid + min_width / 2
            ax.axvspan(lo, hi, color="tab:red", alpha=0.2, linewidth=0, label=label if i == 0 else None)


def _times(times, cuts: np.ndarray) -> np.ndarray:
    import pandas as pd
    picked = pd.to_datetime(pd.Series(np.asarray(times)[cuts]), errors="coerce")
    return picked.to_numpy("datetime64[ns]")


def _segment_argmax(values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Row index of the maximum of each segment [cuts[i], cuts[i+1])."""
    seg = np.repeat(np.arange(len(cuts)), np.diff(np.r_[cuts, len(values)]))
    order = np.lexsort((-values, seg))  # by segment, largest value first
    return order[cuts]


def _combine(a: dict, b: dict) -> dict:
    """Statistics of two adjacent buckets (a before b) as one."""
    with np.errstate(all="ignore"):
        take_b = b["amax"] > a["amax"]
        return {
            "min": np.fmin(a["min"], b["min"]), "max": np.fmax(a["max"], b["max"]),
            "sum": a["sum"] + b["sum"], "cnt": a["cnt"] + b["cnt"],
            "smin": np.fmin(a["smin"], b["smin"]), "smax": np.fmax(a["smax"], b["smax"]),
            "thr": np.fmax(a["thr"], b["thr"]), "label": a["label"] | b["label"], "time": a["time"],
            "amax": np.maximum(a["amax"], b["amax"]), "aval": np.where(take_b[:, None], b["aval"], a["aval"]),
            "ashare": np.where(take_b[:, None], b["ashare"], a["ashare"]),
            "acount": a["acount"] + b["acount"],
        }


def _short(name: str, n: int = 24) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def plot_detection(path: str | Path, X: np.ndarray, features: list[str], scores: np.ndarray, threshold: float,
                   labels: np.ndarray | None = None, times=None, row_errors: np.ndarray | None = None,
                   title: str = "", target: int = TARGET_BUCKETS, time_column: str = "timestamp") -> Path:
    """Plot in-memory arrays (the evaluate command); streaming callers use PlotCollector directly."""
    from .thresholds import flag

    pc = PlotCollector(features, threshold, target=target, time_column=time_column if times is not None else None)
    flags = flag(np.asarray(scores, np.float64), threshold)
    pc.add(0, X, scores, flags, labels=labels, times=times, row_err=row_errors)
    return pc.render(path, title)


LABEL_FREE = ("percentile", "meanstd", "iqr", "pot", "dynamic")


def threshold_candidates(scores: np.ndarray, stored: dict) -> dict[str, dict]:
    """Every label-free method's threshold on the calibration scores (the stored method with its own
    parameters, the others with their defaults), each with the fraction of calibration rows it flags."""
    from . import thresholds

    scores = np.asarray(scores, np.float64)
    scores = scores[np.isfinite(scores)]
    out = {}
    for method in LABEL_FREE:
        params = (stored.get("params") or {}) if method == stored.get("method") else {}
        value = thresholds.METHODS[method](scores, None, **params)
        out[method] = {"threshold": float(value), "flags": thresholds.expected_rate(scores, value)}
    if stored.get("method") not in out:  # a label-based stored threshold
        out[stored["method"]] = {"threshold": float(stored["threshold"]),
                                 "flags": thresholds.expected_rate(scores, stored["threshold"])}
    return out


def plot_threshold_choice(path: str | Path, scores: np.ndarray, stored: dict, title: str = "") -> Path:
    """The calibration errors over the rows with the stored threshold's flags, and their histogram and density
    with every label-free method's threshold marked (the stored one highlighted) and the fraction of rows each
    would flag: look before choosing a threshold. Log axis where the tail is long."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.asarray(scores, np.float64)
    finite = scores[np.isfinite(scores)]
    candidates = threshold_candidates(finite, stored)
    stored_value = float(stored["threshold"])
    log = bool(len(finite)) and finite.min() > 0 and finite.max() / max(np.median(finite), 1e-300) > 100
    fig, (top, ax) = plt.subplots(2, 1, figsize=(12, 7), gridspec_kw={"height_ratios": [1, 1.4]})
    rows = np.arange(len(scores))
    top.plot(rows, scores, color="black", linewidth=0.6, label="calibration score")
    top.axhline(stored_value, color="tab:red", linewidth=1.5, label=f"stored threshold ({stored.get('method')})")
    flagged = scores > stored_value
    top.scatter(rows[flagged], scores[flagged], s=8, color="tab:red", zorder=3, label="flagged")
    top.set_xlabel("training row")
    top.set_ylabel("score")
    if log:
        top.set_yscale("log")
    top.legend(fontsize=7, loc="upper right")
    bins = np.geomspace(finite.min(), finite.max(), 80) if log else 80
    ax.hist(finite, bins=bins, density=True, color="tab:blue", alpha=0.45, label=f"{len(finite):,} calibration rows")
    grid = np.geomspace(finite.min(), finite.max(), 400) if log else np.linspace(finite.min(), finite.max(), 400)
    if np.ptp(finite) > 0 and len(finite) > 2:
        from scipy.stats import gaussian_kde
        data = np.log(finite) if log else finite
        density = gaussian_kde(data)(np.log(grid) if log else grid) / (grid if log else 1)
        ax.plot(grid, density, color="tab:blue", linewidth=1.2, label="density")
    colours = dict(zip(LABEL_FREE, ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")))
    for method, c in candidates.items():
        is_stored = method == stored.get("method")
        value = stored_value if is_stored else c["threshold"]
        ax.axvline(value, color="tab:red" if is_stored else colours.get(method, "gray"),
                   linewidth=2.5 if is_stored else 1, linestyle="-" if is_stored else "--",
                   label=f"{method}{' (stored)' if is_stored else ''}: {value:.4g}, flags {c['flags']:.1%}")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title or "calibration errors and candidate thresholds", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
