"""Label-free threshold rules against the best F1 the same scores allow, per suite (issue 8).

Trains the shipped default on each series' training file, scores its test file (the scores `detect.py` writes),
then flags the test rows by each rule and reports, per suite, the mean F1 at that rule over the mean best F1
(the best any threshold reaches on each series), and the false positive rate:

    .venv/bin/python bench/flag_rules.py ../shared/data [--suites nab,ucr,msl,smap]

Rules on the training scores are followed by the file's level as detection does (`rolling.LevelFollower`);
"whole file" rules see every score of the test file first (two passes). The first row is what is shipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anomaly import data, thresholds  # noqa: E402
from anomaly.detector import DetectorCore  # noqa: E402
from anomaly.metrics import best_f1, prf  # noqa: E402
from anomaly.thresholds.rolling import LevelFollower  # noqa: E402


def finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def followed(threshold: float, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    stats = thresholds.describe(finite(train))
    return LevelFollower(threshold, stats["p50"], stats["p90"]).push(test)


def robust_p95(train: np.ndarray, k: float = 20.0) -> float:
    """95th percentile of the training scores within median + k MAD (a stretch of training rows unlike the rest
    is left out)."""
    x = finite(train)
    med = np.median(x)
    kept = x[x <= med + k * 1.4826 * np.median(np.abs(x - med))]
    return float(np.percentile(kept if len(kept) > 20 else x, 95))


def file_mad(test: np.ndarray, k: float = 5.0) -> float:
    x = finite(test)
    med = np.median(x)
    return float(med + k * 1.4826 * np.median(np.abs(x - med)))


RULES = {  # (stored threshold, training scores, test scores) -> threshold(s) per test row
    "shipped: percentile 95 of training, following the level": lambda thr, tr, te: followed(thr, tr, te),
    "percentile 99 of training, following": lambda thr, tr, te: followed(np.percentile(finite(tr), 99), tr, te),
    "training maximum, following": lambda thr, tr, te: followed(finite(tr).max(), tr, te),
    "pot risk 1e-3 on training, following": lambda thr, tr, te: followed(thresholds.pot(finite(tr)), tr, te),
    "robust percentile 95 (training within median + 20 MAD), following":
        lambda thr, tr, te: followed(robust_p95(tr), tr, te),
    "whole file: median + 5 MAD": lambda thr, tr, te: file_mad(te),
    "whole file: top 3%": lambda thr, tr, te: np.percentile(finite(te), 97),
    "whole file: top 1%": lambda thr, tr, te: np.percentile(finite(te), 99),
    "whole file: pot risk 1e-2": lambda thr, tr, te: thresholds.pot(finite(te), risk=1e-2),
    "whole file: pot risk 1e-3": lambda thr, tr, te: thresholds.pot(finite(te), risk=1e-3),
    "whole file: dynamic (Telemanom)": lambda thr, tr, te: thresholds.dynamic(finite(te)),
}


def score_suite(folder: Path) -> list[dict]:
    series = []
    for train in sorted(folder.glob("*.train.csv")):
        table = data.read_table(str(train))
        test = data.read_table(str(train).replace(".train.csv", ".test.csv"), features=table.features)
        det = DetectorCore().fit(table.X, table.features)
        series.append({"name": train.name[:-len(".train.csv")], "threshold": det.threshold_,
                       "train": det.decision_scores_, "test": det.decision_function(test.X), "labels": test.labels})
    return series


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="folder of suites (../shared/data)")
    ap.add_argument("--suites", default="nab,ucr,msl,smap")
    args = ap.parse_args()
    suites = {s: score_suite(Path(args.data) / s) for s in args.suites.split(",")}
    print("mean F1 at the rule / mean best F1 = ratio (mean FPR); series with anomalies only; target ratio >= 0.75")
    print(f"{'rule':<68}" + "".join(f"{s:>26}" for s in suites))
    for rule, fn in RULES.items():
        cells = []
        for series in suites.values():
            f1s, bests, fprs = [], [], []
            for s in series:
                y, scores = np.asarray(s["labels"]), s["test"]
                if not y.any():
                    continue
                with np.errstate(invalid="ignore"):
                    pred = (scores > fn(s["threshold"], s["train"], scores)).astype(int)
                ok = np.isfinite(scores)
                f1s.append(prf(y, pred)[2])
                bests.append(best_f1(y[ok], scores[ok])[0])
                fprs.append(pred[y == 0].mean())
            f1, best = np.mean(f1s), np.mean(bests)
            cells.append(f"{f1:.3f}/{best:.3f}={f1 / best:.2f} ({np.mean(fprs):.3f})")
        print(f"{rule[:67]:<68}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
