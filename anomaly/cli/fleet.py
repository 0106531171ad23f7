"""`anomaly fleet train|detect`: many series in one command (see `anomaly.fleet`).

Training options are `anomaly train`'s own argument declarations (taken from `cli.add_train_arguments`, less
the ones that name one file, version or plot), so every option `train` gains is a fleet option too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .. import fleet, jsonsafe, specs
from ..errors import AnomalyError
from . import commands as cli

# `train` options that name one series' file, version, artifacts or plot: the fleet names those itself.
NOT_FOR_FLEET_TRAIN = {"help", "data", "version", "model_path", "threshold_path", "config_path", "labels_file",
                       "plot", "json", "quiet"}
# `detect` options that apply to every series alike.
FLEET_DETECT = {"model_dir", "per_feature", "label_column", "missing", "time_column", "threshold_window",
                "min_duration", "merge_gap", "device", "precision"}
TOP_SERIES = 20  # rows of the terminal table: one screen


def inherit(target: argparse.ArgumentParser, declare: Callable[[argparse.ArgumentParser], None],
            keep: Callable[[str], bool]) -> list[str]:
    """Declare the arguments of `declare` (a cli.add_*_arguments function) on `target`, in their groups, keeping
    those whose dest passes `keep`; returns the kept dests. The declarations are reused, not copied."""
    source = argparse.ArgumentParser(add_help=False)
    declare(source)
    kept = []
    for group in source._action_groups:
        actions = [a for a in group._group_actions if keep(a.dest)]
        if not actions:
            continue
        into = target if group.title in (None, "options", "positional arguments") else \
            target.add_argument_group(group.title, group.description)
        for action in actions:
            into._add_action(action)
            kept.append(action.dest)
    return kept


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("series (one of)")
    g.add_argument("--data-dir", help="folder with one file per series; the file's stem is the series name")
    g.add_argument("--data", dest="data_file", help="one long-format file holding every series (with "
                   "--series-column)")
    g.add_argument("--glob", help="files matching a pattern, e.g. 'metrics/*/cpu.csv' (quote it)")
    g.add_argument("--series-column", help="with --data: the column naming each row's series, e.g. host")
    r = p.add_argument_group("running")
    r.add_argument("--jobs", "-j", type=int, help="worker processes (default: all cores)")
    r.add_argument("--dask-scheduler", metavar="tcp://HOST:PORT", help="run on this Dask cluster instead; data, "
                   "model store and output must be on a path every worker sees")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    r.add_argument("--json", action="store_true", help="print the whole summary as JSON")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="fleet_command", required=True)
    fmt = cli.HelpFormatter
    t = sub.add_parser("train", help="train one model version per series (version = series name)", formatter_class=fmt)
    _add_input_arguments(t)
    dests = inherit(t, cli.add_train_arguments, lambda dest: dest not in NOT_FOR_FLEET_TRAIN)
    t.set_defaults(train_dests=dests)
    d = sub.add_parser("detect", help="score every series with its own version", formatter_class=fmt)
    _add_input_arguments(d)
    d.add_argument("--output-dir", "-o", required=True, help="writes <series>.csv (every row, as detect --output) "
                   f"and {fleet.SUMMARY_FILE}")
    d.add_argument("--overwrite", action="store_true", help="score again series already done")
    d.add_argument("--top", type=int, default=TOP_SERIES, help="series to list, strongest anomalies first")
    dests = inherit(d, cli.add_detect_arguments, lambda dest: dest in FLEET_DETECT)
    d.set_defaults(detect_dests=dests)


def train_options(args) -> dict:
    """`service.train` keyword arguments (TrainSpec fields) from the inherited train options, checked now:
    a bad value fails before any series is read."""
    if args.scaler and args.scaler not in specs.SCALERS:
        raise AnomalyError(f"fleet training takes a scaler type ({', '.join(specs.SCALERS)}), got {args.scaler!r}")
    options = cli._spec_args(args, specs.TrainSpec) | ({"scaler": args.scaler} if args.scaler else {})
    specs.parse(specs.TrainSpec, **options)
    return options


def _inputs(args) -> dict:
    return {"data_dir": args.data_dir, "data_file": args.data_file, "glob": args.glob,
            "series_column": args.series_column, "jobs": args.jobs, "dask_scheduler": args.dask_scheduler}


class _Bar:
    """A tqdm progress bar over series (none with --quiet or without tqdm)."""

    def __init__(self, title: str, quiet: bool):
        self.title, self.quiet, self.bar, self.failed = title, quiet, None, 0

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self.quiet = True
                return
            self.bar = tqdm(total=event["total"], desc=self.title, unit="series", file=sys.stderr, leave=False,
                            dynamic_ncols=True)
        self.failed += event["status"] == "failed"
        self.bar.update(1)
        if self.failed:
            self.bar.set_postfix(failed=self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args) -> int:
    bar = _Bar(f"fleet {args.fleet_command}", args.quiet)
    try:
        if args.fleet_command == "train":
            summary = fleet.train(model_dir=args.model_dir, overwrite=args.overwrite, progress=bar, **_inputs(args),
                                  **train_options(args))
        else:
            options = {d: getattr(args, d) for d in args.detect_dests if d != "model_dir"}
            summary = fleet.detect(model_dir=args.model_dir, output_dir=args.output_dir, overwrite=args.overwrite,
                                   progress=bar, **_inputs(args), **options)
    finally:
        bar.close()
    if args.json:
        print(jsonsafe.dumps(summary, indent=2))
    elif args.fleet_command == "train":
        print_train(summary)
    else:
        print_detect(summary, args.top)
    return _report_failures(summary)


def _headline(s: dict) -> str:
    where = f"Dask cluster {s['scheduler']}" if s["engine"] == "dask" else \
        f"{s['jobs']} job{'s' if s['jobs'] != 1 else ''}"
    return (f"{s['series_total']} series: {s['ok']} done, {s['skipped']} skipped (done before), {s['failed']} failed "
            f"in {s['seconds']:.1f}s on {where}")


def print_train(s: dict) -> None:
    print(f"Fleet train, {_headline(s)}")
    print(f"  models in {s['model_dir']} (version = series name)")


def _where(r: dict) -> str:
    seg = (r.get("segments") or [None])[0]
    if seg is None:
        return "-"
    where = f"{seg['time']} (row {seg['index']})" if seg.get("time") else f"row {seg['index']}"
    return where + ("" if seg.get("severity") is None else f", severity {seg['severity']}")


def print_detect(s: dict, top: int = TOP_SERIES) -> None:
    print(f"Fleet detect, {_headline(s)}")
    print(f"  {s['rows']} rows, {s['anomalies']} anomalies in {s['series_with_anomalies']} series; "
          f"strength = peak score / the series' threshold")
    ranked = [r for r in s["series"] if r["status"] != "failed"]
    if ranked and top > 0:
        print(f"{'rank':>4}  {'series':<24} {'rows':>8} {'anomalies':>9} {'%':>6} {'segments':>8} {'strength':>9}  "
              "strongest at")
        for i, r in enumerate(ranked[:top], 1):
            strength = f"{r['strength']:.3g}" if r.get("strength") is not None else "-"
            print(f"{i:>4}  {r['series'][:24]:<24} {r.get('rows') or 0:>8} {r.get('anomalies') or 0:>9} "
                  f"{100 * (r.get('anomaly_ratio') or 0):>6.2f} {r.get('segment_count') or 0:>8} {strength:>9}  "
                  f"{_where(r)}")
        if len(ranked) > top:
            print(f"  ... {len(ranked) - top} more series")
    print(f"Results in {s['output_dir']}/<series>.csv; summary in {s['output_dir']}/{fleet.SUMMARY_FILE}")


def _report_failures(s: dict, shown: int = 10) -> int:
    """Each failed series with its one-line error (the first `shown`), then one `error:` line; exit 1."""
    failed = [r for r in s["series"] if r["status"] == "failed"]
    if not failed:
        return 0
    for r in failed[:shown]:
        print(f"failed: {r['series']}: {r.get('error')}", file=sys.stderr)
    if len(failed) > shown:
        print(f"... and {len(failed) - shown} more failed series", file=sys.stderr)
    print(f"error: {len(failed)} of {s['series_total']} series failed; the others are done", file=sys.stderr)
    return 1
