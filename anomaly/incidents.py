"""Incidents, the unit a person reads: each run of flagged rows with its first, peak and last row and time,
its duration, the peak score and the threshold it crossed, a severity 0-100 and the features that drove it,
each with the value seen and the range expected in the data's own units.

`AlertHygiene` applies `min_duration` and `merge_gap` to the flags block by block (holding back only the rows
whose flags a later row can still change), so that the flags in every output and the incidents always agree:
an incident is exactly one run of flagged rows. `Incidents` follows the runs across blocks and keeps the
strongest; `severity` is the one definition of how alarming a peak score is.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np

from .attribution import EXPECTED_PERCENTILES, _g, expected_ranges  # noqa: F401  (the incident's expected ranges)
from .errors import DataError
from .thresholds import rolling

TOP_INCIDENTS = 10
MIN_SHARE = 0.05  # a driving feature after the first holds at least this share of the peak row's error


# --- options -------------------------------------------------------------------------------------------------


def parse_span(value: int | str, name: str) -> int | np.timedelta64:
    """`min_duration` / `merge_gap` as rows (a whole number) or a time span (`10min`, `2h`, `1d`)."""
    span = rolling.rows_or_span(value, name, "10min")
    if not isinstance(span, int) and not span >= np.timedelta64(0, "ns"):  # negative or NaT
        raise DataError(f"{name} must be a time span of zero or more, got {value!r}")
    return span


def check_span(value: int | str, name: str) -> int | str:
    """A spec validator: the value as given, once `parse_span` accepts it."""
    parse_span(value, name)
    return value


# --- severity ------------------------------------------------------------------------------------------------


TAIL_EXPONENT = 2.0  # beyond the highest training score: each tenfold of the score is this many decades rarer


def tail_probability(score: float, stats: dict | None) -> float | None:
    """How often a training score reached `score`, from the version's stored score statistics: log-linear
    between the quantiles (p50: 0.5, p90: 0.1, p95: 0.05, p99: 0.01, max: 1/(count+1)), and beyond the highest
    training score a power-law tail, S ~ score^-2. The training scores say nothing about that far out; an
    exponential tail fitted to them fell by ten decades within twice the threshold, so a 30x and a 300x peak
    both read as certain, where this keeps them apart. None without statistics (versions saved before they
    were stored) or for an unscored row."""
    if not stats or score is None or math.isnan(score):
        return None
    try:
        knots = [(float(stats[k]), p) for k, p in (("p50", 0.5), ("p90", 0.1), ("p95", 0.05), ("p99", 0.01))]
        top = float(stats["max"])
        knots.append((top, 1.0 / (int(stats.get("count") or 0) + 1)))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(x) for x, _ in knots):
        return None
    xs = np.array([x for x, _ in knots])
    logs = np.minimum.accumulate(np.log10([p for _, p in knots]))
    if score <= top:  # ties between quantiles keep the rarer one
        keep = np.r_[xs[1:] != xs[:-1], True]
        return float(10 ** np.interp(score, xs[keep], logs[keep]))
    if math.isinf(score):
        return 0.0
    if top > 0:
        return float(10 ** (logs[-1] - TAIL_EXPONENT * math.log10(score / top)))
    p90 = xs[1]  # scores that are not all positive: the exponential tail through p90 and the max
    if top <= p90:  # no spread to extrapolate (a flat training file): beyond any of it
        return 0.0
    return float(10 ** (logs[-1] - (logs[1] - logs[-1]) / (top - p90) * (score - top)))


def severity(score: float, stats: dict | None) -> int | None:
    """0-100: ten points per decade of rarity of the peak score among the training scores,
    round(10 * -log10(tail probability)), capped at 100. Barely over a 95th-percentile threshold reads about
    13, the highest training score 10 * log10(training rows) (35-55), ten times it 20 more, and 100 is about
    1,000-10,000 times it. Monotone in the score for one version; comparable across versions and series, where
    the raw score is not."""
    p = tail_probability(score, stats)
    if p is None:
        return None
    if p <= 0:
        return 100
    return int(round(min(100.0, max(0.0, -10 * math.log10(p)))))


# --- alert hygiene -------------------------------------------------------------------------------------------


class AlertHygiene:
    """`min_duration` and `merge_gap` applied to the flags of consecutive blocks.

    Incidents separated by at most `merge_gap` (quiet rows, or the time from the last row of one to the first
    of the next) become one, their quiet rows flagged too; then an incident shorter than `min_duration` (rows,
    or the time from its first to its last row) is not one: its rows are unflagged. `push` returns the items
    whose flags are final, in order; an item waits while a later row may still join or drop its rows (at most
    about `min_duration` + `merge_gap` rows back). The defaults (1 row, 0) change nothing and hold nothing."""

    def __init__(self, min_duration: int | np.timedelta64 = 1, merge_gap: int | np.timedelta64 = 0):
        self.min, self.gap = min_duration, merge_gap
        self.by_time = not (isinstance(min_duration, int) and isinstance(merge_gap, int))
        self.active = self.by_time or min_duration > 1 or merge_gap > 0
        self.items: list[tuple[int, int, Any]] = []  # (first row, rows, payload) held back
        self.flags = np.empty(0, np.int8)  # flags of the held rows, from row `first`
        self.times = np.empty(0, "datetime64[ns]")
        self.first = 0
        self.decided = 0  # rows before it have their final flags
        self.prev: list | None = None  # the last kept incident a later run may still join

    @classmethod
    def of(cls, min_duration: int | str, merge_gap: int | str, timed: bool, name: str) -> "AlertHygiene":
        """From the options as given; a time span needs a time column in file `name`."""
        given = {"min_duration": min_duration, "merge_gap": merge_gap}
        spans = {option: parse_span(value, option) for option, value in given.items()}
        for option, span in spans.items():
            if not isinstance(span, int) and not timed:
                raise DataError(f"{option} {given[option]!r} is a time span, but {name} has no time column "
                                "(name one with time_column, or give it in rows)")
        shortest = spans["min_duration"]
        return cls(max(1, shortest) if isinstance(shortest, int) else shortest, spans["merge_gap"])

    def push(self, start: int, flags: np.ndarray, times: np.ndarray | None, payload: Any) -> list[tuple[Any, np.ndarray]]:
        """Hold this block's flags (int8) and times (datetime64, when a span is a time); return
        [(payload, final flags)] of every item now settled."""
        if not self.active:
            return [(payload, flags)]
        if not self.items:
            self.first = start
        self.items.append((start, len(flags), payload))
        self.flags = np.concatenate([self.flags, flags.astype(np.int8)])
        if self.by_time:
            self.times = np.concatenate([self.times, times])
        self._settle(final=False)
        return self._release()

    def finish(self) -> list[tuple[Any, np.ndarray]]:
        if self.active and self.items:
            self._settle(final=True)
        return self._release()

    def _t(self, row: int):
        return self.times[row - self.first] if self.by_time else None

    def _chains(self) -> list[list]:
        """[first, end (exclusive), kept, time of first, time of last] of every incident from `decided` on."""
        f = self.flags[self.decided - self.first:]
        edges = np.flatnonzero(np.diff(np.r_[0, f, 0])) + self.decided
        chains = [self.prev] if self.prev else []
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
            last = chains[-1] if chains else None
            if last is not None and self._within(self.gap, a - last[1], self._t(a), last[4]):
                last[1], last[4] = b, self._t(b - 1)
            else:
                chains.append([a, b, False, self._t(a), self._t(b - 1)])
        return chains

    def _within(self, limit, rows: int, t_to, t_from) -> bool:
        if isinstance(limit, int):
            return rows <= limit
        return bool(t_to - t_from <= limit)  # NaT: never

    def _settle(self, final: bool) -> None:
        end, before = self.first + len(self.flags), self.decided
        chains = self._chains()
        for chain in chains[:-1]:
            self._decide(chain, before)
        self.decided, self.prev = end, None
        if not chains:
            return
        last = chains[-1]
        closed = final or (last[1] < end and not self._within(self.gap, end - last[1], self._t(end - 1), last[4]))
        if closed:
            self._decide(last, before)
        elif last[2] or self._long(last):  # kept whatever comes: final up to its last flagged row
            self._decide(last, before)
            last[2] = True
            self.decided, self.prev = last[1], last
        else:  # may still be dropped or joined: held from its first row
            self.decided = last[0]

    def _long(self, chain: list) -> bool:
        if isinstance(self.min, int):
            return chain[1] - chain[0] >= self.min
        span = chain[4] - chain[3]
        return bool(np.isnat(span) or span >= self.min)  # an unreadable time: kept, not hidden

    def _decide(self, chain: list, before: int) -> None:
        """Flag the incident's rows (quiet ones between joined runs too), or unflag a too-short one."""
        lo = max(chain[0], before) - self.first
        self.flags[lo:chain[1] - self.first] = 1 if (chain[2] or self._long(chain)) else 0

    def _release(self) -> list[tuple[Any, np.ndarray]]:
        out = []
        while self.items and self.items[0][0] + self.items[0][1] <= self.decided:
            start, n, payload = self.items.pop(0)
            out.append((payload, self.flags[:n]))
            self.flags, self.first = self.flags[n:], start + n
            if self.by_time:
                self.times = self.times[n:]
        return out


# --- incidents -----------------------------------------------------------------------------------------------


class Incidents:
    """Runs of flagged rows across consecutive blocks: how many, and the strongest `TOP_INCIDENTS` by their peak
    (ten rows of one incident do not crowd out the others). `add` takes the final flags."""

    def __init__(self) -> None:
        self.count = 0
        self.top: list[tuple] = []  # min-heap: (peak score, peak row, first row, incident)
        self.open: dict | None = None  # an incident still running at the end of the last block

    def add(self, start: int, scores: np.ndarray, flags: np.ndarray, row_err: np.ndarray, values: np.ndarray | None,
            times, thresholds) -> None:
        edges = np.flatnonzero(np.diff(np.r_[0, flags.view(np.int8), 0]))
        runs = list(zip(edges[::2].tolist(), edges[1::2].tolist()))  # [first, end) within the block
        if self.open is not None and (not runs or runs[0][0] != 0):
            self._close(self.open)
            self.open = None
        if not runs:
            return
        padded = np.r_[np.nan_to_num(scores, nan=-np.inf), -np.inf]
        peaks = np.maximum.reduceat(padded, np.ravel(runs))[::2]
        keep = set(np.argsort(-peaks)[:TOP_INCIDENTS].tolist()) | {0, len(runs) - 1}
        self.count += len(runs) - (self.open is not None)
        at = (lambda i: None) if times is None else (lambda i: str(times[i]))
        per_row = None if thresholds is None else np.broadcast_to(thresholds, scores.shape)
        for k, (a, b) in enumerate(runs):
            if k not in keep:
                continue
            i = a + int(np.argmax(padded[a:b]))
            inc = {"index": start + i, "time": at(i), "score": float(scores[i]),
                   "threshold": None if per_row is None else float(per_row[i]),
                   "first_row": start + a, "first_time": at(a), "last_row": start + b - 1, "last_time": at(b - 1),
                   "errors": row_err[i], "peak_values": None if values is None else values[i],
                   "low": None if values is None else np.fmin.reduce(values[a:b], axis=0),
                   "high": None if values is None else np.fmax.reduce(values[a:b], axis=0)}
            if k == 0 and self.open is not None:  # continues the incident the previous block ended with
                inc = _joined(self.open, inc)
            if k == len(runs) - 1 and b == len(flags):
                self.open = inc
            else:
                self._close(inc)
                if k == 0:
                    self.open = None

    def _close(self, inc: dict) -> None:
        item = (inc["score"], inc["index"], inc["first_row"], inc)
        if len(self.top) < TOP_INCIDENTS:
            heapq.heappush(self.top, item)
        elif item[0] > self.top[0][0]:
            heapq.heapreplace(self.top, item)

    def report(self, features: list[str], threshold: float, stats: dict | None,
               ranges: dict | None) -> list[dict]:
        """The strongest incidents, strongest first, as every interface shows them (`incident_report`)."""
        if self.open is not None:
            self._close(self.open)
            self.open = None
        ordered = sorted(self.top, key=lambda t: t[0], reverse=True)
        return [incident_report(inc, features, threshold, stats, ranges) for *_, inc in ordered]


def _joined(prev: dict, inc: dict) -> dict:
    peak = inc if inc["score"] > prev["score"] else prev
    out = {**peak, "first_row": prev["first_row"], "first_time": prev["first_time"], "last_row": inc["last_row"],
           "last_time": inc["last_time"]}
    if prev["low"] is not None and inc["low"] is not None:
        out["low"], out["high"] = np.fmin(prev["low"], inc["low"]), np.fmax(prev["high"], inc["high"])
    return out


def incident_report(inc: dict, features: list[str], threshold: float, stats: dict | None,
                    ranges: dict | None) -> dict:
    """One incident as reported: its peak row (`index`, `time`, `reconstruction_error`: the peak score, the
    `threshold` it crossed, `severity`), first and last row and time, length in `rows` and, with readable times,
    `duration`; `top_features`: up to three features with the largest share of the peak row's error (the others
    at least `MIN_SHARE` of it), each with the
    value seen (the incident's value farthest outside the expected range, else the peak row's) and the range
    `expected` from training (versions saved before ranges were stored: none)."""
    from .attribution import top_features

    timed = inc["time"] is not None
    out: dict[str, Any] = {"index": int(inc["index"]), **({"time": inc["time"]} if timed else {}),
                           "reconstruction_error": inc["score"],
                           "threshold": threshold if inc["threshold"] is None else inc["threshold"],
                           "severity": severity(inc["score"], stats),
                           "first_row": int(inc["first_row"]), **({"first_time": inc["first_time"]} if timed else {}),
                           "last_row": int(inc["last_row"]), **({"last_time": inc["last_time"]} if timed else {}),
                           "rows": int(inc["last_row"] - inc["first_row"] + 1)}
    if timed:
        span = duration(inc["first_time"], inc["last_time"])
        if span is not None:
            out["duration"] = span
    drivers = top_features(inc["errors"], features)
    drivers = drivers[:1] + [d for d in drivers[1:] if d["share"] >= MIN_SHARE]
    if inc["peak_values"] is not None:
        where = {f: j for j, f in enumerate(features)}
        for d in drivers:
            j = where[d["feature"]]
            expected = (ranges or {}).get(d["feature"])
            d["value"] = _g(_value_seen(inc, j, expected))
            if expected is not None:
                d["expected"] = [_g(expected[0]), _g(expected[1])]
    out["top_features"] = drivers
    return out


def _value_seen(inc: dict, j: int, expected: list | None) -> float:
    peak = float(inc["peak_values"][j])
    if expected is None or inc["low"] is None:
        return peak
    low, high = float(inc["low"][j]), float(inc["high"][j])
    above, below = high - expected[1], expected[0] - low
    if max(above, below) > 0:  # NaN (a missing value throughout) compares False: the peak row's
        return high if above >= below else low
    return peak


def duration(first: str, last: str) -> str | None:
    """The time from an incident's first row to its last, in words (`2h 25min`); None when unreadable."""
    from .data import parse_times

    t = parse_times([first, last])
    if np.isnat(t).any():
        return None
    seconds = (t[1] - t[0]) / np.timedelta64(1, "s")
    return span_words(float(seconds))


def span_words(seconds: float) -> str:
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.3g}s"
    parts, left = [], int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return sign + " ".join(parts[:2])


def describe(inc: dict) -> str:
    """One incident in one line of words, as the CLI prints it."""
    rows = (f"rows {inc['first_row']}-{inc['last_row']} ({inc['rows']} rows)" if inc["rows"] > 1
            else f"row {inc['first_row']}")
    when = ""
    if "first_time" in inc:
        when = (f" {inc['first_time']} .. {inc['last_time']}" if inc["rows"] > 1 else f" {inc['first_time']}")
        when += f" ({inc['duration']})" if inc.get("duration") and inc["rows"] > 1 else ""
    sev = "-" if inc.get("severity") is None else inc["severity"]
    head = (f"severity {sev:>3}  {rows}{when}; peak {inc['reconstruction_error']:.4g} at row {inc['index']} "
            f"(threshold {inc['threshold']:.4g})")
    drivers = "; ".join(feature_words(d) for d in inc["top_features"])
    return head + (f"; {drivers}" if drivers else "")


def feature_words(d: dict) -> str:
    """`mem 80.2, expected 61.3-63.9 (93%)`: a driving feature in the data's own units."""
    text = d["feature"]
    if d.get("value") is not None:
        text += f" {d['value']:.4g}"
    if d.get("expected"):
        lo, hi = d["expected"]
        text += f", expected {lo:.4g}-{hi:.4g}"
    return text + f" ({100 * d['share']:.0f}%)"
