"""How many incidents could any threshold on these scores catch? An upper bound from the labels.

For every series of a suite the scores in `OUTPUTS/<series>.csv` (column `reconstruction_error`, as
`detect.py --output` writes it) are cut at every useful threshold; each cut gives (false alarms, incidents
caught) by the event definitions of `anomaly.events`. A knapsack then picks one threshold per series so that
the suite catches as many incidents as possible while its false alarms stay within the goal (2 per 10k normal
rows, pooled) and no series flags more than `--max-fpr` of its normal rows. No label-free rule can do better
with the same scores: when the bound is under the goal's recall, the score itself must change.

    .venv/bin/python bench/event_bound.py ../shared/data/nab out/nab
    (out/nab from `python bench/suite_outputs.py ../shared/data/nab out/nab`)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly import events  # noqa: E402

CUTS = 200  # thresholds tried per series: quantiles of its scores, plus each event's peak


def series_options(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> list[tuple[int, int]]:
    """(false alarms, incidents caught) of each useful threshold on one series, best catch per alarm count."""
    y = labels.astype(bool)
    starts, ends = events.runs(y)
    finite = scores[np.isfinite(scores)]
    peaks = [scores[max(0, a - events.TOLERANCE):b + events.TOLERANCE + 1].max() for a, b in zip(starts, ends)]
    cuts = np.unique(np.r_[np.quantile(finite, np.linspace(0.5, 1, CUTS)) if len(finite) else [], peaks, np.inf])
    best: dict[int, int] = {}
    for cut in cuts:
        flags = np.nan_to_num(scores, nan=-np.inf) >= cut
        counts = events.series_counts(y, flags)
        if (flags & ~y).sum() > max_fpr * max(1, (~y).sum()):
            continue
        best[counts["false_alerts"]] = max(best.get(counts["false_alerts"], 0), counts["caught"])
    return sorted(best.items())


def bound(suite: Path, outputs: Path, max_fpr: float) -> dict:
    options, normal, total = [], 0, 0
    for test in sorted(suite.glob("*.test.csv")):
        name = test.name[: -len(".test.csv")]
        labels = pd.read_csv(test, usecols=["label"])["label"].to_numpy()
        if not labels.any() or not (outputs / f"{name}.csv").exists():
            continue
        scores = pd.read_csv(outputs / f"{name}.csv", usecols=["reconstruction_error"])["reconstruction_error"]
        options.append(series_options(labels, scores.to_numpy(np.float64), max_fpr))
        normal += int((labels == 0).sum())
        total += len(events.runs(labels.astype(bool))[0])
    budget = int(events.GOAL_FALSE_PER_10K * normal / 1e4)
    caught = np.full(budget + 1, -1)
    caught[0] = 0
    for opts in options:  # knapsack over the pooled false-alarm budget
        step = np.full(budget + 1, -1)
        for spent in np.flatnonzero(caught >= 0):
            for alarms, hit in opts:
                if spent + alarms <= budget:
                    step[spent + alarms] = max(step[spent + alarms], caught[spent] + hit)
        caught = step
    return {"suite": suite.name, "series": len(options), "events": total, "false_alarm_budget": budget,
            "best_event_recall": round(float(caught.max()) / max(total, 1), 3),
            "goal": events.GOAL_EVENT_RECALL}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path)
    ap.add_argument("outputs", type=Path)
    ap.add_argument("--max-fpr", type=float, default=0.10,
                    help="largest share of a series' normal rows a threshold may flag (default 0.10; the goal is "
                         "a mean of 0.05 over the series)")
    args = ap.parse_args()
    print(bound(args.suite, args.outputs, args.max_fpr))


if __name__ == "__main__":
    main()
