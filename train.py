#!/usr/bin/env python3
"""Train an anomaly detector: python train.py --data normal.csv  (see --help)."""
from anomaly.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
