"""End-to-end `detect.py` against the CSV floor, each detection run alternately with its floor in one run
(bench/pairs.py): the floor is a Python process that imports pandas and torch and only reads the same CSV
(`pandas.read_csv`). Rows:

- 1,000,000 rows x 20 float columns + a timestamp, for each model variant (`--models`; the default model first);
- 100,000 rows at 500 and 1,000 float columns + a timestamp (`--widths`, `--wide-rows`; default model);
- 10,000,000 rows x 20 (the 1M file ten times over; default model), with peak RSS to show memory does not grow
  with rows (`--skip-10m` to leave it out).

    .venv/bin/python bench/detect_scale.py [--rows 1000000] [--pairs 5] [--widths 500,1000] [--wide-rows 100000]
                                           [--models default,dense,...] [--skip-10m]

BENCH_QUICK=1: 3 pairs, 200,000 rows at 20 columns, 20,000 rows at the wide widths, default model only, no 10M.
Generated files are kept in bench/out/ (git-ignored) for the next run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import pairs  # noqa: E402

OUT = ROOT / "bench" / "out"
PY = sys.executable


def write_csv(path: Path, rows: int, seed: int = 0, cols: int = 20) -> None:
    """`cols` correlated float columns + timestamp, written in blocks (fast, bounded memory). Wide files (over 20
    columns) repeat a block of 2,000 distinct rows under fresh timestamps: formatting 100M numbers one by one
    would take longer than the benchmark."""
    rng = np.random.default_rng(seed)
    t0 = np.datetime64("2026-01-01T00:00:00")

    def block(start: int, n: int) -> list[str]:
        t = np.arange(start, start + n)
        base = np.sin(2 * np.pi * t / 500)[:, None]
        X = base * np.linspace(0.5, 2, cols) + 0.1 * rng.normal(size=(n, cols))
        return [",".join(f"{v:.5f}" for v in row) for row in X.tolist()]

    with open(path, "w") as f:
        f.write("timestamp," + ",".join(f"f{i}" for i in range(cols)) + "\n")
        fixed = block(0, 2000) if cols > 20 else None
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            t = np.arange(start, start + n)
            stamps = (t0 + t.astype("timedelta64[s]")).astype(str).tolist()
            lines = fixed[:] * (n // 2000 + 1) if fixed else block(start, n)
            f.write("\n".join(s + "," + line for s, line in zip(stamps, lines)) + "\n")


def floor_cmd(data: Path) -> list[str]:
    return [PY, "-c", f"import pandas, torch; pandas.read_csv({str(data)!r})"]


def detect_cmd(data: Path, models: Path, version: str, out: Path) -> list[str]:
    return [PY, "detect.py", "--data", str(data), "--model-dir", str(models), "--version", version, "--output",
            str(out)]


def trained(models: Path, version: str, train: Path, extra: list[str]) -> str:
    if not (models / version).exists():
        pairs.run_command([PY, "train.py", "--data", str(train), "--model-dir", str(models), "--version", version,
                           "--epochs", "5", "--batch-size", "256", "--quiet", *extra], cwd=ROOT)
    return version


def ensure(path: Path, rows: int, seed: int = 0, cols: int = 20) -> Path:
    """Write the file in a subprocess: this process's peak RSS would otherwise floor every child's figure."""
    if not path.exists():
        print(f"writing {path} ...", file=sys.stderr, flush=True)
        pairs.run_command([PY, __file__, "--write", str(path), str(rows), str(seed), str(cols)])
    return path


def compare(label: str, data: Path, models: Path, version: str, n_pairs: int) -> None:
    out = OUT / "scale_results.csv"
    result = pairs.alternate(label, detect_cmd(data, models, version, out), floor_cmd(data), n_pairs, cwd=ROOT)
    print(result.line() + " (candidate: detect.py --output; baseline: the floor)", flush=True)
    out.unlink(missing_ok=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--write":
        write_csv(Path(sys.argv[2]), *map(int, sys.argv[3:6]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000 if pairs.QUICK else 1_000_000, help="rows at 20 columns")
    ap.add_argument("--widths", default="500,1000", help="wide files' float columns, comma-separated ('' for none)")
    ap.add_argument("--wide-rows", type=int, default=20_000 if pairs.QUICK else 100_000)
    ap.add_argument("--skip-10m", action="store_true", default=pairs.QUICK,
                    help="leave out the 10M-row row (the default with BENCH_QUICK=1)")
    ap.add_argument("--with-10m", dest="skip_10m", action="store_false", help="run the 10M-row row even when quick")
    ap.add_argument("--models", default="default" if pairs.QUICK else "default,dense,lstm,transformer,vae",
                    help="variants at 20 columns: default (every default) and model types (their default window)")
    pairs.add_arguments(ap)
    ap.add_argument("--repeat", dest="pairs", type=int, help="the old name of --pairs")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    models = OUT / "models"
    train = ensure(OUT / "scale_train.csv", 20_000, seed=1)
    data = ensure(OUT / f"scale_{args.rows}.csv", args.rows)
    for name in args.models.split(","):
        version = trained(models, f"scale-{name}", train, [] if name == "default" else ["--model-type", name])
        compare(f"detection, {args.rows:,} x 20, {name} vs the CSV floor", data, models, version, args.pairs)
    for cols in (int(c) for c in args.widths.split(",") if c):
        wide_train = ensure(OUT / f"scale_train_{cols}c.csv", 5_000, seed=1, cols=cols)
        version = trained(models, f"scale-default-{cols}c", wide_train, [])
        wide = ensure(OUT / f"scale_{args.wide_rows}x{cols}.csv", args.wide_rows, cols=cols)
        compare(f"detection, {args.wide_rows:,} x {cols}, default vs the CSV floor", wide, models, version, args.pairs)
    if not args.skip_10m:
        base = ensure(OUT / "scale_1000000.csv", 1_000_000)
        big = OUT / "scale_10x.csv"
        if not big.exists():
            with open(big, "wb") as out, open(base, "rb") as src:
                header = src.readline()
                body = src.read()
                out.write(header)
                for _ in range(10):
                    out.write(body)
        version = trained(models, "scale-default", train, [])
        compare("detection, 10,000,000 x 20, default vs the CSV floor", big, models, version, args.pairs)


if __name__ == "__main__":
    main()
