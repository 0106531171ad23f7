"""`anomaly evaluate --suite DIR --outputs OUTDIR`: event-level quality of detections already made, no training.

OUTDIR holds one `detect --output` file per series, `<series>.csv` with an `is_anomaly` column and one row per
row of the suite's `<series>.test.csv` (whose `label` column is the truth). Series without an output file are
listed as missing and left out of the figures, as `../shared/tools/event_metrics.py` does. The report has the
shape of a training evaluation's: the outputs folder is the one "detector", with the same `events` figures.

The event table printed here is also the one `anomaly evaluate` prints after training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .. import events
from ..errors import DataError, NotFound

LABEL_COLUMN = "label"
FLAG_COLUMN = "is_anomaly"
FLAG_TRUE = {"1", "1.0", "true"}
FLAG_FALSE = {"0", "0.0", "false", "", "nan"}
MAX_NAME_WIDTH = 60  # series names longer than this are cut in the table (the JSON has them whole)


def add_event_arguments(p: argparse.ArgumentParser) -> None:
    """`anomaly evaluate`'s options for the event figures, and --outputs (score detections already made)."""
    p.add_argument("--outputs", nargs="+", help="no training: score these folders of `detect --output` files "
                   "(<series>.csv with is_anomaly), one per --suite, by the event figures")
    p.add_argument("--event-tolerance", type=_rows, default=events.TOLERANCE,
                   help="rows either side of an event within which a flag still catches it")
    p.add_argument("--event-merge-gap", type=_rows, default=events.MERGE_GAP,
                   help="flagged runs fewer than this many rows apart count as one alert")


def _rows(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"takes a whole number of rows, got {value!r}")
    return int(value)


def find_tests(suite: str | Path, only: list[str] | None = None) -> list[tuple[str, Path]]:
    """(series name, test file) of every `<series>.test.csv` in the suite (training files are not needed)."""
    folder = Path(suite)
    if not folder.is_dir():
        raise NotFound(f"suite folder not found: {folder}")
    tests = [(p.name[: -len(".test.csv")], p) for p in sorted(folder.glob("*.test.csv"))]
    tests = [(name, p) for name, p in tests if not only or any(s in name for s in only)]
    if not tests:
        raise DataError(f"no <series>.test.csv files in {folder}" + (f" matching {', '.join(only)}" if only else ""))
    return tests


def read_labels(path: Path) -> np.ndarray:
    """The test file's 0/1 `label` column as booleans."""
    column = _read_column(path, LABEL_COLUMN)
    values = np.asarray(column, np.float64) if column.dtype.kind in "biuf" else None
    if values is None or not np.isfinite(values).all():
        raise DataError(f"{path}: column {LABEL_COLUMN!r} must hold 0/1 in every row")
    return values != 0


def read_flags(path: Path) -> np.ndarray:
    """A detection output's `is_anomaly` column as booleans (0/1 or true/false; empty = not flagged)."""
    column = _read_column(path, FLAG_COLUMN)
    if column.dtype.kind == "b":
        return column.to_numpy(bool)
    text = column.astype(str).str.strip().str.lower()
    odd = ~text.isin(FLAG_TRUE | FLAG_FALSE)
    if odd.any():
        raise DataError(f"{path}: column {FLAG_COLUMN!r} holds {text[odd].iloc[0]!r}; expected 0/1 or true/false")
    return text.isin(FLAG_TRUE).to_numpy()


def _read_column(path: Path, name: str):
    import pandas as pd

    try:
        return pd.read_csv(path, usecols=[name])[name]
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty") from None
    except ValueError as exc:  # pandas names a missing column in a ValueError
        if name in str(exc):
            raise DataError(f"{path} has no {name!r} column") from None
        raise DataError(f"{path}: {str(exc).splitlines()[0]}") from None


def score_outputs(suite: str | Path, outputs: str | Path, tolerance: int = events.TOLERANCE,
                  merge_gap: int = events.MERGE_GAP, only: list[str] | None = None) -> dict:
    """Per-series and pooled event figures of the outputs in `outputs` against the suite's labels."""
    folder = Path(outputs)
    if not folder.is_dir():
        raise NotFound(f"outputs folder not found: {folder}")
    key = detector_name(folder)
    result: dict = {"suite": str(suite), "outputs": str(folder), "series": [], "missing": [], "summary": {}}
    for name, test in find_tests(suite, only):
        out = folder / f"{name}.csv"
        if not out.exists():
            result["missing"].append(name)
            continue
        labels, flags = read_labels(test), read_flags(out)
        if len(flags) != len(labels):
            raise DataError(f"{name}: {len(flags)} result rows for {len(labels)} test rows")
        report = events.series_report(labels, flags, tolerance, merge_gap)
        result["series"].append({"series": name, "rows_test": int(len(labels)), "anomalous_rows": int(labels.sum()),
                                 "detectors": {key: {"events": report}}})
    pooled = events.pool([r["detectors"][key]["events"] for r in result["series"]])
    result["summary"][key] = {"series": len(result["series"]), "events": pooled}
    return result


def detector_name(outputs: Path) -> str:
    """The outputs folder's name stands for the detector that wrote it."""
    return Path(outputs).resolve().name or str(outputs)


def run(args) -> int:
    """Score each `--suite` against its `--outputs` folder (paired in order) and print the event tables."""
    if len(args.outputs) != len(args.suite):
        raise DataError(f"--outputs takes one folder per --suite, got {len(args.outputs)} for {len(args.suite)}")
    report = {"config": {"tolerance": args.event_tolerance, "merge_gap": args.event_merge_gap,
                         "series": args.series}, "suites": {}}
    for suite, outputs in zip(args.suite, args.outputs):
        result = score_outputs(suite, outputs, args.event_tolerance, args.event_merge_gap, args.series)
        report["suites"][Path(suite).name] = result
        print(format_outputs(result, args.event_tolerance, args.event_merge_gap, per_series=not args.quiet),
              flush=True)
    if args.json_path:
        from ..store import atomic_write_text

        atomic_write_text(Path(args.json_path), json.dumps(report, indent=1))
    return 0


def format_outputs(result: dict, tolerance: int, merge_gap: int, per_series: bool = True) -> str:
    key = next(iter(result["summary"]))
    rows = [(r["series"], r["detectors"][key]["events"]) for r in result["series"]] if per_series else []
    rows.append((f"suite ({result['summary'][key]['series']} series)", result["summary"][key]["events"]))
    lines = [f"suite {result['suite']}: outputs {result['outputs']}", format_events_table(rows, tolerance, merge_gap)]
    if result["missing"]:
        lines.append(f"no output for {len(result['missing'])} series (left out): {', '.join(result['missing'])}")
    return "\n".join(lines)


def format_events_table(rows: list[tuple[str, dict]], tolerance: int, merge_gap: int) -> str:
    """One line per (name, event figures): per series (counts and own figures) or pooled (with meets_goal)."""
    width = min(max([len("events"), *(len(name) for name, _ in rows)]), MAX_NAME_WIDTH)
    lines = [f"{'events':<{width}} {'caught':>9} {'recall':>6} {'prec':>6} {'F1':>6} {'false/10k':>9} {'FPR':>6} "
             f"{'before':>6} {'after':>6} {'delay':>6} {'clean/10k':>9} {'goal':>4}"]
    for name, fig in rows:
        has_events = bool(fig["events"])
        caught = f"{fig['caught']}/{fig['events']}" if has_events else "-"
        goal = "-" if "meets_goal" not in fig else ("yes" if fig["meets_goal"] else "no")
        # a series without events has only alerts per 10k rows; its counts' fpr is not the pooled figure
        only_events = {k: fig.get(k) if has_events else None for k in ("event_precision", "false_per_10k", "fpr")}
        lines.append(f"{name[:width]:<{width}} {caught:>9} {_num(fig.get('event_recall'), 3):>6} "
                     f"{_num(only_events['event_precision'], 3):>6} {_num(fig.get('event_f1'), 3):>6} "
                     f"{_num(only_events['false_per_10k'], 2):>9} {_num(only_events['fpr'], 3):>6} "
                     f"{_num(fig.get('spill_before'), 1):>6} {_num(fig.get('spill_after'), 1):>6} "
                     f"{_num(fig.get('delay'), 1):>6} {_num(fig.get('clean_alerts_per_10k'), 2):>9} {goal:>4}")
    lines.append(f"An event is caught by a flag within {tolerance} rows of it; flagged runs fewer than {merge_gap} rows "
                 "apart are one alert.\nfalse/10k: false alerts per 10k normal rows; FPR: normal rows flagged; "
                 "clean/10k: alerts per 10k rows on series without events;\nbefore/after: how far alerts reach "
                 "beyond an event, delay: rows from an event's start to its first flag (medians).")
    return "\n".join(lines)


def _num(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and np.isfinite(value) else "-"
