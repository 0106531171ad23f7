"""Training throughput of the dense autoencoder against PyOD's `AutoEncoder`, same data, hidden sizes, epochs and
batch size, in the same run; with ROC-AUC of both on held-out labelled rows.

    .venv/bin/pip install -r bench/requirements.txt      # pyod (benchmark only)
    .venv/bin/python bench/train_speed.py [--rows 20000] [--epochs 10] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from anomaly.detector import Detector


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hidden", type=int, nargs=2, default=[64, 32], help="PyOD hidden_neuron_list; ours: "
                    "hidden [first] and encoding_dim [second], the same layer sizes")
    args = ap.parse_args()
    train, test, labels = make_data(args.rows)
    samples = len(train) * args.epochs

    import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: ~1.5 s that neither side should pay)

    t = time.perf_counter()
    # row-wise and unsmoothed, like PyOD's autoencoder: each row is one sample
    ours = Detector(epochs=args.epochs, batch_size=args.batch_size, validation_split=0.0, hidden=[args.hidden[0]],
                    encoding_dim=args.hidden[1], window=1, smooth=1).fit(train)
    ours_s = time.perf_counter() - t
    ours_auc = roc_auc_score(labels, ours.decision_function(test))

    from pyod.models.auto_encoder import AutoEncoder

    rows = [("anomaly dense AE", ours_s, ours_auc)]
    for name, extra in (("PyOD AutoEncoder (defaults: batch norm, dropout 0.2)", {}),
                        ("PyOD AutoEncoder (no batch norm, no dropout)", {"batch_norm": False, "dropout_rate": 0.0})):
        t = time.perf_counter()
        pyod = AutoEncoder(epoch_num=args.epochs, batch_size=args.batch_size, hidden_neuron_list=list(args.hidden),
                           verbose=0, random_state=0, **extra).fit(train)
        seconds = time.perf_counter() - t
        rows.append((name, seconds, roc_auc_score(labels, pyod.decision_function(test))))

    print(f"{args.rows:,} rows x 20 features, {args.epochs} epochs, batch {args.batch_size}, hidden {args.hidden}")
    print(f"{'model':<56} {'seconds':>8} {'samples/s':>10} {'ROC-AUC':>8} {'vs ours':>9}")
    for name, seconds, auc in rows:
        print(f"{name:<56} {seconds:>8.2f} {samples / seconds:>10,.0f} {auc:>8.4f} {seconds / ours_s:>8.1f}x")


if __name__ == "__main__":
    main()
