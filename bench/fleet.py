"""Fleet throughput: `anomaly fleet train|detect` vs a sequential loop of the same service calls in one process.

    python bench/fleet.py                        # 1,000 series x 5,000 rows, 3 epochs, all cores, 5 rounds
    python bench/fleet.py --series 200 --rows 5000 --epochs 3 --pairs 3

Four ways over the same generated folder (one CSV per series: a timestamp and two sensor columns):
  loop     one Python process: `for each file: service.train(...)`, then `service.detect(...)` (torch's own
           threads, as a user's script gets them; training itself runs single-threaded for small batches)
  jobs=1   `anomaly fleet train|detect --jobs 1` (in-process, one series after another)
  jobs=N   `anomaly fleet train|detect` on all cores (joblib worker processes, one torch thread each)
  loop xN  the ceiling: N loop processes started together, each over every N-th file, each with one thread
           (OMP_NUM_THREADS=MKL_NUM_THREADS=1 and torch.set_num_threads(1): N processes on N cores must not
           oversubscribe them), no dispatcher, nothing shared: the most any way of running the same calls on N
           cores gets out of this machine
The four run alternately, round after round (`--pairs` rounds: train with all four, then detect with all four,
each into fresh folders), so load changes on a shared machine hit all alike; the ratio lines compare each
candidate with its baseline round by round (jobs=N against loop xN, jobs=1 against loop) as min / median / max,
with the load average at start and end (bench/pairs.py). Every figure is the wall time of a fresh process (Python
and torch start-up included, as a user would see it) and the peak resident memory of its whole process tree
(sampled every 0.1 s), plus the largest single process; "cores busy" is the tree's CPU seconds over the wall time.
BENCH_QUICK=1: 40 series x 2,000 rows, 3 rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import pairs  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def make_data(folder: Path, series: int, rows: int) -> None:
    from anomaly import synthetic

    folder.mkdir(parents=True)
    for i in range(series):
        frame = synthetic.make_series(rows, n_features=2, seed=i)
        if i % 10 == 0:  # one series in ten has incidents, so the ranking has something to rank
            frame = synthetic.inject(frame, n_anomalies=5, magnitude=8.0, seed=i).drop(columns=["label"])
        frame.to_csv(folder / f"host-{i:04d}.csv", index=False, float_format="%.5f")


def loop(phase: str, data: str, models: str, out: str, epochs: int, part: int = 0, parts: int = 1) -> None:
    """The baseline: the same calls one after another in this one process (with `parts` > 1: every `parts`-th
    file from `part` on, for the ceiling)."""
    if parts > 1:  # one of the ceiling's processes: one thread (its environment already says so to BLAS)
        import torch

        torch.set_num_threads(1)
    from anomaly import service
    from anomaly.store import ModelStore

    store = ModelStore(models)
    for f in sorted(Path(data).glob("*.csv"))[part::parts]:
        if phase == "train":
            service.train(str(f), version=f.stem, store=store, epochs=epochs, seed=0)
        else:
            service.detect(str(f), version=f.stem, store=store, output=str(Path(out) / f"{f.stem}.csv"),
                           return_details=False)


def loops(parts: int, args: list[str]) -> None:
    """The ceiling: `parts` independent loop processes, each over its share of the files, started together (no
    dispatcher, no shared work: what any scheduler of the same calls could at best do on these cores)."""
    env = dict(os.environ, **ONE_THREAD)
    procs = [subprocess.Popen([sys.executable, __file__, "--loop", *args, str(i), str(parts)], env=env)
             for i in range(parts)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a loop process failed: {codes}")


def measure(cmd: list[str]) -> dict:
    """Wall time and peak RSS (whole tree, and the largest process) of a command."""
    import psutil

    env = dict(os.environ, PYTHONPATH=str(REPO))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    tree_peak = single_peak = 0
    cpu: dict[int, float] = {}  # the last CPU seconds seen of every process of the tree
    while proc.poll() is None:
        rss = []
        try:
            for p in [root, *root.children(recursive=True)]:
                rss.append(p.memory_info().rss)
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
        except psutil.Error:
            pass
        tree_peak, single_peak = max(tree_peak, sum(rss)), max([single_peak, *rss])
        time.sleep(0.1)
    wall = time.perf_counter() - started
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"seconds": round(wall, 1), "cpu_seconds": round(sum(cpu.values()), 1),
            "peak_rss_mb": round(tree_peak / 2**20), "largest_process_mb": round(single_peak / 2**20),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def run(series: int, rows: int, epochs: int, jobs: int, rounds: int, work: Path) -> dict:
    """{(name, phase): [measure() of each round]}, the four ways alternating round after round."""
    data = work / "data"
    t = time.perf_counter()
    make_data(data, series, rows)
    print(f"generated {series} series x {rows} rows in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    py = sys.executable
    names = ("loop", "jobs=1", f"jobs={jobs}", f"loop x{jobs}")
    results: dict = {(name, phase): [] for phase in ("train", "detect") for name in names}
    for i in range(rounds):
        for phase in ("train", "detect"):
            for name in names:
                models, out = work / f"models-{name}-{i}", work / f"out-{name}-{i}"
                out.mkdir(exist_ok=True)
                if name == "loop":
                    cmd = [py, __file__, "--loop", phase, str(data), str(models), str(out), str(epochs)]
                elif name.startswith("loop x"):
                    cmd = [py, __file__, "--loops", str(jobs), phase, str(data), str(models), str(out), str(epochs)]
                else:
                    cmd = [py, "-m", "anomaly", "fleet", phase, "--data-dir", str(data), "--model-dir", str(models),
                           "--jobs", name.split("=")[1], "-q"]
                    cmd += ["--epochs", str(epochs), "--seed", "0"] if phase == "train" else ["-o", str(out)]
                results[(name, phase)].append(measure(cmd))
                print(f"round {i + 1} {name:8} {phase:6} {results[(name, phase)][-1]}", file=sys.stderr, flush=True)
        for name in names:
            shutil.rmtree(work / f"models-{name}-{i}", ignore_errors=True)
            shutil.rmtree(work / f"out-{name}-{i}", ignore_errors=True)
    return results


def report(results: dict, series: int, rows: int, epochs: int, jobs: int, load_start: float) -> str:
    from anomaly import defaults

    def median(name, phase, key="seconds"):
        return statistics.median(r[key] for r in results[(name, phase)])

    rounds = len(results[("loop", "train")])
    lines = [f"{series} series x {rows} rows, default model ({defaults.MODEL_TYPE}; --epochs {epochs} applies to "
             f"neural models), {os.cpu_count()} cores, median of {rounds} alternated rounds",
             "", "| run | phase | wall s | series/s | vs loop | vs jobs=1 | cores busy | peak RSS (tree) | "
             "largest process |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (name, phase), runs in results.items():
        s = median(name, phase)
        lines.append(f"| {name} | {phase} | {s:.1f} | {series / s:.1f} | {median('loop', phase) / s:.2f}x | "
                     f"{median('jobs=1', phase) / s:.2f}x | {median(name, phase, 'cpu_seconds') / s:.2f} | "
                     f"{max(r['peak_rss_mb'] for r in runs)} MB | {max(r['largest_process_mb'] for r in runs)} MB |")
    lines.append("")
    for phase in ("train", "detect"):
        for cand, base in ((f"jobs={jobs}", f"loop x{jobs}"), ("jobs=1", "loop")):
            p = pairs.record(f"fleet {phase} {cand} vs {base}" + (" (one thread each)" if "x" in base else ""),
                             [r["seconds"] for r in results[(cand, phase)]],
                             [r["seconds"] for r in results[(base, phase)]], load_start)
            lines.append(p.line())
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loop":
        loop(*sys.argv[2:6], *map(int, sys.argv[6:]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--loops":
        loops(int(sys.argv[2]), sys.argv[3:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", type=int, default=40 if pairs.QUICK else 1000)
    p.add_argument("--rows", type=int, default=2000 if pairs.QUICK else 5000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--jobs", type=int, default=os.cpu_count())
    p.add_argument("--json", help="also write the figures here")
    pairs.add_arguments(p)
    args = p.parse_args()
    load_start = pairs.loadavg()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        results = run(args.series, args.rows, args.epochs, args.jobs, args.pairs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results, args.series, args.rows, args.epochs, args.jobs, load_start))
    if args.json:
        Path(args.json).write_text(json.dumps({f"{n} {p}": r for (n, p), r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
