"""Training speed against PyOD, candidate and baseline run alternately in one run (bench/pairs.py):

1. the default model (pca), a full `train.py` as a user runs it (CSV read, fit and threshold calibration
   included), against PyOD's `PCA` fit on the same file (a Python process that reads the CSV with pandas and
   fits `pyod.models.pca.PCA()`, whose fit also computes its threshold): wall time and peak RSS of each process,
   at 10,000 x 25 and 200,000 x 20 (the issue's sizes; `--pca-sizes`);
2. the dense autoencoder (`model_type="dense"`, explicitly: the default is pca) against PyOD's `AutoEncoder`,
   in this process, same data, epochs and batch size: PyOD's defaults, and PyOD with the same layers and no batch
   norm or dropout; with ROC-AUC of both on held-out labelled rows.

    .venv/bin/pip install -r bench/requirements.txt      # pyod (benchmark only)
    .venv/bin/python bench/train_speed.py [--pca-sizes 10000x25,200000x20] [--rows 20000] [--epochs 10]
                                          [--batch-size 32] [--pairs 5] [--skip-dense] [--skip-pca]

BENCH_QUICK=1: 3 pairs, dense on 5,000 rows x 3 epochs (the PCA sizes stay the issue's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import pairs  # noqa: E402

PYOD_PCA = """import sys, pandas
from pyod.models.pca import PCA
X = pandas.read_csv(sys.argv[1]).select_dtypes("number").to_numpy()
PCA().fit(X)
"""


def make_data(rows: int, n_features: int = 20, seed: int = 0):
    """Normal rows on a low-dimensional manifold; test rows with 5% off-manifold anomalies."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(4, n_features))

    def normal(n):
        return (np.tanh(rng.normal(size=(n, 4))) @ mixing + 0.05 * rng.normal(size=(n, n_features))).astype(np.float32)

    train = normal(rows)
    test = normal(rows // 4)
    labels = np.zeros(len(test), np.int8)
    idx = rng.choice(len(test), size=len(test) // 20, replace=False)
    test[idx] += rng.normal(scale=0.25, size=(len(idx), n_features)).astype(np.float32)
    labels[idx] = 1
    return train, test, labels


def pca_rows(sizes: list[tuple[int, int]], n_pairs: int, work: Path) -> None:
    """The default `train.py` against PyOD's PCA fit, as fresh processes on the same CSV."""
    from anomaly import synthetic

    py = sys.executable
    for rows, cols in sizes:
        data = work / f"train_{rows}x{cols}.csv"
        synthetic.make_series(rows, n_features=cols, seed=0).to_csv(data, index=False, float_format="%.5f")
        models = work / f"models_{rows}x{cols}"
        train = [py, str(REPO / "train.py"), "--data", str(data), "--model-dir", str(models), "--version", "bench",
                 "--overwrite", "--quiet"]
        pyod = [py, "-c", PYOD_PCA, str(data)]
        result = pairs.alternate(f"default training (pca, train.py) vs PyOD PCA fit, {rows:,} x {cols}", train, pyod,
                                 n_pairs, warmup=True)
        print(result.line(), flush=True)


def dense_rows(rows: int, epochs: int, batch_size: int, hidden: list[int], n_pairs: int) -> None:
    from pyod.models.auto_encoder import AutoEncoder
    from sklearn.metrics import roc_auc_score

    from anomaly.detector import Detector

    train, test, labels = make_data(rows)
    samples = len(train) * epochs
    import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: ~1.5 s that neither side should pay)

    fitted: dict[str, object] = {}

    def ours():  # row-wise and unsmoothed, like PyOD's autoencoder: each row is one sample
        fitted["ours"] = Detector(model_type="dense", epochs=epochs, batch_size=batch_size, validation_split=0.0,
                                  hidden=[hidden[0]], encoding_dim=hidden[1], window=1, smooth=1).fit(train)

    def pyod(name, extra):
        def fit():
            fitted[name] = AutoEncoder(epoch_num=epochs, batch_size=batch_size, hidden_neuron_list=list(hidden),
                                       verbose=0, random_state=0, **extra).fit(train)
        return fit

    print(f"dense: {rows:,} rows x 20 features, {epochs} epochs, batch {batch_size}, hidden {hidden}", flush=True)
    for name, extra in (("PyOD AutoEncoder (defaults: batch norm, dropout 0.2)", {}),
                        ("PyOD AutoEncoder (same layers, no batch norm, no dropout)",
                         {"batch_norm": False, "dropout_rate": 0.0})):
        result = pairs.alternate(f"dense AE vs {name}", ours, pyod(name, extra), n_pairs, warmup=True)
        ours_s, pyod_s = statistics.median(result.candidate), statistics.median(result.baseline)
        print(result.line(), flush=True)
        print(f"    samples/s {samples / ours_s:,.0f} vs {samples / pyod_s:,.0f}; ROC-AUC "
              f"{roc_auc_score(labels, fitted['ours'].decision_function(test)):.4f} vs "
              f"{roc_auc_score(labels, fitted[name].decision_function(test)):.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pca-sizes", default="10000x25,200000x20", help="ROWSxCOLUMNS of the default-training rows")
    ap.add_argument("--rows", type=int, default=5_000 if pairs.QUICK else 20_000, help="dense: training rows")
    ap.add_argument("--epochs", type=int, default=3 if pairs.QUICK else 10, help="dense: epochs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, nargs=2, default=[64, 32], help="PyOD hidden_neuron_list; ours: "
                    "hidden [first] and encoding_dim [second], the same layer sizes")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--skip-pca", action="store_true")
    pairs.add_arguments(ap)
    args = ap.parse_args()
    if not args.skip_pca:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.pca_sizes.split(",") if s]
        with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
            pca_rows(sizes, args.pairs, Path(tmp))
    if not args.skip_dense:
        dense_rows(args.rows, args.epochs, args.batch_size, args.hidden, args.pairs)


if __name__ == "__main__":
    main()
