"""Shared machinery of the benchmarks: run a candidate and its baseline alternately (A B A B ..., N pairs) in one
run, so that load changes on a shared machine hit both alike, and report min / median / max of the ratio
candidate / baseline with the load average at start and end.

A side is either a command (a list of arguments: run as a fresh process, wall time and the peak RSS of the
process and the children it waited for, from `os.wait4`) or a Python callable (run in this process: wall time
only; `peak_rss_so_far` gives this process's peak from `resource`).

`BENCH_QUICK=1` in the environment asks every benchmark for its quick sizes (what `make bench` runs).
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
DEFAULT_PAIRS = 3 if QUICK else 5

Side = Callable[[], object] | Sequence[str]


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def loadavg() -> float:
    return os.getloadavg()[0]


def run_command(cmd: Sequence[str], env: dict | None = None, cwd: str | os.PathLike | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of a fresh process (its own, or a child's it waited for if larger).
    Linux carries the peak RSS across fork and exec, so a child's figure is at least this process's peak at the
    time: keep the benchmark process small (write big input files in a subprocess)."""
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 2**20


def run_callable(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds of `fn()`, and NaN for its peak RSS: both sides share this process, whose peak so far
    (`peak_rss_so_far`) says nothing about either."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start, float("nan")


def peak_rss_so_far() -> float:
    """This process's peak RSS (GiB) so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_side(side: Side, env: dict | None = None, cwd=None) -> tuple[float, float]:
    return run_callable(side) if callable(side) else run_command(side, env, cwd)


@dataclass
class Pairs:
    """Wall times and peak RSS of both sides, pair by pair, and the load average around the run."""

    label: str
    candidate: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    candidate_rss: list[float] = field(default_factory=list)
    baseline_rss: list[float] = field(default_factory=list)
    load_start: float = 0.0
    load_end: float = 0.0

    @property
    def ratios(self) -> list[float]:
        return [c / b for c, b in zip(self.candidate, self.baseline)]

    def line(self, unit: str = "s") -> str:
        """One line: medians of both sides, min / median / max of the ratio candidate / baseline (of seconds, or
        of rates when the sides are rates), peak RSS when measured, load average at start and end."""
        r = self.ratios
        rss = ""
        if self.candidate_rss and self.baseline_rss and not any(map(math.isnan, self.candidate_rss + self.baseline_rss)):
            rss = f"; peak RSS {max(self.candidate_rss):.2f} vs {max(self.baseline_rss):.2f} GiB"
        return (f"{self.label}: {fmt(statistics.median(self.candidate))} vs {fmt(statistics.median(self.baseline))} {unit} "
                f"(median); ratio min / median / max {min(r):.2f} / {statistics.median(r):.2f} / {max(r):.2f} "
                f"over {len(r)} pairs{rss}; load average {self.load_start:.2f} -> {self.load_end:.2f}")


def alternate(label: str, candidate: Side, baseline: Side, pairs: int = DEFAULT_PAIRS, warmup: bool = False,
              env: dict | None = None, cwd=None, verbose: bool = True) -> Pairs:
    """Candidate then baseline, `pairs` times (after one unrecorded pair when `warmup`)."""
    result = Pairs(label, load_start=loadavg())
    if warmup:
        run_side(candidate, env, cwd)
        run_side(baseline, env, cwd)
    for i in range(pairs):
        c, c_rss = run_side(candidate, env, cwd)
        b, b_rss = run_side(baseline, env, cwd)
        result.candidate.append(c)
        result.baseline.append(b)
        result.candidate_rss.append(c_rss)
        result.baseline_rss.append(b_rss)
        if verbose:
            print(f"  {label} pair {i + 1}/{pairs}: {c:.3f} / {b:.3f} s = {c / b:.2f}", file=sys.stderr, flush=True)
    result.load_end = loadavg()
    return result


def record(label: str, candidate: list[float], baseline: list[float], load_start: float) -> Pairs:
    """A Pairs from figures measured elsewhere (e.g. rates sampled alternately by an async loop)."""
    return Pairs(label, list(candidate), list(baseline), load_start=load_start, load_end=loadavg())


def add_arguments(parser) -> None:
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS,
                        help=f"candidate/baseline pairs, run alternately (default {DEFAULT_PAIRS}; 3 with BENCH_QUICK=1)")


if __name__ == "__main__":
    print(__doc__)
