"""End-to-end `detect.py` on 1,000,000 rows x 20 float columns + a timestamp, against the floor measured in the same
run: a Python process that imports pandas and torch and only reads the same CSV. Also peak RSS, and peak RSS on a
10,000,000-row file to show memory does not grow with rows.

    .venv/bin/python bench/detect_scale.py [--rows 1000000] [--repeat 3] [--skip-10m]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PY = sys.executable


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """20 correlated float columns + timestamp, written in blocks (fast, bounded memory)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("timestamp," + ",".join(f"f{i}" for i in range(20)) + "\n")
        t0 = np.datetime64("2026-01-01T00:00:00")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            t = np.arange(start, start + n)
            base = np.sin(2 * np.pi * t / 500)[:, None]
            X = base * np.linspace(0.5, 2, 20) + 0.1 * rng.normal(size=(n, 20))
            stamps = (t0 + t.astype("timedelta64[s]")).astype(str)
            body = np.char.add(stamps, ",")
            lines = [s + ",".join(f"{v:.5f}" for v in row) for s, row in zip(body.tolist(), X.tolist())]
            f.write("\n".join(lines) + "\n")


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-10m", action="store_true", help="skip the 10M-row memory check")
    ap.add_argument("--models", default="default,dense,lstm,transformer,vae",
                    help="variants to time: default (every default) and model types (their default window)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / f"scale_{args.rows}.csv"
    if not data.exists():
        print(f"writing {data} ...", flush=True)
        write_csv(data, args.rows)
    train = OUT / "scale_train.csv"
    if not train.exists():
        write_csv(train, 20_000, seed=1)
    models = OUT / "models"
    variants = {name: ([] if name == "default" else ["--model-type", name]) for name in args.models.split(",")}
    for name, extra in variants.items():
        if not (models / f"scale-{name}").exists():
            run([PY, "train.py", "--data", str(train), "--model-dir", str(models), "--version", f"scale-{name}",
                 "--epochs", "5", "--batch-size", "256", "--quiet", *extra])
    floor_cmd = [PY, "-c", f"import pandas, torch; pandas.read_csv({str(data)!r})"]
    detect_cmds = [[PY, "detect.py", "--data", str(data), "--model-dir", str(models), "--version", f"scale-{name}",
                    "--output", str(OUT / "scale_results.csv")] for name in variants]
    floors, detects = [], [[] for _ in variants]
    for _ in range(args.repeat):  # interleaved, so load changes hit all alike
        floors.append(run(floor_cmd))
        for i, cmd in enumerate(detect_cmds):
            detects[i].append(run(cmd))
    f_wall = statistics.median(w for w, _ in floors)
    print(f"rows: {args.rows:,} x 20 floats + timestamp ({data.stat().st_size / 2**20:.0f} MiB), "
          f"median of {args.repeat}")
    print(f"floor (import pandas+torch, read_csv):  {f_wall:6.2f} s, peak RSS {max(r for _, r in floors):.2f} GiB")
    for name, runs in zip(variants, detects):
        d_wall = statistics.median(w for w, _ in runs)
        print(f"detect.py --output, {name:<12} {d_wall:6.2f} s, peak RSS {max(r for _, r in runs):.2f} GiB, "
              f"ratio to floor {d_wall / f_wall:.2f} (target <= 1.5)")
        if args.repeat > 1:  # each run against the floor measured just before it
            print("    run by run: " + ", ".join(f"{d / f:.2f}" for (d, _), (f, _) in zip(runs, floors)))
    if not args.skip_10m:
        big = OUT / "scale_10x.csv"
        if not big.exists():
            with open(big, "wb") as out, open(data, "rb") as src:
                header = src.readline()
                body = src.read()
                out.write(header)
                for _ in range(10):
                    out.write(body)
        wall, rss = run([PY, "detect.py", "--data", str(big), "--model-dir", str(models), "--version", f"scale-{next(iter(variants))}",
                         "--output", str(OUT / "scale_10x_results.csv")])
        print(f"10x rows ({10 * args.rows:,}), {next(iter(variants))}: detect {wall:.1f} s, peak RSS {rss:.2f} GiB")
        (OUT / "scale_10x_results.csv").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
