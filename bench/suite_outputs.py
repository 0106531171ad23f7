"""`train.py` + `detect.py` with every default on each series of a suite, as a user would run them (in one
process, same calls): OUT/<series>.csv holds detect's per-row output, to be scored by TSB-AD's own metric:

    .venv/bin/python bench/suite_outputs.py ../shared/data/smap out/smap [--model-type dense] [--columns x0]
    ../tsbad-venv/bin/python ../shared/tools/tsbad_reference.py ../shared/data/smap out/smap

Prints per series the seconds and the fraction of rows flagged; series already in OUT are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly import service  # noqa: E402
from anomaly.store import ModelStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite")
    ap.add_argument("out")
    ap.add_argument("--model-type", help="default: the shipped default")
    ap.add_argument("--columns", help="comma-separated columns (default: chosen as train.py does)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ModelStore(out / "models")
    options = {"model_type": args.model_type} if args.model_type else {}
    if args.columns:
        options["columns"] = args.columns.split(",")
    for train in sorted(Path(args.suite).glob("*.train.csv")):
        name = train.name[: -len(".train.csv")]
        if (out / f"{name}.csv").exists():
            continue
        started = time.perf_counter()
        try:
            service.train(str(train), store=store, version=name, overwrite=True, **options)
            res = service.detect(str(train).replace(".train.csv", ".test.csv"), store=store, version=name,
                                 output=str(out / f"{name}.csv"), max_results=0)
            print(f"{name} {time.perf_counter() - started:.1f}s flagged {res['anomaly_ratio']:.3f}", flush=True)
        except Exception as exc:  # one failing series is reported, the others still run
            print(f"{name} ERROR {exc}", flush=True)


if __name__ == "__main__":
    main()
